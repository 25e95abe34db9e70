"""Stylise a few images: Gatys optimisation, the styles of a trained stylizer, or any painting.

    python -m pipelines.stylize gatys --content IMG|DIR [...] --style IMG [IMG ...] --output OUT.png|DIR
    python -m pipelines.stylize styles --content IMG|DIR [...] --output DIR [--stylizer NAME|CKPT]
        [--style NAME [NAME ...]|all] [--alpha A] [--precision auto|fp32|bf16|fp16]
    python -m pipelines.stylize paintings --style-image PAINTING [...] --content IMG|DIR [...] --output DIR
        [--stylizer magenta_arbitrary|CKPT] [--alpha A] [--precision auto|fp32|bf16|fp16]

Outputs in a directory are named ``<content-stem>__<style>.png`` (gatys: the style stems joined by ``+``;
paintings: the painting's stem). A ``--content`` folder is read as ``pipelines.augment`` reads ``--input`` (every
image below it; its class sub-folder is the label) and each picture goes to ``DIR/<label>/``. The two fast modes
plan and run as ``pipelines.augment --styles all`` does (``models.style.runner.StylizerRunner``), so a picture
equals the job's row for the same photo, style and alpha (on CUDA, for the same ``--batch-size``: the forward size).

The mode flags of the release before (``--method gatys``, ``--checkpoint CKPT``, ``--style-image P`` without a
mode) still work, with a one-line notice on stderr.
"""

import argparse
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass

from models.common.errors import ImageRejected, UsageError
from models.common.files import path_under, write_atomically
from pipelines.cli import (
    OUTPUT_HELP,
    PRECISION_HELP,
    PRECISIONS,
    ArgumentParser,
    add_common_args,
    deprecated,
    positive_float,
    positive_int,
    run_main,
)
from transforms.images import (
    encode_image,
    load_image,
    long_side_size,
    resize_long_side,
    resize_short_side,
    short_side_size,
)

