"""Train a multi-style stylizer: content images + N style images → one checkpoint with N styles.

    python -m pipelines.train_stylizer --content IN --style a.jpg --style b.jpg --output styles.safetensors \\
        [--loss-network imagenet|random|PATH] [--steps N] [--image-size N] [--batch-size B] [--lr LR] \\
        [--content-weight W] [--style-weight W] [--tv-weight W] [--seed S] [--device ...] [--resume]
    python -m pipelines.train_stylizer --add-styles-to base.safetensors --content IN --style c.jpg --output CKPT
    python -m pipelines.train_stylizer --import-fns mosaic.pth --style-name mosaic --output mosaic.safetensors

Style names are the style files' stems. ``IN`` is a directory, a glob or Parquet with an ``image`` column
(``transforms.sources``). The loop itself is ``models.style.trainer``.
"""

import argparse
import dataclasses
import posixpath
import sys
from collections.abc import Iterator

import numpy as np
import torch

from models.common.device import resolve_device, seed_everything
from models.common.errors import ImageRejected, InputNotFoundError, UsageError
from models.style.checkpoint import load_stylizer, save_stylizer, style_names_problem
from models.style.fns_import import import_fast_neural_style
from models.style.registry import CONFIGS, resolve
from models.style.stylizer import MultiStyleTransformer
from models.style.trainer import (
    CONTENT_LAYERS,
    STYLE_LAYERS,
    StylizerTrainer,
    TrainingConfig,
    artefact_paths,
    load_resumable,
)
from models.style.vgg import build_loss_network
from pipelines.cli import OUTPUT_HELP, ArgumentParser, add_common_args, positive_float, positive_int, run_main
from transforms.images import center_crop, decode_image, load_image, pil_to_tensor, resize_short_side
from transforms.sources import InputSpec, SourceRecord, iter_records, resolve_input

