"""The int8 probe measures what it says: its int8 convolution is the float one up to rounding, on every engine."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from benchmarks.int8 import INPUT_LEVELS, Int8Conv, affine, calibrate, quantised_copy
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

ENGINES = [e for e in ("onednn", "x86", "fbgemm") if e in torch.backends.quantized.supported_engines]


@pytest.fixture(autouse=True)
def quiet_deprecation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.14 deprecates the quantised-tensor API the probe uses
        yield


def test_affine_covers_the_range_with_zero_on_the_grid():
    scale, zero = affine(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255) and zero == 64
    assert -zero * scale == pytest.approx(-1.0, abs=scale) and (255 - zero) * scale == pytest.approx(3.0, abs=scale)
    assert affine(0.5, 2.0) == (pytest.approx(2.0 / 255), 0)  # widened to include 0
    assert affine(-1.0, 3.0, levels=INPUT_LEVELS)[0] == pytest.approx(4.0 / 127)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("channels, kernel", [(8, 1), (8, 3), (32, 3)])
def test_int8_convolution_is_the_float_one_up_to_rounding(engine, channels, kernel, monkeypatch):
    """Within ~2 output steps of the float convolution; with 8-bit inputs the AVX2 kernels saturate (17–41 steps)."""
    monkeypatch.setattr(torch.backends.quantized, "engine", engine)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 4, kernel, bias=True)
    x = torch.rand(1, channels, 12, 12)
    expected = conv(x).detach()
    output_range = (float(expected.min()), float(expected.max()))
    got = Int8Conv(conv, (0.0, 1.0), output_range)(x)
    step = affine(*output_range)[0]
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 3 * step


def test_quantised_copy_replaces_every_convolution_and_leaves_the_network_alone():
    network = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1)).eval()
    images, codes = torch.rand(1, 3, 16, 16), torch.tensor([[1.0, 0.0]])
    ranges = calibrate(network, [(images, codes)])
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in network.modules())
    assert len(ranges) == 2 * convolutions  # an input and an output range each
    copied = quantised_copy(network, ranges)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in copied.modules())
    assert sum(isinstance(m, Int8Conv) for m in copied.modules()) == convolutions
    assert sum(isinstance(m, torch.nn.Conv2d) for m in network.modules()) == convolutions
    with torch.inference_mode():
        assert F.mse_loss(copied(images, codes), network(images, codes)) < 1e-3