GATYS_MAX_SIZE = 256  # CPU-friendly default long side; Gatys et al. 2016 worked at 512 px (a GPU job)
# The most pixels one image may have as a model sees it, refused before anything loads. Peak memory per megapixel
# per image (1 thread, fp32): the Magenta network ~450 MB (inference), Gatys on VGG-19 ~3.6 GB (optimised with
# gradients): 16 MP and 4 MP are ~7 GB and ~15 GB, times the images of a batch.
FEED_FORWARD_MAX_PIXELS = 4096 * 4096
GATYS_MAX_PIXELS = 2048 * 2048
IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
MODES = ("gatys", "styles", "paintings")
DEFAULT_STYLIZER = "magenta26"
DEFAULT_ARBITRARY_STYLIZER = "magenta_arbitrary"
EXAMPLES = (
    "examples:\n"
    "  python -m pipelines.stylize gatys --content photo.jpg --style starry.jpg --output out.png\n"
    "  python -m pipelines.stylize styles --stylizer magenta26 --content a.jpg b.jpg --output out/ --style all\n"
    "  python -m pipelines.stylize paintings --style-image starry.jpg --content photos/ --output out/ --alpha 0.8"
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipelines.stylize",
        description="Stylise images by Gatys optimisation (slow, any style image), with the styles of a trained\n"
        "stylizer (fast) or with any painting as the style (fast, Ghiasi et al.'s arbitrary-style network).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE", title="modes")
    gatys = modes.add_parser(
        "gatys",
        help="Gatys et al.'s optimisation: any style image(s), slow",
        description="Optimise each content image toward the style image(s) (Gatys et al. 2016).",
    )
    _add_shared_args(gatys, f"{GATYS_MAX_SIZE}, gatys", GATYS_MAX_PIXELS)
    gatys.add_argument(
        "--style", action="extend", nargs="+", required=True, metavar="IMG", help="style image(s), blended"
    )
    options = gatys.add_argument_group("optimisation (defaults: models/style/gatys.py GatysConfig)")
    options.add_argument("--style-weights", metavar="W1,W2", help="blend weights of the style images (default: equal)")
    options.add_argument("--steps", type=int, help="optimiser iterations (default: 300)")
    options.add_argument("--optimizer", choices=["lbfgs", "adam"], help="(default: lbfgs)")
    options.add_argument("--lr", type=positive_float, help="step size (default: 1.0 for lbfgs, 0.02 for adam)")
    options.add_argument("--init", choices=["content", "noise"], help="starting image (default: content)")
    options.add_argument(
        "--preserve-color",
        action="store_const",
        const=True,
        help="transfer luminance only and keep the content's colours (Gatys et al. 2017)",
    )
    options.add_argument("--content-weight", type=float, help="(default: 1)")
    options.add_argument("--style-weight", type=float, help="(default: 1e6)")
    options.add_argument("--tv-weight", type=float, help="total-variation smoothing (default: 0)")
    options.add_argument("--content-layers", metavar="L1,L2", help="(default: relu4_2)")
    options.add_argument("--style-layers", metavar="L1,L2", help="(default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    options.add_argument(
        "--loss-network",
        default="imagenet",
        metavar="imagenet|random|PATH",
        help="VGG weights: torchvision's ImageNet weights from the torch cache, random ones (only for tests), "
        "or a state_dict file",
    )
    options.add_argument("--loss-arch", default="vgg19", choices=["vgg19", "vgg16"], help="loss network architecture")
    options.add_argument(
        "--pooling", default="max", choices=["max", "avg"], help="avg is smoother (Gatys et al. 2016, sec. 2)"
    )

    styles = modes.add_parser(
        "styles",
        help="the named styles of a trained stylizer or a built-in (magenta26), fast",
        description="Stylise every content image with the stylizer's styles, planned as pipelines.augment "
        "--styles all plans them.",
    )
    _add_shared_args(styles, "the content's own size", FEED_FORWARD_MAX_PIXELS)
    styles.add_argument(
        "--stylizer",
        default=DEFAULT_STYLIZER,
        metavar="NAME|CKPT",
        help="a stylizer checkpoint (path or URL) or a built-in name",
    )
    styles.add_argument(
        "--style", action="extend", nargs="+", metavar="NAME", help="style name(s), or all (default: all)"
    )
    _add_fast_args(styles, "blends pixels with the original")

    paintings = modes.add_parser(
        "paintings",
        help="any painting as the style: Ghiasi et al.'s arbitrary-style network, fast",
        description="Stylise every content image with every painting, planned as pipelines.augment --styles all "
        "--style-images plans them.",
    )
    _add_shared_args(paintings, "the content's own size", FEED_FORWARD_MAX_PIXELS)
    paintings.add_argument(
        "--style-image", action="extend", nargs="+", required=True, metavar="PAINTING", help="painting(s)"
    )
    paintings.add_argument(
        "--stylizer",
        default=DEFAULT_ARBITRARY_STYLIZER,
        metavar="NAME|CKPT",
        help="an arbitrary-style checkpoint or built-in name",
    )
    _add_fast_args(paintings, "moves the style embedding toward the photo's own (Ghiasi et al.)")
    return parser


def _add_shared_args(parser: ArgumentParser, max_size_default: str, max_pixels: int) -> None:
    parser.add_argument(
        "--content",
        nargs="+",
        required=True,
        metavar="IMG|DIR",
        help="content image(s), local or URL, or a folder read as pipelines.augment reads --input (its class "
        "sub-folders are labels: pictures go to OUT/<label>/)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help=f"{OUTPUT_HELP}: a directory (gatys with one content image: an image file too)",
    )
    add_common_args(parser, batch_size=4, image_size=0, image_size_zero="see --max-size", no_progress=True)
    parser.add_argument(
        "--max-size",
        type=positive_int,
        metavar="N",
        help=f"long side of the output in pixels, aspect kept; instead of --image-size (default: {max_size_default}). "
        f"An image past {max_pixels} pixels is refused",
    )


