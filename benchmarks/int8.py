"""Would int8 convolutions make the built-in networks faster at an accuracy the job can accept? A probe.

    python -m benchmarks.int8 [--size 256] [--threads 1] [--reps 15] [--calibration 16] [--engines onednn,x86]

Both built-in networks (``magenta26`` and ``magenta_arbitrary``'s transformer), each convolution replaced by
PyTorch's int8 convolution (``torch.ops.quantized.conv2d`` on the named quantised engine): weights int8 per output
channel (symmetric), activations 7-bit per tensor (see ``Int8Conv``) with ranges from min/max over
``--calibration`` photos (scikit-image crops, as ``benchmarks.augment`` makes them, each with its own style), conv
outputs requantised per tensor and
dequantised for the instance norms, which stay in float, as does everything between the convolutions. This is the
usual static post-training recipe; the quantise/dequantise steps around each convolution are timed with it.

Printed per network and engine: milliseconds per ``--size``² image (batch 1, median of ``--reps``, ``--threads``
torch threads, the float network channels-last as the job runs it), the int8 network's speed-up, and its accuracy
on held-out photos (not the calibration ones): PSNR against the fp32 network (peak 1.0; the bf16 path is held to
40 dB) and the mean and 99.9th-percentile absolute pixel difference. For the arbitrary network also the distance of
fp32 and of int8 to the wheel's own int8 graph run by onnxruntime: that graph quantises its activations too, so it is
the reference an int8 path of that network should come close to. Nothing here is used by the jobs; ``--precision``
offers int8 only if a network passes the accuracy bound and runs faster (see the README).
"""

import argparse
import copy
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.arbitrary_model import median_ms, onnx_session  # noqa: E402
from benchmarks.augment import make_photos  # noqa: E402
from models.style.checkpoint import load_arbitrary, load_stylizer  # noqa: E402
from models.style.magenta_import import ARBITRARY_TRANSFORM  # noqa: E402
from models.style.precision import cpu_signature  # noqa: E402
from models.style.registry import resolve  # noqa: E402
from models.style.runner import keep_freed_memory  # noqa: E402

MIN_PSNR_DB = 40.0  # the bound bf16 is held to against fp32
INPUT_LEVELS = 128  # 7-bit activations into each int8 convolution: see ``Int8Conv``


class Int8Conv(torch.nn.Module):
    """A float ``nn.Conv2d`` (no padding of its own) run as an int8 convolution: quantise the input per tensor to 7
    bits, convolve with per-channel int8 weights, dequantise the requantised (8-bit) output.

    7-bit inputs (PyTorch's ``reduce_range``, its x86 default): without VNNI the int8 kernels multiply uint8 by int8
    with ``vpmaddubsw``, which adds pairs of products into int16 with saturation; full-range inputs overflow it (on
    AVX2 a 3×3 convolution of 8 channels was off by up to 17 output steps, a 1×1 by 41; with 7 bits 1.2–1.5)."""

    def __init__(self, conv: torch.nn.Conv2d, input_range: tuple[float, float], output_range: tuple[float, float]):
        super().__init__()
        weight = conv.weight.detach().float()
        scales = weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
        quantised = torch.quantize_per_channel(
            weight, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8
        )
        bias = conv.bias.detach().float() if conv.bias is not None else None
        self.packed = torch.ops.quantized.conv2d_prepack(
            quantised, bias, list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups
        )
        self.input_scale, self.input_zero = affine(*input_range, levels=INPUT_LEVELS)
        self.output_scale, self.output_zero = affine(*output_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero, torch.quint8)
        return torch.ops.quantized.conv2d(q, self.packed, self.output_scale, self.output_zero).dequantize()


def affine(low: float, high: float, levels: int = 256) -> tuple[float, int]:
    """uint8 scale and zero point covering [low, high] (and 0, which must be exact) with ``levels`` values."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / (levels - 1)
    return scale, int(np.clip(round(-low / scale), 0, levels - 1))


def calibrate(network: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Each convolution's input and output (min, max) over the calibration batches."""
    ranges: dict[str, list[float]] = {}

    def hook(name):
        def record(module, inputs, output):
            for key, tensor in ((f"{name}:in", inputs[0]), (f"{name}:out", output)):
                low, high = float(tensor.min()), float(tensor.max())
                old = ranges.get(key, [low, high])
                ranges[key] = [min(old[0], low), max(old[1], high)]

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in network.named_modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        for images, codes in batches:
            network(images, codes)
    for handle in handles:
        handle.remove()
    return ranges


def quantised_copy(network: torch.nn.Module, ranges: dict) -> torch.nn.Module:
    copied = copy.deepcopy(network)
    for name, module in list(copied.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Conv2d):
                full = f"{name}.{child_name}" if name else child_name
                setattr(module, child_name, Int8Conv(child, ranges[f"{full}:in"], ranges[f"{full}:out"]))
    return copied


def distances(a: np.ndarray, b: np.ndarray) -> dict:
    difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float(np.mean(difference**2))
    return {
        "psnr": 10 * np.log10(1.0 / max(mse, 1e-20)),
        "mean": float(difference.mean()),
        "p999": float(np.quantile(difference, 0.999)),
    }


def load_photos(size: int, count: int, seed: int) -> list[torch.Tensor]:
    with tempfile.TemporaryDirectory() as folder:
        make_photos(Path(folder), count, size, seed=seed)
        arrays = [np.array(Image.open(path).convert("RGB")) for path in sorted(Path(folder).glob("*.jpg"))]
    return [torch.from_numpy(a).permute(2, 0, 1)[None].float().div(255) for a in arrays]


