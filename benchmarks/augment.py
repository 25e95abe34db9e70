"""End-to-end speed and memory of ``pipelines.augment`` against a naive per-image PyTorch loop.

    python benchmarks/augment.py [--images 500] [--size 256] [--stylizer CKPT | --width W] [--compile]
        [--rss 1000,5000]

Prints one table:
- naive loop: PIL decode → fp32 forward of one image → PIL JPEG encode, one image at a time (the baseline);
- model only: the same network in the job's settings (batch, precision, channels-last) on tensors already in memory;
- augment job: the whole Beam job on FnApiRunner (read, decode once, batched stylise, encode, Parquet);
- peak RSS of the job (a fresh process each) at each dataset size of ``--rss``, at ``--rss-size`` pixels.

One output per image (``--styles random:1``) so images/s compare like for like.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.checkpoint import load_stylizer, save_stylizer  # noqa: E402
from models.inference import StylizerRunner, resolve_precision  # noqa: E402
from models.pixels import tensor_to_pil  # noqa: E402
from models.stylizer import MultiStyleTransformer, StylizerConfig, one_hot  # noqa: E402
from transforms.images import encode_image, pil_to_tensor  # noqa: E402

DEMO = REPO / "pipelines" / "assets" / "demo_stylizer.safetensors"


def make_dataset(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` JPEG photos-like images (smooth fields + edges), ``size`` × ``size``, in two label folders."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        a, b, c = rng.uniform(0.5, 6, 3)
        field = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * x * y * 3)], -1)
        pixels = ((field * 0.5 + 0.5) * 255).astype(np.uint8)
        label = folder / ("even" if i % 2 == 0 else "odd")
        label.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(label / f"{i:06d}.jpg", quality=90)


def naive_loop(files: list[Path], model: MultiStyleTransformer, seconds: float) -> float:
    """Images/s of the loop most people write first; runs up to ``seconds`` then extrapolates."""
    model = model.float().eval()
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        for path in files:
            image = Image.open(path).convert("RGB")
            out = model(pil_to_tensor(image)[None], one_hot([done % model.num_styles], model.num_styles))
            encode_image(tensor_to_pil(out.clamp(0, 1)), "jpeg")
            done += 1
            if time.perf_counter() - started > seconds:
                break
    return done / (time.perf_counter() - started)


def model_only(model: MultiStyleTransformer, size: int, batch: int, precision: str, seconds: float) -> float:
    """The job's ``StylizerRunner`` on in-memory uint8 batches (on CPU it runs one image per forward pass)."""
    runner = StylizerRunner(model, torch.device("cpu"), resolve_precision(precision, torch.device("cpu")), batch)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    weights = np.eye(model.num_styles, dtype=np.float32)[np.arange(batch) % model.num_styles]
    alpha = np.ones(batch, np.float32)
    runner(pixels, weights, alpha)  # warm-up: oneDNN primitive creation
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner(pixels, weights, alpha)
        done += batch
    return done / (time.perf_counter() - started)


def run_job(input_dir: Path, output: Path, stylizer: str, size: int, batch: int, precision: str, *extra) -> dict:
    """The job in a fresh process: wall seconds, in-job seconds and that process's peak RSS."""
    command = [
        sys.executable,
        "-c",
        "import resource, sys, json; from pipelines import augment; augment.run(sys.argv[1:]); "
        "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))",
        f"--input={input_dir}",
        f"--output={output}",
        f"--stylizer={stylizer}",
        "--styles=random:1",
        f"--image-size={size}",
        f"--batch-size={batch}",
        f"--precision={precision}",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    rss = json.loads(done.stdout.strip().splitlines()[-1])["rss_mb"]
    summary = json.loads((output / "summary.json").read_text())
    return {"wall_s": wall, "job_s": summary["elapsed_s"], "rows": summary["counts"]["rows_written"], "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--stylizer", default=str(DEMO) if DEMO.exists() else "")
    parser.add_argument("--width", type=float, default=1.0, help="width of a random net when no --stylizer")
    parser.add_argument("--rss", default="1000,5000", help="dataset sizes for the peak-RSS runs ('' to skip)")
    parser.add_argument("--rss-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also time the job with --compile")
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget of the naive/model-only loops")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stylizer = args.stylizer
        if not stylizer:
            torch.manual_seed(0)
            stylizer = str(tmp / "random.safetensors")
            save_stylizer(stylizer, MultiStyleTransformer(StylizerConfig(4, width=args.width)), list("abcd"))
        model, info = load_stylizer(stylizer)
        make_dataset(tmp / "data", args.images, args.size)
        files = sorted((tmp / "data").rglob("*.jpg"))

        rows = []
        naive = naive_loop(files, model, args.seconds)
        rows.append(("naive loop (fp32, 1 image)", naive, None))
        fast = model_only(model, args.size, args.batch_size, args.precision, args.seconds)
        rows.append((f"model only ({args.precision}, as in the job)", fast, None))
        job = run_job(tmp / "data", tmp / "out", stylizer, args.size, args.batch_size, args.precision)
        rows.append(("augment job, in-job time", job["rows"] / job["job_s"], job["rss_mb"]))
        rows.append(("augment job, incl. start-up", job["rows"] / job["wall_s"], None))
        if args.compile:
            job = run_job(
                tmp / "data", tmp / "out-c", stylizer, args.size, args.batch_size, args.precision, "--compile"
            )
            rows.append(("augment job --compile, in-job time", job["rows"] / job["job_s"], job["rss_mb"]))
            rows.append(("augment job --compile, incl. start-up", job["rows"] / job["wall_s"], None))

        print(
            f"\nstylizer {info.digest} width {info.config.width}, {args.images} images at {args.size}², "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        print(f"{'':38} {'images/s':>9} {'vs naive':>9} {'peak RSS MB':>12}")
        for name, rate, rss in rows:
            print(f"{name:38} {rate:9.2f} {rate / naive:8.2f}x {'' if rss is None else f'{rss:12.0f}'}")

        sizes = [int(n) for n in args.rss.split(",") if n]
        for count in sizes:
            folder = tmp / f"rss{count}"
            make_dataset(folder, count, args.rss_size, seed=count)
            result = run_job(folder, tmp / f"rss-out{count}", stylizer, args.rss_size, args.batch_size, args.precision)
            print(
                f"peak RSS at {count:>6} images ({args.rss_size}²): {result['rss_mb']:8.0f} MB "
                f"({result['rows'] / result['job_s']:.1f} images/s)"
            )
    print(f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