def _add_fast_args(parser: ArgumentParser, alpha_does: str) -> None:
    parser.add_argument("--alpha", type=float, default=1.0, help=f"style strength 0..1: {alpha_does}")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help=f"{PRECISION_HELP}; the same rule as pipelines.augment's, so a picture here is the job's row for the "
        "same photo, style and alpha",
    )


def upgraded_argv(argv: list[str]) -> list[str]:
    """``argv`` with its mode first: the flags that chose a mode in the release before (``--method gatys``,
    ``--checkpoint CKPT``, ``--style-image P``, or none of them: gatys) become the subcommand, with a one-line
    notice; an ``argv`` that names its mode (or asks for ``--help``) is returned as it is."""
    if not argv or argv[0] in MODES or argv[0] in ("-h", "--help"):
        return argv
    legacy = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    legacy.add_argument("--method", choices=["gatys"])
    legacy.add_argument("--checkpoint")
    legacy.add_argument("--style-image", action="append")
    try:
        old, rest = legacy.parse_known_args(argv)
    except SystemExit:  # e.g. --method other: let the new parser say what is wrong
        return argv
    if old.style_image:
        if old.method:
            raise UsageError("--method does nothing with --style-image (the painting is the style)")
        stylizer = ["--stylizer", old.checkpoint] if old.checkpoint else []
        paintings = [arg for path in old.style_image for arg in ("--style-image", path)]
        deprecated("stylize --style-image P", "stylize paintings --style-image P")
        return ["paintings", *paintings, *stylizer, *rest]
    if old.checkpoint:
        if old.method:
            raise UsageError("--method gatys and --checkpoint are two different modes: pass one of them")
        deprecated("stylize --checkpoint CKPT", "stylize styles --stylizer CKPT")
        return ["styles", "--stylizer", old.checkpoint, *rest]
    deprecated("stylize --method gatys (or no mode)", "stylize gatys")
    return ["gatys", *rest]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(upgraded_argv(list(sys.argv[1:] if argv is None else argv)))
    from models.style.runner import is_out_of_memory

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
    {"gatys": stylize_with_gatys, "styles": stylize_with_checkpoint, "paintings": stylize_with_paintings}[args.mode](
        args
    )


@dataclass(frozen=True)
class Content:
    """One content image: ``name`` (its path, or its id under a ``--content`` folder), ``label`` (a folder input's
    class, else ``None``) and the image as the model will see it."""

    name: str
    label: str | None
    image: object  # PIL.Image.Image


def load_contents(args: argparse.Namespace, max_pixels: int, default_max_size: int | None = None) -> list[Content]:
    """Every ``--content`` image, sized: a file as it is named, a folder as ``pipelines.augment`` reads ``--input``
    (``transforms.sources``: every image below it, the ImageFolder label rule; decoded by the same
    ``decode_image``). An image of a folder that cannot be decoded is skipped with a warning naming it and why; a
    named file that cannot is an error."""
    from transforms.images import decode_image
    from transforms.sources import iter_records, resolve_input

    contents = []
    for path in args.content:
        if not (os.path.isdir(path) or path.endswith("/")):
            contents.append(Content(path, None, _sized(path, load_image(path), args, max_pixels, default_max_size)))
            continue
        found = []
        for record in iter_records(resolve_input(path, "--content")):
            name = f"{path.rstrip('/')}/{record.source_id}"
            try:
                image = decode_image(record.data)
            except ImageRejected as exc:
                print(f"warning: skipping {name}: {exc}", file=sys.stderr)
                continue
            found.append(Content(name, record.label, _sized(name, image, args, max_pixels, default_max_size)))
        if not found:
            raise UsageError(f"--content {path}: no image in it can be decoded")
        contents += found
    return contents


