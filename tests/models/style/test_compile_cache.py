import hashlib
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


def compile_network() -> MultiStyleTransformer:
    """The network both processes of the cache test compile: tiny, its styles apart and its outputs around mid-grey,
    so that bf16 rounding is exercised in every pixel."""
    torch.manual_seed(0)
    network = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1)).eval()
    with torch.no_grad():
        for parameter in network.style_parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
        network.deconv3.conv2d.bias.fill_(128.0)
    return network


def compile_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    return pixels, np.eye(2, dtype=np.float32), np.ones(2, np.float32)


# A second interpreter: it finds what the first compile left in the cache folder, and runs the same kernels.
COMPILE_AGAIN = """
import hashlib, json, sys
import torch
from torch._dynamo.utils import counters
from models.style.compile_cache import cache_folder
from models.style.runner import StylizerRunner
from tests.models.style.test_compile_cache import compile_batch, compile_network
torch.set_num_threads(int(sys.argv[1]))  # the thread count is part of Inductor's key: the first process's
runner = StylizerRunner(compile_network(), torch.device("cpu"), torch.bfloat16, 2, compile=True)
pixels = runner(*compile_batch())
print(json.dumps(dict(compiled=runner.compiled, folder=str(cache_folder(runner.model, runner.dtype)),
                      hits=counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"],
                      misses=counters["inductor"]["fxgraph_cache_miss"], pixels=hashlib.sha256(pixels).hexdigest())))
"""


@pytest.mark.slow  # one cold Inductor compile (~30-50 s on a busy 2-core machine), then a warm one in a new process
def test_compiled_pixels_match_eager_and_a_second_process_compiles_from_the_cache(tmp_path, monkeypatch):
    """torch.compile fuses ops (2x faster on CPU); its pixels stay within rounding of the eager ones. It compiles
    into the stylebeam cache, where the next process finds it: no compile there, the same bytes out."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(compile_cache.INDUCTOR_CACHE_VARIABLE, raising=False)
    network, (pixels, weights, alpha) = compile_network(), compile_batch()
    eager = StylizerRunner(network, CPU, torch.bfloat16, 2)(pixels, weights, alpha).astype(int)
    counters.clear()
    try:
        compiled_runner = StylizerRunner(network, CPU, torch.bfloat16, 2, compile=True)
        compiled = compiled_runner(pixels, weights, alpha)
        assert compiled_runner.compiled  # it really compiled, rather than falling back
        assert np.array_equal(compiled_runner(pixels, weights, alpha), compiled)  # and is deterministic
        misses = counters["inductor"]["fxgraph_cache_miss"]
    finally:
        torch._dynamo.reset()
    assert np.abs(compiled.astype(int) - eager).mean() < 1.0 and np.abs(compiled.astype(int) - eager).max() <= 8
    folder = compile_cache.cache_folder(compiled_runner.model, compiled_runner.dtype)
    assert folder.is_relative_to(tmp_path / "cache" / "compile")
    assert misses > 0 and any(folder.rglob("*"))  # it compiled, into our folder

    env = {name: value for name, value in os.environ.items() if name != compile_cache.INDUCTOR_CACHE_VARIABLE}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_AGAIN, str(torch.get_num_threads())],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    second = json.loads(done.stdout.strip().splitlines()[-1])
    assert second["compiled"] and second["folder"] == str(folder)
    assert second["hits"] > 0 and second["misses"] == 0  # the next process found what this one built
    assert second["pixels"] == hashlib.sha256(compiled).hexdigest()