# Records held for shuffling a lazily read input; the whole set when it is smaller (the usual case for styles'
# content sets of a few thousand images is a buffer of a few MB of encoded bytes per 100 images).
SHUFFLE_BUFFER = 512
PREVIEW_IMAGES = 4


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m pipelines.train_stylizer",
        description="Train a feed-forward multi-style network (Johnson et al. 2016 with Dumoulin et al. 2017's "
        "conditional instance norm) on content images and N style images; or add styles to a trained one; or "
        "import a pytorch/examples fast_neural_style .pth file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes CKPT plus CKPT-stem.samples.png (content x styles), .loss.png (loss curves) and "
        ".resume.pt (for --resume) next to it.",
    )
    io_group = parser.add_argument_group("inputs and output")
    io_group.add_argument("--content", metavar="IN", help="content images: a directory, a glob or Parquet files")
    io_group.add_argument(
        "--style", metavar="IMG", action="append", default=[], help="a style image (repeat for N styles)"
    )
    io_group.add_argument(
        "--output", metavar="CKPT", required=True, help=f"{OUTPUT_HELP}: the checkpoint (.safetensors)"
    )
    io_group.add_argument(
        "--resume", action="store_true", help="continue from CKPT's .resume.pt up to --steps (same flags)"
    )
    io_group.add_argument(
        "--add-styles-to",
        metavar="NAME|CKPT",
        help="add the --style images to this trained checkpoint or built-in stylizer (magenta26), training only "
        "their new CIN parameters",
    )
    io_group.add_argument(
        "--import-fns",
        metavar="FILE.pth",
        help="import a pytorch/examples fast_neural_style state_dict as a one-style checkpoint (no training)",
    )
    io_group.add_argument(
        "--style-name", metavar="NAME", help="the style name for --import-fns (default: the file's stem)"
    )

    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--loss-network",
        default="imagenet",
        metavar="imagenet|random|PATH",
        help="VGG weights: torchvision's ImageNet weights (when cached), 'random' (by seed) or a state_dict file "
        "(default: %(default)s)",
    )
    loss.add_argument(
        "--loss-arch",
        default="vgg16",
        choices=["vgg16", "vgg19"],
        help="loss network architecture (default: %(default)s)",
    )
    loss.add_argument(
        "--content-layers",
        metavar="LAYERS",
        default=",".join(CONTENT_LAYERS),
        help="comma-separated (default: %(default)s)",
    )
    loss.add_argument(
        "--style-layers",
        metavar="LAYERS",
        default=",".join(STYLE_LAYERS),
        help="comma-separated (default: %(default)s)",
    )
    loss.add_argument(
        "--content-weight",
        metavar="W",
        type=float,
        default=TrainingConfig.content_weight,
        help="(default: %(default)g)",
    )
    loss.add_argument(
        "--style-weight", metavar="W", type=float, default=TrainingConfig.style_weight, help="(default: %(default)g)"
    )
    loss.add_argument(
        "--tv-weight", metavar="W", type=float, default=TrainingConfig.tv_weight, help="(default: %(default)g)"
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--steps",
        metavar="N",
        type=int,
        default=TrainingConfig.steps,
        help="total steps (default: %(default)s); 0 with --init arbitrary: bake the paintings, no training",
    )
    train.add_argument(
        "--init",
        choices=["scratch", "arbitrary"],
        default="scratch",
        help="scratch: a new network; arbitrary: start from Ghiasi et al.'s arbitrary-style network with each "
        "--style image's embedding baked in as a fixed style (with --steps 0: offline, in seconds, no --content "
        "or loss network needed) (default: %(default)s)",
    )
    train.add_argument(
        "--lr",
        metavar="LR",
        type=positive_float,
        default=TrainingConfig.lr,
        help="Adam learning rate (default: %(default)g)",
    )
    train.add_argument(
        "--width",
        metavar="W",
        type=positive_float,
        default=1.0,
        help="channel multiplier of a new network; 0.5 is ~4x fewer FLOPs "
        "(default: %(default)s; with --add-styles-to: the checkpoint's)",
    )
    train.add_argument(
        "--style-size", metavar="N", type=positive_int, help="short side of the style images (default: --image-size)"
    )
    train.add_argument(
        "--style-order",
        default="cycle",
        choices=["cycle", "random"],
        help="which style each image of a batch trains (default: %(default)s)",
    )
    train.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=positive_int,
        default=TrainingConfig.checkpoint_every,
        help="steps between checkpoints (default: %(default)s)",
    )
    train.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="forward passes under bf16 autocast (about 2x faster on CPUs with AVX-512 BF16) (default: %(default)s)",
    )
    add_common_args(parser, batch_size=4, image_size=256, no_progress=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.import_fns:
        if args.content or args.style or args.add_styles_to or args.resume:
            raise UsageError("--import-fns takes only --style-name and --output")
        name = args.style_name or _stem(args.import_fns)
        _check_unique([name])
        digest = import_fast_neural_style(args.import_fns, args.output, name)
        print(f"wrote {args.output} ({digest}): style {name!r} from {args.import_fns}")
        return
    _check_unique([_stem(path) for path in args.style])  # before any painting is embedded or a step trained
    if args.init == "arbitrary":
        if args.add_styles_to:
            raise UsageError(
                "--init arbitrary starts from the arbitrary-style network; --add-styles-to from a checkpoint"
            )
        if not args.style:
            raise UsageError("--init arbitrary needs at least one --style image (a painting) to bake")
        if args.steps < 0:
            raise UsageError(f"--steps must be >= 0, got {args.steps}")
        baked, source = bake_paintings(args.style, args.device)
        if args.steps == 0:
            names = [_stem(path) for path in args.style]
            training = {"init": "arbitrary", "steps": 0, "style_files": [posixpath.basename(p) for p in args.style]}
            digest = save_stylizer(args.output, baked, names, training, source=source)
            print(f"wrote {args.output} ({digest}): {len(names)} painting styles baked in, no training")
            return
    elif args.steps <= 0:
        raise UsageError(f"--steps must be positive, got {args.steps} (0 only with --init arbitrary)")
    if not args.content or not args.style:
        raise UsageError("--content and at least one --style are required (or --import-fns)")

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
    new_names = [_stem(path) for path in args.style]
    style_size = args.style_size or args.image_size
    metadata = {
        "content": args.content,
        "style_files": [posixpath.basename(path) for path in args.style],
        "init": args.init,
        "loss_network": args.loss_network,
        "loss_arch": args.loss_arch,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "style_size": style_size,
    }
    base, base_names = None, []
    if args.add_styles_to:  # a bad document (style names included) is refused here, before any training
        base, info = load_stylizer(resolve(args.add_styles_to))
        base_names = info.style_names
        metadata |= {"base_checkpoint": info.digest, "base_training": info.training}
        if info.source:  # imported weights keep their provenance and licence through fine-tuning
            metadata["base_source"] = info.source
    elif args.init == "arbitrary":
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
    elif args.init == "arbitrary":  # fine-tune the baked network: every parameter trains
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
    from models.style.checkpoint import load_arbitrary
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
    try:
        return load_image(path)
    except InputNotFoundError:
        raise InputNotFoundError(f"style image not found: {path}") from None
    except ImageRejected as exc:
        raise UsageError(f"style image cannot be read: {exc}") from None


def _check_unique(names: list[str]) -> None:
    """Refuse, before any training, style names that the checkpoint could not hold (``style_names_problem``)."""
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