def stylize_with_gatys(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from models.common.device import resolve_device, seed_everything
    from models.common.pixels import tensor_to_pil
    from models.style.gatys import GatysConfig, style_transfer
    from models.style.vgg import build_loss_network
    from transforms.images import pil_to_tensor

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
    _check_output_name(args.output)
    _check_image_size(args, GATYS_MAX_PIXELS, "gatys")
    contents = load_contents(args, GATYS_MAX_PIXELS, GATYS_MAX_SIZE)
    targets = _output_paths(args.output, contents, style_label)
    styles = [
        pil_to_tensor(_sized(path, load_image(path), args, GATYS_MAX_PIXELS, GATYS_MAX_SIZE)) for path in args.style
    ]
    device = resolve_device(args.device)
    seed_everything(args.seed)
    network = build_loss_network(
        arch=args.loss_arch,
        weights=args.loss_network,
        layers=(*config.content_layers, *config.style_layers),
        pooling=args.pooling,
        seed=args.seed,
        device=device,
    )

    # Images of one size optimise together as a batch; different sizes cannot share a tensor.
    by_size = defaultdict(list)
    for index, content in enumerate(contents):
        by_size[content.image.size].append(index)
    batches = [
        group[i : i + args.batch_size] for group in by_size.values() for i in range(0, len(group), args.batch_size)
    ]
    for number, batch in enumerate(batches, start=1):
        content = torch.stack([pil_to_tensor(contents[i].image) for i in batch]).to(device)
        width, height = contents[batch[0]].image.size
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


def _feed_forward_checks(args: argparse.Namespace) -> None:
    """What the two fast modes check alike, before anything loads."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    from transforms.sources import is_image_path

    _check_image_size(args, FEED_FORWARD_MAX_PIXELS, f"stylize {args.mode}")
    if is_image_path(args.output):
        raise UsageError(f"--output must be a directory with stylize {args.mode}, got {args.output}")


def stylize_with_checkpoint(args: argparse.Namespace) -> None:
    """Every requested style of the stylizer on every content image, planned as the job plans ``--styles all``
    and run by the job's runner: each picture is the job's row for that photo, style and alpha."""
    from models.style.policy import StylePolicy, plan_outputs
    from models.style.runner import load_runner

    _feed_forward_checks(args)
    contents = load_contents(args, FEED_FORWARD_MAX_PIXELS)
    runner, info = load_runner(args.stylizer, device=args.device, precision=args.precision, batch_size=args.batch_size)
    requested = args.style or ["all"]
    names = info.style_names if "all" in requested else list(dict.fromkeys(requested))
    alpha = args.alpha
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

    _feed_forward_checks(args)
    _check_unique_stems(args.style_image)
    contents = load_contents(args, FEED_FORWARD_MAX_PIXELS)
    runner, info = load_runner(
        args.stylizer, arbitrary=True, device=args.device, precision=args.precision, batch_size=args.batch_size
    )
    embeddings = runner.embed([pil_to_uint8(load_image(path)) for path in args.style_image])
    paintings = PaintingSet.fit([(_stem(path), e) for path, e in zip(args.style_image, embeddings, strict=True)])
    alpha = args.alpha
    plans = plan_painting_outputs(StylePolicy("all"), (alpha, alpha), paintings, args.seed)
    _stylize_contents(args, runner, contents, plans, [plan.style_ids[0] for plan in plans])
    print(f"wrote {len(contents) * len(plans)} image(s) to {args.output} ({info.digest})")


def _stylize_contents(args: argparse.Namespace, runner, contents: list[Content], plans: list, styles: list[str]):
    """Write ``[<label>/]<content-stem>__<style>.png`` for every content image and plan, ``--batch-size`` plans at a
    time. Every output path is built (and checked to stay inside ``--output``) before the first image is written."""
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from transforms.images import pil_to_uint8

    _check_unique_stems(contents)
    targets = {(c.name, style): _target(args.output, c, style) for c in contents for style in styles}
    total = len(contents) * len(plans)
    with tqdm(total=total, desc="stylize", unit="image", file=sys.stderr, disable=args.no_progress) as bar:
        for content in contents:
            pixels = pil_to_uint8(content.image)
            for start in range(0, len(plans), args.batch_size):
                chunk = plans[start : start + args.batch_size]
                # one content image for the whole chunk: its own embedding (alpha < 1 on paintings) is computed once
                keys = [content.name] * len(chunk)
                outputs, _ = runner.stylize_plans(np.repeat(pixels[None], len(chunk), 0), chunk, keys)
                for style, output in zip(styles[start : start + len(chunk)], outputs, strict=True):
                    _write(targets[content.name, style], Image.fromarray(output, "RGB"))
                    bar.update(1)


def _check_image_size(args: argparse.Namespace, max_pixels: int, mode: str) -> None:
    """Refuse, before anything loads, an ``--image-size`` whose square alone is past what ``mode`` runs at."""
    if args.image_size and args.image_size**2 > max_pixels:
        raise UsageError(
            f"--image-size {args.image_size} makes every image at least {args.image_size}x{args.image_size} pixels; "
            f"{mode} stylises at most {max_pixels} pixels ({math.isqrt(max_pixels)}²) per image: lower --image-size"
        )


def _sized(name: str, image, args: argparse.Namespace, max_pixels: int, default_max_size: int | None = None):
    """``image`` (read from ``name``) as the model will see it. ``--image-size``: the short side; ``--max-size``
    (or ``default_max_size``): the long side, aspect kept (the "max size" of neural-style tools); neither: the image
    as it is. More than ``max_pixels`` is refused, naming the file, before any pixel is resized."""
    max_size = args.max_size or default_max_size
    if args.image_size:
        size, resize, flag = short_side_size(*image.size, args.image_size), resize_short_side, "--image-size"
    elif max_size:
        size, resize, flag = long_side_size(*image.size, max_size), resize_long_side, "--max-size"
    else:
        size, resize, flag = image.size, None, "--max-size N"
    if size[0] * size[1] > max_pixels:
        raise UsageError(
            f"{name} would be stylised at {size[0]}x{size[1]}, above the {max_pixels} pixels "
            f"({math.isqrt(max_pixels)}²) this mode runs at: pass {'a smaller ' if resize else ''}{flag}"
        )
    return resize(image, args.image_size or max_size) if resize else image


def _check_output_name(output: str) -> None:
    from transforms.sources import is_image_path

    if is_image_path(output) and not _image_format(output):
        suffix = os.path.splitext(output)[1]
        raise UsageError(
            f"--output {output}: {suffix} images cannot be written here; name a .png or .jpg (or a folder)"
        )


def _output_paths(output: str, contents: list[Content], style_label: str) -> list[str]:
    if _image_format(output):
        if len(contents) != 1:
            raise UsageError(
                f"--output {output} is one image but {len(contents)} contents were given: pass a directory"
            )
        return [output]
    _check_unique_stems(contents)
    return [_target(output, content, style_label) for content in contents]


def _check_unique_stems(contents: list) -> None:
    """Two contents (or paintings: paths) that would write the same output name are refused, naming both."""
    seen = {}
    for content in contents:
        name, label = (content.name, content.label) if isinstance(content, Content) else (content, None)
        key = (label, _stem(name))
        if key in seen:
            raise UsageError(f"{seen[key]} and {name} would write the same output name {key[1]!r}; rename one")
        seen[key] = name


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


def _target(output: str, content: Content, style: str) -> str:
    """``OUTPUT/[<label>/]<content-stem>__<style>.png``. The style comes from a file (a checkpoint's style names, a
    painting's or style image's stem) and the label from a folder or a Parquet column: each must be one plain
    component and the path, symlinks resolved, must stay inside ``output`` (``models.common.files.path_under``),
    checked for every output before the first is written."""
    folder = output if content.label is None else path_under(output, content.label, "label folder")
    return path_under(folder, f"{_stem(content.name)}__{style}.png", "output name")


def _write(path: str, image) -> None:
    write_atomically(path, encode_image(image, _image_format(path) or "png"))


if __name__ == "__main__":
    sys.exit(run_main(main))
