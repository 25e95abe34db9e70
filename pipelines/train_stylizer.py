"""Train a multi-style stylizer: content images + N style images → one checkpoint with N styles.

    python -m pipelines.train_stylizer train --content IN --style a.jpg --style b.jpg --output styles.safetensors \\
        [--init scratch|arbitrary] [--loss-network imagenet|random|PATH] [--steps N] [--image-size N] \\
        [--batch-size B] [--lr LR] [--content-weight W] [--style-weight W] [--tv-weight W] [--seed S] [--resume]
    python -m pipelines.train_stylizer add-styles --base NAME|CKPT --content IN --style c.jpg --output CKPT
    python -m pipelines.train_stylizer bake --style painting.jpg [--style ...] --output CKPT
    python -m pipelines.train_stylizer import-fns mosaic.pth [--style-name mosaic] --output mosaic.safetensors

Style names are the style files' stems. ``IN`` is a directory, a glob or Parquet with an ``image`` column
(``transforms.sources``). The loop itself is ``models.style.trainer``. The mode flags of the release before
(``--add-styles-to``, ``--init arbitrary --steps 0``, ``--import-fns``, none: train) still work, with a one-line
notice on stderr.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from models.common.errors import ImageRejected, InputNotFoundError, UsageError
from pipelines.cli import (
    OUTPUT_HELP,
    ArgumentParser,
    add_common_args,
    deprecated,
    positive_float,
    positive_int,
    run_main,
)

if TYPE_CHECKING:  # torch, numpy and the trainer load when a mode runs, not for --help
    import numpy as np
    import torch

    from models.style.stylizer import MultiStyleTransformer
    from transforms.sources import InputSpec, SourceRecord

# Records held for shuffling a lazily read input; the whole set when it is smaller (the usual case for styles'
# content sets of a few thousand images is a buffer of a few MB of encoded bytes per 100 images).
SHUFFLE_BUFFER = 512
PREVIEW_IMAGES = 4
MODES = ("train", "add-styles", "bake", "import-fns")
# models.style.trainer's defaults (TrainingConfig, CONTENT_LAYERS, STYLE_LAYERS), named here so that --help needs
# no torch; tests/pipelines/test_train_stylizer.py checks that they agree.
TRAINING_DEFAULTS = {
    "steps": 40000,
    "lr": 1e-3,
    "content_weight": 1e5,
    "style_weight": 1e10,
    "tv_weight": 0.0,
    "checkpoint_every": 1000,
    "content_layers": "relu2_2",
    "style_layers": "relu1_2,relu2_2,relu3_3,relu4_3",
}
SIDE_FILES = (
    "Writes CKPT plus CKPT-stem.samples.png (content x styles), .loss.png (loss curves) and .resume.pt (for "
    "--resume) next to it."
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipelines.train_stylizer",
        description="Train a feed-forward multi-style network (Johnson et al. 2016 with Dumoulin et al. 2017's "
        "conditional instance norm) on content images and N style images; add styles to a trained one; bake "
        "paintings into the arbitrary-style network; or import a pytorch/examples fast_neural_style .pth file.",
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE", title="modes")
    train = modes.add_parser(
        "train",
        help="train a new network on content images and N style images",
        description="Train a new network (or fine-tune the arbitrary-style one: --init arbitrary) on content "
        "images and N style images.",
        epilog=SIDE_FILES,
    )
    _add_training_args(train)
    train.add_argument(
        "--init",
        choices=["scratch", "arbitrary"],
        default="scratch",
        help="scratch: a new network; arbitrary: start from Ghiasi et al.'s arbitrary-style network with each "
        "--style image's embedding baked in (as the bake mode does), then train every parameter",
    )
    train.add_argument(
        "--width",
        metavar="W",
        type=positive_float,
        default=1.0,
        help="channel multiplier of a new network; 0.5 is ~4x fewer FLOPs",
    )

    add = modes.add_parser(
        "add-styles",
        help="add styles to a trained checkpoint or built-in, training only their new parameters",
        description="Add the --style images to a trained checkpoint or built-in stylizer (magenta26), training "
        "only their new CIN parameters: the old styles stay bit-exact.",
        epilog=SIDE_FILES,
    )
    add.add_argument(
        "--base", metavar="NAME|CKPT", required=True, help="the trained checkpoint or built-in name to add to"
    )
    _add_training_args(add)

    bake = modes.add_parser(
        "bake",
        help="bake paintings into the arbitrary-style network as fixed styles: offline, in seconds, no training",
        description="Each --style painting's embedding (Ghiasi et al.'s style predictor) becomes a fixed style of "
        "an ordinary N-style checkpoint: no content images, no loss network, no training.",
    )
    bake.add_argument("--style", metavar="PAINTING", action="append", required=True, help="a painting (repeatable)")
    bake.add_argument("--output", metavar="CKPT", required=True, help=f"{OUTPUT_HELP}: the checkpoint (.safetensors)")
    add_common_args(bake, seed=False)

    fns = modes.add_parser(
        "import-fns",
        help="import a pytorch/examples fast_neural_style .pth as a one-style checkpoint",
        description="Import a pytorch/examples fast_neural_style state_dict as a one-style checkpoint (no training).",
    )
    fns.add_argument("fns_file", metavar="FILE.pth", help="the fast_neural_style state_dict")
    fns.add_argument("--style-name", metavar="NAME", help="the style name (default: the file's stem)")
    fns.add_argument("--output", metavar="CKPT", required=True, help=f"{OUTPUT_HELP}: the checkpoint (.safetensors)")
    return parser


def _add_training_args(parser: ArgumentParser) -> None:
    """The flags of the two modes that train: inputs, output, loss and training settings."""
    io_group = parser.add_argument_group("inputs and output")
    io_group.add_argument(
        "--content", metavar="IN", required=True, help="content images: a directory, a glob or Parquet files"
    )
    io_group.add_argument(
        "--style", metavar="IMG", action="append", required=True, help="a style image (repeat for N styles)"
    )
    io_group.add_argument(
        "--output", metavar="CKPT", required=True, help=f"{OUTPUT_HELP}: the checkpoint (.safetensors)"
    )
    io_group.add_argument(
        "--resume", action="store_true", help="continue from CKPT's .resume.pt up to --steps (same flags)"
    )

    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--loss-network",
        default="imagenet",
        metavar="imagenet|random|PATH",
        help="VGG weights: torchvision's ImageNet weights (when cached), 'random' (by seed) or a state_dict file",
    )
    loss.add_argument("--loss-arch", default="vgg16", choices=["vgg16", "vgg19"], help="loss network architecture")
    loss.add_argument(
        "--content-layers", metavar="LAYERS", default=TRAINING_DEFAULTS["content_layers"], help="comma-separated"
    )
    loss.add_argument(
        "--style-layers", metavar="LAYERS", default=TRAINING_DEFAULTS["style_layers"], help="comma-separated"
    )
    for name in ("content_weight", "style_weight", "tv_weight"):
        flag = f"--{name.replace('_', '-')}"
        loss.add_argument(flag, metavar="W", type=float, default=TRAINING_DEFAULTS[name], help="(default: %(default)g)")

    train = parser.add_argument_group("training")
    train.add_argument(
        "--steps", metavar="N", type=positive_int, default=TRAINING_DEFAULTS["steps"], help="total steps"
    )
    train.add_argument(
        "--lr", metavar="LR", type=positive_float, default=TRAINING_DEFAULTS["lr"], help="Adam learning rate"
    )
    train.add_argument(
        "--style-size", metavar="N", type=positive_int, help="short side of the style images (default: --image-size)"
    )
    train.add_argument(
        "--style-order",
        default="cycle",
        choices=["cycle", "random"],
        help="which style each image of a batch trains",
    )
    train.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=positive_int,
        default=TRAINING_DEFAULTS["checkpoint_every"],
        help="steps between checkpoints",
    )
    train.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="forward passes under bf16 autocast (about 2x faster on CPUs with AVX-512 BF16)",
    )
    add_common_args(parser, batch_size=4, image_size=256, no_progress=True)


def upgraded_argv(argv: list[str]) -> list[str]:
    """``argv`` with its mode first: the flags that chose a mode in the release before become the subcommand, with
    a one-line notice (``--import-fns F`` → ``import-fns F``; ``--add-styles-to X`` → ``add-styles --base X``;
    ``--init arbitrary --steps 0`` → ``bake``; none of them → ``train``). An ``argv`` that names its mode (or asks
    for ``--help``) is returned as it is."""
    if not argv or argv[0] in MODES or argv[0] in ("-h", "--help"):
        return argv
    legacy = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    legacy.add_argument("--import-fns")
    legacy.add_argument("--add-styles-to")
    legacy.add_argument("--init")
    legacy.add_argument("--steps")
    try:
        old, rest = legacy.parse_known_args(argv)
    except SystemExit:  # a mode flag without its value: let the new parser say what is wrong
        return argv
    kept = [*(["--init", old.init] if old.init else []), *(["--steps", old.steps] if old.steps else [])]
    if old.import_fns:
        if old.add_styles_to or old.init or old.steps or any(arg.startswith(("--content", "--style=")) for arg in rest):
            raise UsageError("--import-fns takes only --style-name and --output")
        deprecated("train_stylizer --import-fns FILE", "train_stylizer import-fns FILE")
        return ["import-fns", old.import_fns, *rest]
    if old.add_styles_to:
        if old.init == "arbitrary":
            raise UsageError(
                "--init arbitrary starts from the arbitrary-style network; --add-styles-to from a checkpoint"
            )
        deprecated("train_stylizer --add-styles-to X", "train_stylizer add-styles --base X")
        return ["add-styles", "--base", old.add_styles_to, *(["--steps", old.steps] if old.steps else []), *rest]
    if old.init == "arbitrary" and old.steps is not None and old.steps.strip() == "0":
        deprecated("train_stylizer --init arbitrary --steps 0", "train_stylizer bake")
        return ["bake", *rest]
    deprecated("train_stylizer without a mode", "train_stylizer train")
    return ["train", *kept, *rest]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(upgraded_argv(list(sys.argv[1:] if argv is None else argv)))
    {"train": train, "add-styles": train, "bake": bake, "import-fns": import_fns}[args.mode](args)


def import_fns(args: argparse.Namespace) -> None:
    from models.style.fns_import import import_fast_neural_style

    name = args.style_name or _stem(args.fns_file)
    _check_unique([name])
    digest = import_fast_neural_style(args.fns_file, args.output, name)
    print(f"wrote {args.output} ({digest}): style {name!r} from {args.fns_file}")


def bake(args: argparse.Namespace) -> None:
    """Each painting's embedding as a fixed style of the arbitrary-style network: no training."""
    from models.style.checkpoint import save_stylizer

    names = [_stem(path) for path in args.style]
    _check_unique(names)  # before any painting is embedded
    baked, source = bake_paintings(args.style, args.device)
    training = {"init": "arbitrary", "steps": 0, "style_files": [posixpath.basename(p) for p in args.style]}
    digest = save_stylizer(args.output, baked, names, training, source=source)
    print(f"wrote {args.output} ({digest}): {len(names)} painting styles baked in, no training")


