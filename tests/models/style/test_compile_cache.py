import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from models.style import compile_cache
from models.style.compile_cache import cache_key, compiling_in
from models.style.runner import StylizerRunner
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[3]


def tiny_network(seed: int = 0) -> MultiStyleTransformer:
    torch.manual_seed(seed)
    return MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1)).eval()


def test_the_key_changes_with_torch_the_cpu_the_network_and_the_dtype():
    base = dict(network="abc", dtype=torch.float32, torch_version="2.14.0", cpu="x86_64 EPYC [avx2 fma]")
    key = cache_key(**base)
    assert key == cache_key(**base)  # stable: the next process finds the same folder
    for change in (
        {"torch_version": "2.15.0"},
        {"cpu": "x86_64 EPYC [avx2 avx512_bf16 fma]"},
        {"network": "abd"},
        {"dtype": torch.bfloat16},
    ):
        assert cache_key(**{**base, **change}) != key, change


def test_the_cache_folder_follows_the_weights_and_the_dtype():
    network = tiny_network()
    folder = compile_cache.cache_folder(network, torch.float32)
    assert folder == compile_cache.cache_folder(tiny_network(), torch.float32)
    assert folder.parent.name == "compile" and compile_cache.cache_folder(network, torch.bfloat16) != folder
    with torch.no_grad():
        network.deconv3.conv2d.bias.add_(1e-3)
    assert compile_cache.cache_folder(network, torch.float32) != folder


def test_the_cache_folder_is_set_while_compiling_and_a_users_folder_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(compile_cache.INDUCTOR_CACHE_VARIABLE, raising=False)
    with compiling_in(tmp_path / "ours"):
        assert os.environ[compile_cache.INDUCTOR_CACHE_VARIABLE] == str(tmp_path / "ours")
    assert compile_cache.INDUCTOR_CACHE_VARIABLE not in os.environ and (tmp_path / "ours").is_dir()
    monkeypatch.setenv(compile_cache.INDUCTOR_CACHE_VARIABLE, default_cache_dir())  # what importing Inductor sets
    with compiling_in(tmp_path / "ours"):
        assert os.environ[compile_cache.INDUCTOR_CACHE_VARIABLE] == str(tmp_path / "ours")
    assert os.environ[compile_cache.INDUCTOR_CACHE_VARIABLE] == default_cache_dir()
    monkeypatch.setenv(compile_cache.INDUCTOR_CACHE_VARIABLE, str(tmp_path / "theirs"))
    with compiling_in(tmp_path / "ours2"):
        assert os.environ[compile_cache.INDUCTOR_CACHE_VARIABLE] == str(tmp_path / "theirs")
    assert not (tmp_path / "ours2").exists()


def test_compile_falls_back_to_eager_with_one_line_when_torch_compile_raises(monkeypatch, caplog):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python\nand a second line nobody should see")

    monkeypatch.setattr(torch, "compile", broken_compile)
    network = tiny_network()
    pixels = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    weights, alpha = np.eye(2, dtype=np.float32)[[0]], np.ones(1, np.float32)
    with caplog.at_level(logging.WARNING, logger="models.style.runner"):
        runner = StylizerRunner(network, CPU, torch.float32, compile=True)
    assert not runner.compiled
    [record] = [r for r in caplog.records if "--compile" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "Dynamo is not supported" in message and "eagerly" in message
    eager = StylizerRunner(network, CPU, torch.float32)
    assert np.array_equal(runner(pixels, weights, alpha), eager(pixels, weights, alpha))


def test_compile_falls_back_to_eager_when_the_first_compile_fails(monkeypatch, caplog):
    def compile_that_fails_when_called(model, **kwargs):
        def forward(*args):
            raise RuntimeError("C++ compile error\ng++: fatal error: no input files")

        return forward

    monkeypatch.setattr(torch, "compile", compile_that_fails_when_called)
    runner = StylizerRunner(tiny_network(), CPU, torch.float32, compile=True)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="models.style.runner"):
        output = runner(pixels, np.eye(2, dtype=np.float32)[[0]], np.ones(1, np.float32))
    assert output.shape == pixels.shape and not runner.compiled
    [message] = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert message.count("\n") == 0 and "C++ compile error" in message and "fatal error" not in message


def test_no_cpp_compiler_means_eager_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(compile_cache.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="models.style.runner"):
        runner = StylizerRunner(tiny_network(), CPU, torch.float32, compile=True)
    assert not runner.compiled
    [message] = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert "no C++ compiler found" in message and "eagerly" in message


COMPILE_ONCE = """
import json, sys
import numpy as np, torch
from torch._dynamo.utils import counters
from models.style.compile_cache import cache_folder
from models.style.runner import StylizerRunner
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
torch.manual_seed(0)
network = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1)).eval()
runner = StylizerRunner(network, torch.device("cpu"), torch.float32, compile=True)
pixels = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
runner(pixels, np.eye(2, dtype=np.float32)[[0]], np.ones(1, np.float32))
print(json.dumps(dict(compiled=runner.compiled, folder=str(cache_folder(runner.model, runner.dtype)),
                      hits=counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"],
                      misses=counters["inductor"]["fxgraph_cache_miss"])))
"""


@pytest.mark.slow
def test_a_second_process_compiles_from_the_cache_folder(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != compile_cache.INDUCTOR_CACHE_VARIABLE}
    env.update(STYLEBEAM_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))

    def compile_in_a_new_process() -> dict:
        done = subprocess.run([sys.executable, "-c", COMPILE_ONCE], env=env, capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = compile_in_a_new_process()
    folder = Path(first["folder"])
    assert first["compiled"] and folder.is_relative_to(tmp_path / "cache" / "compile")
    assert first["misses"] > 0 and any(folder.rglob("*"))  # it compiled, into our folder
    second = compile_in_a_new_process()
    assert second["compiled"] and second["folder"] == first["folder"]
    assert second["hits"] > 0 and second["misses"] == 0  # and the next process found what it built