def run_network(network, images, codes) -> list[np.ndarray]:
    with torch.inference_mode():
        return [
            network(image.contiguous(memory_format=torch.channels_last), code).clamp(0, 1).numpy()
            for image, code in zip(images, codes, strict=True)
        ]


def probe(name, network, make_code, args, engines, reference=None) -> list[np.ndarray]:
    """Print the network's rows; return a sheet row for the first held-out photo: the photo, fp32, int8 on the first
    engine, and their absolute difference times 4."""
    calibration = load_photos(args.size, args.calibration, seed=1)
    held_out = load_photos(args.size, 8, seed=2)
    generator = torch.Generator().manual_seed(0)
    calibration_codes = [make_code(generator) for _ in calibration]
    held_out_codes = [make_code(generator) for _ in held_out]
    network = network.to(memory_format=torch.channels_last)
    ranges = calibrate(network, list(zip(calibration, calibration_codes, strict=True)))
    fp32_out = run_network(network, held_out, held_out_codes)
    image = held_out[0].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fp32_ms = median_ms(lambda: network(image, held_out_codes[0]), args.reps)
    print(f"{name}: fp32 {fp32_ms:.1f} ms per {args.size}² image", flush=True)
    if reference is not None:
        ref_out = [reference(image, code) for image, code in zip(held_out, held_out_codes, strict=True)]
        d = distances(np.concatenate(fp32_out), np.concatenate(ref_out))
        print(f"  fp32 vs the wheel's int8 graph (onnxruntime): {format_distances(d)}")
    row = [held_out[0][0].numpy(), fp32_out[0][0]]
    for engine in engines:
        torch.backends.quantized.engine = engine
        int8 = quantised_copy(network, ranges)
        int8_out = run_network(int8, held_out, held_out_codes)
        with torch.inference_mode():
            int8_ms = median_ms(lambda int8=int8: int8(image, held_out_codes[0]), args.reps)
        d = distances(np.concatenate(int8_out), np.concatenate(fp32_out))
        verdict = "within" if d["psnr"] >= MIN_PSNR_DB else "outside"
        line = f"  int8 ({engine}): {int8_ms:.1f} ms, {fp32_ms / int8_ms:.2f}x fp32; vs fp32 {format_distances(d)}"
        print(f"{line} ({verdict} the {MIN_PSNR_DB:.0f} dB bound)", flush=True)
        if reference is not None:
            d = distances(np.concatenate(int8_out), np.concatenate(ref_out))
            print(f"    int8 ({engine}) vs the wheel's int8 graph: {format_distances(d)}")
        if len(row) == 2:
            row += [int8_out[0][0], np.clip(np.abs(int8_out[0][0] - fp32_out[0][0]) * 4, 0, 1)]
    return row


def format_distances(d: dict) -> str:
    return f"PSNR {d['psnr']:.1f} dB, mean abs {d['mean']:.4f}, p99.9 {d['p999']:.3f}"


def onnx_transformer(threads: int):
    """The wheel's int8 transformer graph (input size freed) as ``f(image (1,3,H,W), embedding) → (1,3,H,W)``."""
    session = onnx_session(ARBITRARY_TRANSFORM, threads, free_size=True)

    def run(image: torch.Tensor, embedding: torch.Tensor) -> np.ndarray:
        feeds = {
            "content_image": image.permute(0, 2, 3, 1).numpy(),
            "mobilenet_conv/Conv/BiasAdd": embedding.numpy().reshape(1, 1, 1, -1),
        }
        return np.clip(session.run(None, feeds)[0].transpose(0, 3, 1, 2), 0, 1)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=15, help="timed passes per cell, median (default: %(default)s)")
    parser.add_argument("--calibration", type=int, default=16, help="calibration photos (default: %(default)s)")
    parser.add_argument(
        "--engines", default="onednn,x86,fbgemm", help="quantised engines to try (default: %(default)s)"
    )
    parser.add_argument("--sheet", help="also a PNG: per network, photo | fp32 | int8 (first engine) | |diff| x 4")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    supported = torch.backends.quantized.supported_engines
    engines = [e for e in args.engines.split(",") if e in supported]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"torch {torch.__version__} on {platform.machine()}, CPU {cpu_signature()}")
    print(f"{args.threads} thread(s), median of {args.reps}; engines {engines} (supported: {supported}); load {load}")

    stylizer, _ = load_stylizer(resolve("magenta26"))

    def mixture(generator):
        code = torch.zeros(1, stylizer.num_styles)
        code[0, int(torch.randint(stylizer.num_styles, (1,), generator=generator))] = 1.0
        return code

    rows = [probe("magenta26", stylizer.eval(), mixture, args, engines)]

    predictor, transformer, _ = load_arbitrary(resolve("magenta_arbitrary"))
    paintings = load_photos(256, 4, seed=3)
    with torch.inference_mode():
        embeddings = [predictor(p).reshape(1, -1) for p in paintings]

    def embedding(generator):
        return embeddings[int(torch.randint(len(embeddings), (1,), generator=generator))]

    transformer_row = probe(
        "magenta_arbitrary transformer", transformer.eval(), embedding, args, engines, onnx_transformer(args.threads)
    )
    rows.append(transformer_row)
    if args.sheet:
        sheet = np.concatenate([np.concatenate(row, axis=2) for row in rows], axis=1)  # (3, H * rows, W * 4)
        Image.fromarray(np.rint(sheet.transpose(1, 2, 0) * 255).astype(np.uint8)).save(args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
