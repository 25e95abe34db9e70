"""Stylise a few images: Gatys optimisation, or a trained multi-style checkpoint.

    python -m pipelines.stylize --method gatys --content IMG [IMG ...] --style IMG [--style IMG ...]
        --output OUT.png|DIR
    python -m pipelines.stylize --checkpoint CKPT --content IMG [IMG ...] --output DIR
        [--style NAME|all] [--alpha A] [--precision auto|fp32|bf16]
    python -m pipelines.stylize --style-image PAINTING [--style-image ...] --content IMG [IMG ...] --output DIR
        [--alpha A] [--checkpoint magenta_arbitrary] [--precision auto|fp32|bf16]

Outputs in a directory are named ``<content-stem>__<style>.png`` (Gatys: the style stems joined by ``+``; with
``--style-image``: the painting's stem). The two fast modes plan and run as ``pipelines.augment --styles all`` does
(``models.style.runner.StylizerRunner``), so a picture equals the job's row for the same photo, style and alpha (on
CUDA, for the same ``--batch-size``: the forward size).
"""

import argparse
import math
import os
import sys
from collections import defaultdict

import torch
from tqdm import tqdm

from models.common.device import resolve_device, seed_everything
from models.common.errors import UsageError
from models.common.files import path_under, write_atomically
from models.common.pixels import tensor_to_pil
from models.style.runner import PRECISIONS, is_out_of_memory
from pipelines.cli import (
    OUTPUT_HELP,
    PRECISION_HELP,
    ArgumentParser,
    add_common_args,
    positive_float,
    positive_int,
    run_main,
)
from transforms.images import (
    encode_image,
    load_image,
    long_side_size,
    pil_to_tensor,
    resize_long_side,
    resize_short_side,
    short_side_size,
)
from transforms.sources import is_image_path

GATYS_MAX_SIZE = 256  # CPU-friendly default long side; Gatys et al. 2016 worked at 512 px (a GPU job)
# The most pixels one image may have as a model sees it, refused before anything loads. Peak memory per megapixel
# per image (1 thread, fp32): the Magenta network ~450 MB (inference), Gatys on VGG-19 ~3.6 GB (optimised with
# gradients): 16 MP and 4 MP are ~7 GB and ~15 GB, times the images of a batch.
FEED_FORWARD_MAX_PIXELS = 4096 * 4096
GATYS_MAX_PIXELS = 2048 * 2048
IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipelines.stylize",
        description="Stylise images by Gatys optimisation (slow, any style image), with a trained "
        "multi-style checkpoint (fast, the checkpoint's styles) or with any painting as the style (fast, "
        "Ghiasi et al.'s arbitrary-style network).",
        epilog="examples:\n"
        "  python -m pipelines.stylize --method gatys --content photo.jpg --style starry.jpg --output out.png\n"
        "  python -m pipelines.stylize --checkpoint magenta26 --content a.jpg b.jpg --output out/ --style all\n"
        "  python -m pipelines.stylize --style-image starry.jpg --content a.jpg --output out/ --alpha 0.8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", choices=["gatys"], help="gatys (the default when no --checkpoint is given)")
    parser.add_argument(
        "--checkpoint",
        metavar="NAME|CKPT",
        help="a stylizer checkpoint or a built-in name (magenta26): stylise with its styles; with --style-image, "
        "an arbitrary-style one (default: magenta_arbitrary)",
    )
    parser.add_argument(
        "--style-image",
        action="append",
        metavar="PAINTING",
        help="any painting as the style (repeatable): Ghiasi et al.'s arbitrary-style network",
    )
    parser.add_argument("--content", nargs="+", required=True, metavar="IMG", help="content image(s), local or URL")
    parser.add_argument(
        "--style",
        action="extend",
        nargs="+",
        metavar="IMG|NAME",
        help="gatys: style image(s), repeatable, blended; --checkpoint: style name(s) or 'all' (default: all)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help=f"{OUTPUT_HELP}: an image file (one content, gatys) or a directory",
    )
    add_common_args(
        parser,
        batch_size=4,
        image_size=0,
        image_size_zero="see --max-size",
        no_progress=True,
    )
    parser.add_argument(
        "--max-size",
        type=positive_int,
        metavar="N",
        help=f"long side of the output in pixels, aspect kept; instead of --image-size (default: {GATYS_MAX_SIZE} "
        "for gatys, the content's own size with --checkpoint). An image is refused past "
        f"{FEED_FORWARD_MAX_PIXELS} pixels with --checkpoint or --style-image, {GATYS_MAX_PIXELS} with gatys",
    )

    checkpoint = parser.add_argument_group("with --checkpoint or --style-image")
    checkpoint.add_argument(
        "--alpha",
        type=float,
        help="style strength 0..1 (default: 1): with --checkpoint it blends pixels with the original, with "
        "--style-image it moves the style embedding toward the photo's own (Ghiasi et al.)",
    )
    checkpoint.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"{PRECISION_HELP}; the same rule as pipelines.augment's, so a picture here is the job's row for the "
        "same photo, style and alpha (default: auto)",
    )

    gatys = parser.add_argument_group("gatys (defaults: models/style/gatys.py GatysConfig)")
    gatys.add_argument("--style-weights", metavar="W1,W2", help="blend weights of the style images (default: equal)")
    gatys.add_argument("--steps", type=int, help="optimiser iterations (default: 300)")
    gatys.add_argument("--optimizer", choices=["lbfgs", "adam"], help="(default: lbfgs)")
    gatys.add_argument("--lr", type=positive_float, help="step size (default: 1.0 for lbfgs, 0.02 for adam)")
    gatys.add_argument("--init", choices=["content", "noise"], help="starting image (default: content)")
    gatys.add_argument(
        "--preserve-color",
        action="store_const",
        const=True,
        help="transfer luminance only and keep the content's colours (Gatys et al. 2017)",
    )
    gatys.add_argument("--content-weight", type=float, help="(default: 1)")
    gatys.add_argument("--style-weight", type=float, help="(default: 1e6)")
    gatys.add_argument("--tv-weight", type=float, help="total-variation smoothing (default: 0)")
    gatys.add_argument("--content-layers", metavar="L1,L2", help="(default: relu4_2)")
    gatys.add_argument("--style-layers", metavar="L1,L2", help="(default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    gatys.add_argument(
        "--loss-network",
        metavar="imagenet|random|PATH",
        help="VGG weights: torchvision's ImageNet weights from the torch cache, random ones (only for tests), "
        "or a state_dict file (default: imagenet)",
    )
    gatys.add_argument("--loss-arch", choices=["vgg19", "vgg16"], help="loss network architecture (default: vgg19)")
    gatys.add_argument(
        "--pooling", choices=["max", "avg"], help="avg is smoother (Gatys et al. 2016, sec. 2) (default: max)"
    )
    return parser


