"""``--precision auto`` on CPU: the rule, the measurement's plumbing and its cache (no timing is asserted)."""

import json

import pytest
import torch

import models.style.precision as precision
import models.style.runner as runner_module
from models.style.runner import StylizerRunner, resolve_precision
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.25, num_residual=1)).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path))
    return tmp_path / "precision"


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(runner_module, "cpu_supports_bf16", lambda: True)


@pytest.fixture
def measured(monkeypatch):
    """Replace the timing with given figures (``.figures``, to change); returns the list of calls."""

    class Calls(list):
        figures: dict

    calls = Calls()
    figures = {"fp32_s": 0.050, "bf16_s": 0.030, "psnr_db": 50.0}

    def fake(stylize, image, code):
        calls.append((image.shape, code.shape))
        return dict(figures)

    monkeypatch.setattr(precision, "measure", fake)
    calls.figures = figures
    return calls


def test_without_native_bf16_auto_is_fp32_without_measuring(model, cache, monkeypatch):
    monkeypatch.setattr(runner_module, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(precision, "measure", lambda *args: pytest.fail("measured on a CPU without native bf16"))
    assert resolve_precision("auto", CPU, model) == torch.float32
    assert StylizerRunner(model, CPU).dtype == torch.float32
    assert not cache.exists()


def test_auto_takes_bf16_only_when_it_is_faster_and_accurate(model, cache, native_bf16, measured):
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16
    assert measured == [((1, 3, 32, 32), (1, 2))]  # the network's own code size, at the size asked

    measured.figures.update(psnr_db=35.0)  # faster but outside the accuracy bound
    assert resolve_precision("auto", CPU, model, side=40) == torch.float32
    measured.figures.update(psnr_db=50.0, bf16_s=0.048)  # accurate, but not faster by MIN_GAIN
    assert resolve_precision("auto", CPU, model, side=48) == torch.float32
    measured.figures.update(bf16_s=0.080)  # slower
    assert resolve_precision("auto", CPU, model, side=56) == torch.float32


def test_explicit_precisions_and_cuda_never_measure(model, cache, native_bf16, monkeypatch):
    monkeypatch.setattr(precision, "measure", lambda *args: pytest.fail("measured for an explicit precision"))
    assert resolve_precision("fp32", CPU, model) == torch.float32
    assert resolve_precision("bf16", CPU, model) == torch.bfloat16
    assert resolve_precision("auto", CPU) == torch.float32  # no network: nothing to measure
    assert not cache.exists()


def test_the_choice_is_cached_per_machine_torch_network_size_and_threads(model, cache, native_bf16, measured):
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and not list(cache.glob(".*"))  # written atomically: no temporary file left
    record = json.loads(files[0].read_text())
    assert record["choice"] == "bf16" and record["key"]["side"] == 32 and record["psnr_db"] == 50.0

    measured.figures.update(bf16_s=0.080)  # a re-measurement would now say fp32: the cache answers instead
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16
    assert StylizerRunner(model, CPU).dtype == torch.float32  # another size (256²): measured anew
    assert len(measured) == 2

    other = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.25, num_residual=1)).eval()
    with torch.no_grad():
        other.deconv3.conv2d.bias.add_(1.0)  # same shape, other weights: bf16's accuracy may differ
    assert resolve_precision("auto", CPU, other, side=32) == torch.float32
    assert len(measured) == 3

    key = precision.cache_key(model, 32)
    for changed in ({"torch": "0.0"}, {"cpu": "another CPU"}, {"threads": key["threads"] + 1}):
        assert precision.cache_path({**key, **changed}) != precision.cache_path(key)


def test_a_corrupt_or_foreign_cache_file_is_measured_again(model, cache, native_bf16, measured):
    key = precision.cache_key(model, 32)
    path = precision.cache_path(key)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16
    assert len(measured) == 1 and json.loads(path.read_text())["choice"] == "bf16"

    path.write_text(json.dumps({"key": {**key, "side": 64}, "choice": "fp32"}))  # another key's record
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16
    assert len(measured) == 2


def test_an_unwritable_cache_still_gives_a_choice(model, tmp_path, native_bf16, measured, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("STYLEBEAM_CACHE", str(blocker))  # a file where the folder should be
    assert resolve_precision("auto", CPU, model, side=32) == torch.bfloat16


def test_the_measurement_runs_the_network_in_both_precisions(model, cache, native_bf16):
    """The real measurement on a tiny network (bf16 is emulated here, so only its plumbing is checked)."""
    seen = []

    def stylize(dtype, image, code):
        seen.append(dtype)
        return StylizerRunner(model, CPU, dtype).stylize(image, code)

    image, code = precision.probe_inputs(model.code_size, model.num_styles, 32)
    assert float(code.sum()) == pytest.approx(1.0) and 0 <= float(image.min()) <= float(image.max()) <= 1
    figures = precision.measure(stylize, image, code)
    assert set(seen) == {torch.float32, torch.bfloat16} and len(seen) == 2 + 2 * precision.REPEATS
    assert figures["fp32_s"] > 0 and figures["bf16_s"] > 0
    assert 20 < figures["psnr_db"] < 200  # bf16 differs from fp32, a little
    assert precision.choose(figures) in ("fp32", "bf16")
