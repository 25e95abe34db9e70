"""Seconds per image of Gatys optimisation (VGG19, L-BFGS, fp32) at 256² and 512², CPU and CUDA when present.

    python -m benchmarks.gatys [--sizes 256,512] [--steps 10] [--full-steps 300] [--devices cpu,cuda] [--threads T]

Each run times ``--steps`` L-BFGS iterations after one warm-up step and also prints the time for ``--full-steps``
extrapolated from the per-step time (a full 300-step run at 512² takes tens of minutes on a small CPU).
Weights do not change the arithmetic, so the loss network is random unless ``--loss-network`` says otherwise;
the number of loss evaluations per step (L-BFGS line searches) is printed because it does depend on them.
``benchmarks/stylizer.py`` imports ``gatys_seconds_per_image`` for its feed-forward vs Gatys ratio.
"""

import argparse
import time
from dataclasses import dataclass

import torch

from models.style.gatys import CONTENT_LAYERS, STYLE_LAYERS, GatysConfig, style_transfer
from models.style.vgg import build_loss_network


@dataclass
class GatysTiming:
    seconds_per_image: float  # for ``steps`` steps
    seconds_per_step: float  # per image
    evaluations_per_step: float
    seconds_per_evaluation: float  # one loss-network forward + backward, per image: comparable across runs


def measure_gatys(
    size: int,
    steps: int,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 1,
    optimizer: str = "lbfgs",
    arch: str = "vgg19",
    loss_network: str = "random",
    seed: int = 0,
) -> GatysTiming:
    """Time ``steps`` iterations of Gatys optimisation on ``batch_size`` random ``size × size`` images."""
    device = torch.device(device)
    network = build_loss_network(arch, loss_network, layers=CONTENT_LAYERS + STYLE_LAYERS, seed=seed, device=device)
    generator = torch.Generator().manual_seed(seed)
    content = torch.rand(batch_size, 3, size, size, generator=generator).to(device)
    style = torch.rand(3, size, size, generator=generator).to(device)
    # Warm-up: allocator, cuDNN algorithm choice, oneDNN primitive caches.
    style_transfer(network, content, [style], config=GatysConfig(steps=1, optimizer=optimizer))
    _synchronize(device)
    start = time.perf_counter()
    result = style_transfer(network, content, [style], config=GatysConfig(steps=steps, optimizer=optimizer))
    _synchronize(device)
    seconds = time.perf_counter() - start
    return GatysTiming(
        seconds_per_image=seconds / batch_size,
        seconds_per_step=seconds / batch_size / max(steps, 1),
        evaluations_per_step=result.evaluations / max(steps, 1),
        seconds_per_evaluation=seconds / batch_size / max(result.evaluations, 1),
    )


def gatys_seconds_per_image(size: int, steps: int, device: str | torch.device = "cpu", **kwargs) -> float:
    """Wall seconds to stylise one ``size × size`` image by ``steps`` L-BFGS iterations (fp32); see measure_gatys."""
    return measure_gatys(size, steps, device, **kwargs).seconds_per_image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gatys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512", help="square image sizes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="L-BFGS iterations timed (default: %(default)s)")
    parser.add_argument("--full-steps", type=int, default=300, help="steps of a real run, extrapolated (default: 300)")
    parser.add_argument("--devices", help="comma-separated (default: cpu, and cuda when present)")
    parser.add_argument("--batch-size", type=int, default=1, help="images optimised together (default: 1)")
    parser.add_argument("--loss-network", default="random", help="imagenet|random|PATH (default: random)")
    parser.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, VGG19 L-BFGS fp32, batch {args.batch_size}"
    )
    header = f"{'device':<8}{'size':>6}{'s/eval':>9}{'evals/step':>12}{'s/step':>10}{f's/image @{args.steps}':>16}"
    header += f"{f's/image @{args.full_steps} (extrap.)':>28}"
    print(header)
    for device in devices:
        for size in (int(s) for s in args.sizes.split(",")):
            timing = measure_gatys(size, args.steps, device, batch_size=args.batch_size, loss_network=args.loss_network)
            print(
                f"{device:<8}{size:>6}{timing.seconds_per_evaluation:>9.3f}{timing.evaluations_per_step:>12.2f}{timing.seconds_per_step:>10.3f}"
                f"{timing.seconds_per_image:>16.2f}{timing.seconds_per_step * args.full_steps:>28.1f}",
                flush=True,
            )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
