"""Model-only speed of the feed-forward stylizer, and how it compares with Gatys optimisation.

    python -m benchmarks.stylizer [--quick] [--checkpoint CKPT | --width W] [--sizes 256,512]
        [--batch-sizes 1,8,32] [--devices cpu,cuda] [--reps 3] [--gatys-steps 2] [--no-gatys]

For every device, precision, size and batch size: images per second of ``MultiStyleTransformer.stylize``
(weights and inputs already on the device, channels_last, no decode/encode), FLOPs per image (``count_flops``:
2 × multiply-accumulates of the convolutions) and the achieved GFLOP/s. Precisions: fp32 and bf16 on CPU,
fp16 and bf16 (and fp32) on CUDA; the low-precision rows carry the PSNR of their output against fp32's, with the
peak taken as the fp32 output's range so that it means the same for trained and random weights.

The last column divides the seconds Gatys optimisation needs for one image of the same size (``benchmarks/gatys.py``:
VGG19, L-BFGS, fp32, ``--gatys-full-steps`` iterations extrapolated from ``--gatys-steps`` timed ones) by the
feed-forward seconds per image at that row's batch size.
"""

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.common.pixels import uint8_to_float
from models.style.checkpoint import load_stylizer
from models.style.registry import resolve
from models.style.stylizer import MultiStyleTransformer, StylizerConfig, count_flops, one_hot

SAMPLES = Path(__file__).resolve().parents[1] / "pipelines" / "assets" / "samples"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(checkpoint: str | None, width: float | None) -> tuple[MultiStyleTransformer, str]:
    """The network to time: a checkpoint's, or random weights of ``width`` (speed does not depend on weights)."""
    if width is None and checkpoint:
        model, info = load_stylizer(resolve(checkpoint))
        channels = info.config.layer_channels()
        return model, f"{Path(checkpoint).name} ({channels} channels, {info.config.num_styles} styles)"
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=4, width=width or 1.0)).eval()
    with torch.no_grad():  # distinct styles, so the precision comparison sees non-trivial CIN rows
        for parameter in model.style_parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model, f"random weights (width {width or 1.0}, 4 styles)"


def sample_batch(size: int, batch_size: int) -> torch.Tensor:
    """``(B, 3, size, size)`` in [0, 1]: the shipped sample photos (random pixels when they are missing)."""
    from PIL import Image

    photos = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        tensor = uint8_to_float(np.asarray(image))
        photos.append(F.interpolate(tensor[None], size=(size, size), mode="bilinear", antialias=True)[0])
    if not photos:
        return torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.stack([photos[i % len(photos)] for i in range(batch_size)]).clamp(0, 1)


def time_stylize(model, images, style_weights, reps: int, device: torch.device) -> float:
    """Seconds per call of ``model.stylize``, median of ``reps`` after one warm-up call."""
    model.stylize(images, style_weights)
    _synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model.stylize(images, style_weights)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR of ``other`` against ``reference`` with the peak = the reference's range (unclamped outputs)."""
    reference, other = reference.float(), other.float()
    peak = float(reference.max() - reference.min())
    mse = float((reference - other).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def run(args) -> None:
    base, description = build_model(args.checkpoint, args.width)
    sizes = [int(s) for s in args.sizes.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    flops = {size: count_flops(base, size, size) for size in sizes}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; model: {description}; channels_last")

    gatys = {}
    if not args.no_gatys:
        from benchmarks.gatys import measure_gatys

        for device in devices:
            for size in sizes:
                timing = measure_gatys(size, args.gatys_steps, device)
                gatys[device, size] = timing.seconds_per_step * args.gatys_full_steps
                print(
                    f"gatys {device} {size}²: {timing.seconds_per_step:.2f} s/step "
                    f"→ {gatys[device, size]:.0f} s/image for {args.gatys_full_steps} steps",
                    flush=True,
                )

    columns = f"{'device':<7}{'dtype':<6}{'size':>5}{'batch':>6}{'img/s':>9}{'ms/img':>10}{'GFLOP/img':>11}"
    columns += f"{'GFLOP/s':>9}{'PSNR dB':>9}{'gatys s/img':>13}{'x faster':>10}"
    print(columns)
    for device_name in devices:
        device = torch.device(device_name)
        dtypes = ["fp32", "bf16"] if device.type == "cpu" else ["fp32", "fp16", "bf16"]
        for size in sizes:
            reference = None
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                model = copy.deepcopy(base).to(device=device, dtype=dtype, memory_format=torch.channels_last)
                # PSNR on one batch of 2 photos, against the fp32 output of the same inputs
                probe = (
                    sample_batch(size, 2).to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
                )
                with torch.inference_mode():
                    output = model(probe, one_hot([0, 1], model.num_styles).to(device))
                if dtype_name == "fp32":
                    reference, quality = output, ""
                else:
                    quality = f"{psnr(reference, output):.1f}"
                for batch_size in batch_sizes:
                    images = sample_batch(size, batch_size).to(device=device, dtype=dtype)
                    images = images.contiguous(memory_format=torch.channels_last)
                    weights = one_hot([i % model.num_styles for i in range(batch_size)], model.num_styles).to(device)
                    seconds = time_stylize(model, images, weights, args.reps, device)
                    per_image = seconds / batch_size
                    gatys_seconds = gatys.get((device_name, size))
                    print(
                        f"{device_name:<7}{dtype_name:<6}{size:>5}{batch_size:>6}{1 / per_image:>9.2f}"
                        f"{per_image * 1e3:>10.1f}{flops[size] / 1e9:>11.1f}{flops[size] / per_image / 1e9:>9.1f}"
                        f"{quality:>9}{f'{gatys_seconds:.0f}' if gatys_seconds else '-':>13}"
                        f"{f'{gatys_seconds / per_image:.0f}' if gatys_seconds else '-':>10}",
                        flush=True,
                    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stylizer", description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default="magenta26", help="a checkpoint or built-in name (default: %(default)s)")
    model.add_argument("--width", type=float, help="time random weights of this width instead (Johnson's net: 1.0)")
    parser.add_argument("--sizes", default="256,512", help="square image sizes (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="(default: %(default)s)")
    parser.add_argument("--devices", help="comma-separated (default: cpu, and cuda when present)")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per row, median taken (default: 3)")
    parser.add_argument("--gatys-steps", type=int, default=2, help="Gatys L-BFGS steps timed (default: 2)")
    parser.add_argument("--gatys-full-steps", type=int, default=300, help="Gatys steps per image (default: 300)")
    parser.add_argument("--no-gatys", action="store_true", help="skip the Gatys column")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--quick", action="store_true", help="batch sizes 1,8, one timed call per row, one Gatys step (shared CPUs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.reps, args.gatys_steps = "1,8", 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