def train(args: argparse.Namespace) -> None:
    """Train a new network (``train``: from scratch, or from the baked arbitrary-style one) or new styles of a
    trained one (``add-styles``), writing the checkpoint and its side files."""
    import dataclasses

    from models.common.device import resolve_device, seed_everything
    from models.style.checkpoint import load_stylizer
    from models.style.registry import CONFIGS, resolve
    from models.style.stylizer import MultiStyleTransformer
    from models.style.trainer import StylizerTrainer, TrainingConfig, artefact_paths, load_resumable
    from models.style.vgg import build_loss_network
    from transforms.images import pil_to_tensor, resize_short_side
    from transforms.sources import resolve_input

    init = getattr(args, "init", "scratch")
    new_names = [_stem(path) for path in args.style]
    _check_unique(new_names)  # before any painting is embedded or a step trained
    if init == "arbitrary":
        baked, source = bake_paintings(args.style, args.device)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    config = TrainingConfig(
        steps=args.steps,
        lr=args.lr,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        content_layers=_layers(args.content_layers),
        style_layers=_layers(args.style_layers),
        style_order=args.style_order,
        checkpoint_every=args.checkpoint_every,
        precision=args.precision,
        seed=args.seed,
    )
    style_size = args.style_size or args.image_size
    metadata = {
        "content": args.content,
        "style_files": [posixpath.basename(path) for path in args.style],
        "init": init,
        "loss_network": args.loss_network,
        "loss_arch": args.loss_arch,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "style_size": style_size,
    }
    base, base_names = None, []
    if args.mode == "add-styles":  # a bad document (style names included) is refused here, before any training
        base, info = load_stylizer(resolve(args.base))
        base_names = info.style_names
        metadata |= {"base_checkpoint": info.digest, "base_training": info.training}
        if info.source:  # imported weights keep their provenance and licence through fine-tuning
            metadata["base_source"] = info.source
    elif init == "arbitrary":
        metadata["base_source"] = source
    names = base_names + new_names
    _check_unique(names)
    resume_path = artefact_paths(args.output)["resume"]
    # A changed setting is refused before the loss network is built or an image read.
    resume_state = load_resumable(resume_path, config, metadata) if args.resume else None

    # The loss network first: a missing ImageNet VGG should fail before any image is read.
    loss_network = build_loss_network(
        args.loss_arch,
        args.loss_network,
        layers=config.content_layers + config.style_layers,
        seed=args.seed,
        device=device,
    )
    style_images = [pil_to_tensor(resize_short_side(_load_style(path), style_size)) for path in args.style]
    spec = resolve_input(args.content)
    preview = preview_images(spec, args.image_size)

    if base is not None:
        model, first_trainable = base.with_extra_styles(len(new_names)), base.num_styles
    elif init == "arbitrary":  # fine-tune the baked network: every parameter trains
        model, first_trainable = baked, 0
    else:
        model = MultiStyleTransformer(dataclasses.replace(CONFIGS["johnson"], num_styles=len(names), width=args.width))
        first_trainable = 0

    trainer = StylizerTrainer(
        model,
        loss_network,
        style_images,
        names,
        config,
        first_trainable_style=first_trainable,
        preview_images=preview,
        metadata=metadata,
    )
    if resume_state is not None:
        trainer.resume_from(resume_state, resume_path)
    batches = content_batches(spec, args.image_size, args.batch_size, args.seed, skip_batches=trainer.step)
    result = trainer.train(batches, args.output, progress=not args.no_progress)
    paths = artefact_paths(args.output)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    print(f"wrote {args.output} ({result.digest}) after {result.step} steps; last losses: {losses}")
    print(f"samples: {paths['samples']}  loss curve: {paths['loss_curve']}  resume state: {paths['resume']}")