GATYS_ONLY = [
    "style_weights",
    "steps",
    "optimizer",
    "lr",
    "init",
    "preserve_color",
    "content_weight",
    "style_weight",
    "tv_weight",
    "content_layers",
    "style_layers",
    "loss_network",
    "loss_arch",
    "pooling",
]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _run_mode(args)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise UsageError(
            f"out of memory ({type(exc).__name__}): lower --image-size or --max-size, or --batch-size "
            f"(now {args.batch_size})"
        ) from None


def _run_mode(args: argparse.Namespace) -> None:
    if args.image_size and args.max_size:
        raise UsageError("give --image-size (the short side) or --max-size (the long side), not both")
    if args.style_image:
        given = [name for name in GATYS_ONLY if getattr(args, name) is not None]
        if args.method or args.style or given:
            flag = "--method" if args.method else "--style" if args.style else f"--{given[0].replace('_', '-')}"
            raise UsageError(f"{flag} does nothing with --style-image (the painting is the style)")
        stylize_with_paintings(args)
    elif args.checkpoint:
        if args.method:
            raise UsageError("--method gatys and --checkpoint are two different modes: pass one of them")
        given = [name for name in GATYS_ONLY if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is a gatys option; it does nothing with --checkpoint")
        stylize_with_checkpoint(args)
    else:
        for flag in ("alpha", "precision"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} applies to --checkpoint and --style-image stylisation only")
        stylize_with_gatys(args)


def stylize_with_gatys(args: argparse.Namespace) -> None:
    from models.style.gatys import GatysConfig, style_transfer
    from models.style.vgg import build_loss_network

    if not args.style:
        raise UsageError("gatys needs at least one --style image")
    given = {
        "steps": args.steps,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "init": args.init,
        "preserve_color": args.preserve_color,
        "content_weight": args.content_weight,
        "style_weight": args.style_weight,
        "tv_weight": args.tv_weight,
        "content_layers": _names(args.content_layers),
        "style_layers": _names(args.style_layers),
    }
    config = GatysConfig(seed=args.seed, **{key: value for key, value in given.items() if value is not None})
    style_weights = _style_weights(args.style_weights, len(args.style))
    style_label = "+".join(_stem(path) for path in args.style)
    targets = _output_paths(args.output, args.content, style_label)

    _check_image_size(args, GATYS_MAX_PIXELS, "gatys")
    contents = [_sized(path, args, GATYS_MAX_PIXELS, GATYS_MAX_SIZE) for path in args.content]
    styles = [pil_to_tensor(_sized(path, args, GATYS_MAX_PIXELS, GATYS_MAX_SIZE)) for path in args.style]
    device = resolve_device(args.device)
    seed_everything(args.seed)
    network = build_loss_network(
        arch=args.loss_arch or "vgg19",
        weights=args.loss_network or "imagenet",
        layers=(*config.content_layers, *config.style_layers),
        pooling=args.pooling or "max",
        seed=args.seed,
        device=device,
    )

    # Images of one size optimise together as a batch; different sizes cannot share a tensor.
    by_size = defaultdict(list)
    for index, image in enumerate(contents):
        by_size[image.size].append(index)
    batches = [
        group[i : i + args.batch_size] for group in by_size.values() for i in range(0, len(group), args.batch_size)
    ]
    for number, batch in enumerate(batches, start=1):
        content = torch.stack([pil_to_tensor(contents[i]) for i in batch]).to(device)
        width, height = contents[batch[0]].size
        description = f"gatys {number}/{len(batches)} ({width}x{height})"
        with tqdm(total=config.steps, desc=description, file=sys.stderr, disable=args.no_progress) as bar:

            def progress(step, losses, bar=bar):
                bar.update(1)
                bar.set_postfix({name: f"{value:.3g}" for name, value in losses.mean().items()}, refresh=False)

            result = style_transfer(network, content, styles, style_weights, config, progress)
        for row, index in enumerate(batch):
            _write(targets[index], tensor_to_pil(result.images[row]))
            losses = "  ".join(f"{name} {value:.4g}" for name, value in result.final.image(row).items())
            print(f"{targets[index]}: {losses}")


def _feed_forward_checks(args: argparse.Namespace, mode: str) -> float:
    """What the two fast modes check alike; returns alpha."""
    alpha = 1.0 if args.alpha is None else args.alpha
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    _check_image_size(args, FEED_FORWARD_MAX_PIXELS, mode)
    if is_image_path(args.output):
        raise UsageError(f"--output must be a directory with {mode}, got {args.output}")
    _check_unique_stems(args.content)
    return alpha


def stylize_with_checkpoint(args: argparse.Namespace) -> None:
    """Every requested style of the checkpoint on every content image, planned as the job plans ``--styles all``
    and run by the job's runner: each picture is the job's row for that photo, style and alpha."""
    from models.style.policy import StylePolicy, plan_outputs
    from models.style.runner import load_runner

    alpha = _feed_forward_checks(args, "--checkpoint")
    contents = [_sized(path, args, FEED_FORWARD_MAX_PIXELS) for path in args.content]
    runner, info = load_runner(
        args.checkpoint, device=args.device, precision=args.precision or "auto", batch_size=args.batch_size
    )
    requested = args.style or ["all"]
    names = info.style_names if "all" in requested else list(dict.fromkeys(requested))
    every_style = plan_outputs(StylePolicy("all"), (alpha, alpha), info.style_names, args.seed)
    plans = [every_style[info.style_index(name)] for name in names]  # an unknown name fails, listing the known ones
    _stylize_contents(args, runner, contents, plans, [plan.style for plan in plans])
    print(f"wrote {len(contents) * len(plans)} image(s) to {args.output} ({info.digest})")


def stylize_with_paintings(args: argparse.Namespace) -> None:
    """Every painting on every content image, planned as the job plans ``--styles all`` over ``--style-images``
    (alpha moves each painting's embedding toward the photo's own) and run by the job's runner."""
    from models.style.policy import PaintingSet, StylePolicy, plan_painting_outputs
    from models.style.runner import load_runner
    from transforms.images import pil_to_uint8

    alpha = _feed_forward_checks(args, "--style-image")
    _check_unique_stems(args.style_image)
    runner, info = load_runner(
        args.checkpoint or "magenta_arbitrary",
        arbitrary=True,
        device=args.device,
        precision=args.precision or "auto",
        batch_size=args.batch_size,
    )
    contents = [_sized(path, args, FEED_FORWARD_MAX_PIXELS) for path in args.content]
    embeddings = runner.embed([pil_to_uint8(load_image(path)) for path in args.style_image])
    paintings = PaintingSet.fit([(_stem(path), e) for path, e in zip(args.style_image, embeddings, strict=True)])
    plans = plan_painting_outputs(StylePolicy("all"), (alpha, alpha), paintings, args.seed)
    _stylize_contents(args, runner, contents, plans, [plan.style_ids[0] for plan in plans])
    print(f"wrote {len(contents) * len(plans)} image(s) to {args.output} ({info.digest})")


def _stylize_contents(args: argparse.Namespace, runner, contents: list, plans: list, labels: list[str]) -> None:
    """Write ``<content-stem>__<label>.png`` for every content image and plan, ``--batch-size`` plans at a time.
    Every output path is built (and checked to stay inside ``--output``) before the first image is written."""
    import numpy as np
    from PIL import Image

    from transforms.images import pil_to_uint8

    targets = {(path, label): _target(args.output, path, label) for path in args.content for label in labels}
    total = len(contents) * len(plans)
    with tqdm(total=total, desc="stylize", unit="image", file=sys.stderr, disable=args.no_progress) as bar:
        for path, image in zip(args.content, contents, strict=True):
            pixels = pil_to_uint8(image)
            for start in range(0, len(plans), args.batch_size):
                chunk = plans[start : start + args.batch_size]
                # one content image for the whole chunk: its own embedding (alpha < 1 on paintings) is computed once
                outputs, _ = runner.stylize_plans(np.repeat(pixels[None], len(chunk), 0), chunk, [path] * len(chunk))
                for label, output in zip(labels[start : start + len(chunk)], outputs, strict=True):
                    _write(targets[path, label], Image.fromarray(output, "RGB"))
                    bar.update(1)


def _check_image_size(args: argparse.Namespace, max_pixels: int, mode: str) -> None:
    """Refuse, before anything loads, an ``--image-size`` whose square alone is past what ``mode`` runs at."""
    if args.image_size and args.image_size**2 > max_pixels:
        raise UsageError(
            f"--image-size {args.image_size} makes every image at least {args.image_size}x{args.image_size} pixels; "
            f"{mode} stylises at most {max_pixels} pixels ({math.isqrt(max_pixels)}²) per image: lower --image-size"
        )


def _sized(path: str, args: argparse.Namespace, max_pixels: int, default_max_size: int | None = None):
    """The image at ``path`` as the model will see it. ``--image-size``: the short side; ``--max-size`` (or
    ``default_max_size``): the long side, aspect kept (the "max size" of neural-style tools); neither: the image as
    it is. More than ``max_pixels`` is refused, naming the file, before any pixel is resized."""
    image = load_image(path)
    max_size = args.max_size or default_max_size
    if args.image_size:
        size, resize, flag = short_side_size(*image.size, args.image_size), resize_short_side, "--image-size"
    elif max_size:
        size, resize, flag = long_side_size(*image.size, max_size), resize_long_side, "--max-size"
    else:
        size, resize, flag = image.size, None, "--max-size N"
    if size[0] * size[1] > max_pixels:
        raise UsageError(
            f"{path} would be stylised at {size[0]}x{size[1]}, above the {max_pixels} pixels "
            f"({math.isqrt(max_pixels)}²) this mode runs at: pass {'a smaller ' if resize else ''}{flag}"
        )
    return resize(image, args.image_size or max_size) if resize else image


def _output_paths(output: str, contents: list[str], style_label: str) -> list[str]:
    if is_image_path(output) and not _image_format(output):
        suffix = os.path.splitext(output)[1]
        raise UsageError(
            f"--output {output}: {suffix} images cannot be written here; name a .png or .jpg (or a folder)"
        )
    if _image_format(output):
        if len(contents) != 1:
            raise UsageError(
                f"--output {output} is one image but {len(contents)} contents were given: pass a directory"
            )
        return [output]
    _check_unique_stems(contents)
    return [_target(output, path, style_label) for path in contents]


def _check_unique_stems(paths: list[str]) -> None:
    seen = {}
    for path in paths:
        stem = _stem(path)
        if stem in seen:
            raise UsageError(f"{seen[stem]} and {path} would write the same output name {stem!r}; rename one")
        seen[stem] = path


def _style_weights(text: str | None, count: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--style-weights must be comma-separated numbers, got {text!r}") from None
    if len(weights) != count:
        raise UsageError(f"--style-weights has {len(weights)} value(s) for {count} --style image(s)")
    if min(weights) < 0 or sum(weights) <= 0:
        raise UsageError(f"--style-weights must be >= 0 and not all zero, got {text}")
    return weights


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def _image_format(path: str) -> str | None:
    return IMAGE_SUFFIXES.get(os.path.splitext(path)[1].lower())


def _target(output: str, content: str, style: str) -> str:
    """``OUTPUT/<content-stem>__<style>.png``. The style comes from a file (a checkpoint's style names, a
    painting's or style image's stem): the name must be one plain component and the path, symlinks resolved, must
    stay inside ``output`` (``models.common.files.path_under``), checked for every output before the first is
    written."""
    return path_under(output, f"{_stem(content)}__{style}.png", "output name")


def _write(path: str, image) -> None:
    write_atomically(path, encode_image(image, _image_format(path) or "png"))


if __name__ == "__main__":
    sys.exit(run_main(main))
