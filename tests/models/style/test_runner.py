import numpy as np
import pytest
import torch

from models.common.errors import UsageError
from models.style.runner import StylizerRunner, resolve_precision
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.25, num_residual=2)).eval()
    with torch.no_grad():
        for p in net.style_parameters():
            p.add_(torch.randn_like(p) * 0.3)
        net.deconv3.conv2d.bias.fill_(128.0)  # outputs around mid-grey, so rounding is exercised everywhere
    return net


def batch(count, size=40, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    weights = np.eye(2, dtype=np.float32)[np.arange(count) % 2]
    return pixels, weights, np.ones(count, np.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_image_gets_the_same_bytes_whatever_its_batch_mates(model, dtype):
    runner = StylizerRunner(model, CPU, dtype, batch_size=4, forward_batch=4)  # padded forward passes of 4
    pixels, weights, alpha = batch(6)
    full = runner(pixels, weights, alpha)  # 4 + 2 (padded)
    alone = runner(pixels[3:4], weights[3:4], alpha[3:4])
    other = runner(np.concatenate([pixels[5:6], pixels[3:4]]), weights[[5, 3]], alpha[[5, 3]])
    assert full.shape == pixels.shape and full.dtype == np.uint8
    assert np.array_equal(full[3], alone[0]) and np.array_equal(full[3], other[1])
    one_at_a_time = StylizerRunner(model, CPU, dtype, batch_size=4)
    assert one_at_a_time.batch_size == 1 and one_at_a_time(pixels, weights, alpha).shape == pixels.shape


def test_matches_the_float_model_and_alpha_blends(model):
    runner = StylizerRunner(model, CPU, torch.float32, batch_size=2)
    pixels, weights, _ = batch(2)
    out = runner(pixels, weights, np.array([1.0, 0.0], np.float32))
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    expected = model.stylize(images, torch.from_numpy(weights))[0].mul(255).round().permute(1, 2, 0).numpy()
    assert np.abs(out[0].astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(out[1], pixels[1])  # alpha 0 gives the input back


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_float_path_is_the_uint8_path_before_quantising(model, dtype):
    """StyleAugment and the trainer's grid hand float images to ``stylize``; the job hands uint8 to ``__call__``:
    one forward pass, so on uint8 levels the two agree to the byte."""
    from models.common.pixels import float_to_uint8, uint8_to_float

    runner = StylizerRunner(model, CPU, dtype, batch_size=3, forward_batch=2)
    pixels, weights, _ = batch(3)
    alpha = np.array([1.0, 0.5, 0.0], np.float32)
    floats = runner.stylize(uint8_to_float(pixels), weights, alpha)
    assert floats.dtype == torch.float32 and floats.shape == (3, 3, 40, 40)
    assert float(floats.min()) >= 0 and float(floats.max()) <= 1
    assert np.array_equal(float_to_uint8(floats).numpy(), runner(pixels, weights, alpha))


def test_every_caller_gets_the_precision_rule_by_name(model):
    assert StylizerRunner(model, "cpu").dtype == resolve_precision("auto", CPU, model)
    assert StylizerRunner(model, "cpu", "bf16").dtype == torch.bfloat16
    assert StylizerRunner(model, CPU, torch.float32).dtype == torch.float32


def test_bf16_stays_close_to_fp32(model):
    pixels, weights, alpha = batch(4, size=64)
    fp32 = StylizerRunner(model, CPU, torch.float32, 4)(pixels, weights, alpha).astype(np.float64)
    bf16 = StylizerRunner(model, CPU, torch.bfloat16, 4)(pixels, weights, alpha).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(np.mean((fp32 - bf16) ** 2), 1e-12))
    assert psnr > 30, psnr


def test_precision_choices():
    assert resolve_precision("fp32", CPU) == torch.float32
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    assert resolve_precision("auto", CPU) == torch.float32  # no network to measure: fp32 (models.style.precision)
    with pytest.raises(UsageError, match="fp16 is for CUDA"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UsageError, match="unknown precision"):
        resolve_precision("int8", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_matches_cpu(model):
    pixels, weights, alpha = batch(4, size=64)
    cpu = StylizerRunner(model, CPU, torch.float32, 4)(pixels, weights, alpha).astype(int)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        gpu = StylizerRunner(model, torch.device("cuda"), dtype, 4)(pixels, weights, alpha).astype(int)
        assert np.abs(gpu - cpu).mean() < (0.5 if dtype == torch.float32 else 3.0), dtype


# Compiled pixels against eager ones: tests/models/style/test_compile_cache.py (one cold compile serves both checks).


def test_non_finite_output_is_raised_for_the_images_it_hits(model):
    from models.style.runner import NonFiniteOutput

    broken = MultiStyleTransformer(model.config).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.in5.weight[1] = 3e38  # finite weights that overflow for style 1 only
    runner = StylizerRunner(broken, CPU, torch.float32, batch_size=2)
    pixels, weights, alpha = batch(2)
    with pytest.raises(NonFiniteOutput) as caught:
        runner(pixels, weights, alpha)
    assert caught.value.indices == [1]  # the second image (style 1), named by its place in the whole batch
    assert runner(pixels[:1], weights[:1], alpha[:1]).shape == (1, 40, 40, 3)
    stacked = StylizerRunner(broken, CPU, torch.float32, batch_size=4, forward_batch=2)
    with pytest.raises(NonFiniteOutput) as caught:
        stacked(*batch(5))  # styles 0 1 0 1 0 in passes of two: every style-1 image is named
    assert caught.value.indices == [1, 3]


@pytest.mark.slow
def test_style_embeddings_do_not_depend_on_the_thread_count():
    """Float32 embeddings differed by ~1e-6 between 1 and 2 torch threads (oneDNN splits its sums
    by thread), so augment wrote other bytes with --cpu-threads 2 and a DataLoader worker other embeddings."""
    from models.style.predictor import StylePredictor
    from models.style.runner import StyleEmbedder

    torch.manual_seed(0)
    predictor = StylePredictor().eval()
    paintings = list(np.random.default_rng(1).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8))
    before = torch.get_num_threads()
    try:
        embedded = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            embedded[threads] = StyleEmbedder(predictor, CPU)(paintings)
    finally:
        torch.set_num_threads(before)
    assert embedded[1].dtype == np.float32 and embedded[1].shape == (3, 100)
    assert np.array_equal(embedded[1], embedded[2])
    float32 = predictor(torch.stack([prepare(p) for p in paintings])).detach().numpy()
    assert np.abs(embedded[1] - float32).max() < 1e-4  # the same network, only more exact


def prepare(pixels: np.ndarray) -> torch.Tensor:
    from PIL import Image

    from models.style.predictor import prepare_style_image

    return prepare_style_image(Image.fromarray(pixels, "RGB"))


def test_out_of_memory_is_recognised():
    from models.style.runner import is_out_of_memory

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