def bake_paintings(paths: list[str], device: str) -> tuple[MultiStyleTransformer, dict]:
    """The arbitrary-style network with each painting's style embedding baked in as a fixed style."""
    import torch

    from models.common.device import resolve_device
    from models.style.checkpoint import load_arbitrary
    from models.style.registry import resolve
    from models.style.runner import StyleEmbedder
    from transforms.images import pil_to_uint8

    predictor, transformer, info = load_arbitrary(resolve("magenta_arbitrary"))
    embeddings = StyleEmbedder(predictor, resolve_device(device))([pil_to_uint8(_load_style(p)) for p in paths])
    return transformer.bake(torch.from_numpy(embeddings)), info.source


def content_batches(
    spec: InputSpec, image_size: int, batch_size: int, seed: int, *, skip_batches: int = 0
) -> Iterator[torch.Tensor]:
    """Endless ``(B, 3, S, S)`` batches in [0, 1] of random ``S × S`` crops (short side resized to ``S``).

    The order and crops are drawn from ``seed`` alone, so ``skip_batches`` replays the first batches without
    decoding them: a resumed run sees the batches an uninterrupted run would have (exactly, when every content
    image decodes; unreadable ones are skipped with a warning).
    """
    import numpy as np
    import torch

    from transforms.images import decode_image, pil_to_tensor, resize_short_side

    rng = np.random.default_rng(seed)
    records = shuffled_records(spec, rng)
    batch: list[torch.Tensor] = []
    skipped = decoded = 0
    rejected: set[str] = set()
    while True:
        record = next(records)
        crop_at = rng.random(2)
        if skipped < skip_batches * batch_size:
            skipped += 1
            continue
        try:
            image = decode_image(record.data, draft_side=image_size)
        except ImageRejected as exc:
            if record.source_id not in rejected:
                print(f"warning: skipping content image {record.source_id}: {exc}", file=sys.stderr)
            rejected.add(record.source_id)
            if not decoded and len(rejected) >= 100:
                raise UsageError(f"the first 100 content images under {spec.root} cannot be decoded") from None
            continue
        decoded += 1
        batch.append(pil_to_tensor(random_crop(resize_short_side(image, image_size), image_size, crop_at)))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []


def shuffled_records(spec: InputSpec, rng: np.random.Generator) -> Iterator[SourceRecord]:
    """Records forever, epoch after epoch, shuffled through a buffer of ``SHUFFLE_BUFFER`` (lazy input)."""
    from transforms.sources import iter_records

    while True:
        buffer: list[SourceRecord] = []
        count = 0
        for record in iter_records(spec):
            count += 1
            buffer.append(record)
            if len(buffer) >= SHUFFLE_BUFFER:
                yield buffer.pop(int(rng.integers(len(buffer))))
        order = rng.permutation(len(buffer))
        yield from (buffer[i] for i in order)
        if count == 0:
            raise InputNotFoundError(f"no content images in {spec.root}")


def random_crop(image, size: int, at: np.ndarray):
    """The ``size × size`` crop at relative offset ``at`` (two floats in [0, 1)) of an image whose short side is
    ``size``."""
    left = int(at[0] * (image.width - size + 1))
    top = int(at[1] * (image.height - size + 1))
    return image.crop((left, top, left + size, top + size))


def preview_images(spec: InputSpec, image_size: int, count: int = PREVIEW_IMAGES) -> torch.Tensor:
    """The first ``count`` decodable content images, centre-cropped: the rows of the sample grid."""
    import torch

    from transforms.images import center_crop, decode_image, pil_to_tensor, resize_short_side
    from transforms.sources import iter_records

    images = []
    for record in iter_records(spec):
        try:
            image = decode_image(record.data, draft_side=image_size)
        except ImageRejected:
            continue
        images.append(pil_to_tensor(center_crop(resize_short_side(image, image_size), image_size)))
        if len(images) == count:
            break
    if not images:
        raise InputNotFoundError(f"no decodable content images in {spec.root}")
    return torch.stack(images)


def _load_style(path: str):
    from transforms.images import load_image

    try:
        return load_image(path)
    except InputNotFoundError:
        raise InputNotFoundError(f"style image not found: {path}") from None
    except ImageRejected as exc:
        raise UsageError(f"style image cannot be read: {exc}") from None


def _check_unique(names: list[str]) -> None:
    """Refuse, before any training, style names that the checkpoint could not hold (``style_names_problem``)."""
    from models.style.checkpoint import style_names_problem

    problem = style_names_problem(names, len(names))
    if problem:
        raise UsageError(f"{problem} (style names are the style files' stems and --style-name: rename one)")


def _layers(text: str) -> tuple[str, ...]:
    layers = tuple(layer.strip() for layer in text.split(",") if layer.strip())
    if not layers:
        raise UsageError(f"empty layer list: {text!r}")
    return layers


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]


if __name__ == "__main__":
    sys.exit(run_main(main))
