"""DeepDream: amplify what a network layer sees in an image, or dream towards a text query.

    python -m pipelines.deepdream --input IMG|DIR --output OUT [--torchvision googlenet --layer inception4c]
    python -m pipelines.deepdream --input IMG --output OUT --model CKPT [--layer layer3 | --text "red circle"]

Writes OUT/<name>.png (the dream), OUT/<name>-strip.png (input, then snapshots through the octaves and
iterations, coarse to fine) and OUT/deepdream.json (the network the run used, a checkpoint's path and digest or the
torchvision network and its weights, and the objective at every iteration, per image).
"""

import json
import os
import sys

from models.common.errors import ImageRejected, OutputUnwritableError, UsageError
from models.common.files import path_under, shown, write_atomically
from pipelines.cli import (
    BACKBONES,
    INPUT_HELP,
    OUTPUT_HELP,
    ArgumentParser,
    add_common_args,
    check_apart,
    positive_float,
    positive_int,
    run_main,
)
from transforms.images import decode_image, encode_image, pil_to_tensor, resize_short_side

OBJECTIVE_FLAGS = ("model", "torchvision", "weights", "layer", "text")
# models.dream.DreamConfig's defaults, named here so that --help needs no torch (tests/pipelines/test_entry_points.py
# checks that they agree).
DREAM_DEFAULTS = {"octaves": 4, "octave_scale": 1.4, "iterations": 10, "step": 0.01, "jitter": 16, "smooth_sigma": 1.0}


def parse_args(argv):
    parser = ArgumentParser(prog="python -m pipelines.deepdream", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help=f"{INPUT_HELP}: an image, a folder of images or a glob")
    parser.add_argument("--output", required=True, help=f"{OUTPUT_HELP}: a folder")
    net = parser.add_argument_group("network (one of)")
    net.add_argument("--model", help="a checkpoint from pipelines.train_embeddings (the text-supervised CNN)")
    # No argparse defaults: the report records only the network a run used, never a default it ignored.
    net.add_argument("--torchvision", choices=BACKBONES, help="a torchvision network (default: googlenet)")
    net.add_argument("--weights", help="for --torchvision: imagenet (torch cache, the default), random or a PATH")
    goal = parser.add_argument_group("objective (one of)")
    goal.add_argument("--layer", help="layer whose activations to amplify (default: inception4c / layer3)")
    goal.add_argument("--text", help="with --model: dream towards this text query's embedding")
    steps = parser.add_argument_group("optimisation")
    defaults = DREAM_DEFAULTS
    steps.add_argument("--octaves", type=positive_int, default=defaults["octaves"], help="(default: %(default)s)")
    steps.add_argument(
        "--octave-scale", type=positive_float, default=defaults["octave_scale"], help="(default: %(default)s)"
    )
    steps.add_argument(
        "--iterations", type=positive_int, default=defaults["iterations"], help="per octave (default: %(default)s)"
    )
    steps.add_argument("--step", type=positive_float, default=defaults["step"], help="step size (default: %(default)s)")
    steps.add_argument(
        "--jitter", type=int, default=defaults["jitter"], help="max random shift, px (default: %(default)s)"
    )
    steps.add_argument(
        "--smooth", type=float, default=defaults["smooth_sigma"], help="gradient blur sigma (default: %(default)s)"
    )
    add_common_args(parser, image_size=384, no_progress=True)
    args = parser.parse_args(argv)
    if args.model and args.torchvision:
        parser.error("give --model or --torchvision, not both")
    if args.model and args.weights:
        parser.error("--weights is for --torchvision; a --model checkpoint holds its own weights")
    if args.text and not args.model:
        parser.error("--text needs --model (a text-supervised CNN and its text model)")
    if args.text and args.layer:
        parser.error("give --layer or --text, not both")
    return args


def build_objective(args, device):
    """The network and what to maximise (a layer's activations, or similarity to a text query), and a description
    of exactly those: the checkpoint and its digest, or the torchvision network and its weights."""
    import torch

    from models.dream import DEFAULT_LAYERS, ImageNetBackbone, LayerObjective, TextObjective, freeze
    from models.embedding.net import load_embedding_model
    from models.embedding.text_targets import caption_tokens

    if args.model:
        model, text, info = load_embedding_model(args.model, device)
        freeze(model)
        network = {"model": {"path": args.model, "digest": info.digest}}
        if args.text:
            targets, known = text.encode([caption_tokens(args.text)])
            if not known[0]:
                raise UsageError(f"no word of {args.text!r} is in the model's text vocabulary")
            return TextObjective(model, torch.from_numpy(targets[0])), {**network, "text": args.text}
        layer = args.layer or DEFAULT_LAYERS[info.config.backbone]
        return LayerObjective(model, layer), {**network, "layer": layer}
    name, weights = args.torchvision or "googlenet", args.weights or "imagenet"
    model = freeze(ImageNetBackbone(name, weights).to(device))
    layer = args.layer or DEFAULT_LAYERS[name]
    return LayerObjective(model, layer), {"torchvision": name, "weights": weights, "layer": layer}


def main(argv=None):
    args = parse_args(argv)
    from models.common.device import resolve_device, seed_everything
    from models.common.pixels import tensor_to_pil
    from models.dream import DreamConfig, dream, frame_strip
    from transforms.sources import iter_records

    check_apart(args.output, input=args.input)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    objective, described = build_objective(args, device)
    config = DreamConfig(
        args.octaves, args.octave_scale, args.iterations, args.step, args.jitter, args.smooth, seed=args.seed
    )
    os.makedirs(args.output, exist_ok=True)
    # The network and objective flags are in "objective" as the run resolved them; "config" holds the rest.
    settings = {key: value for key, value in vars(args).items() if key not in OBJECTIVE_FLAGS}
    report = {"objective": described, "config": settings, "images": {}, "rejected": {}}
    for record in iter_records(args.input):
        name = os.path.splitext(record.source_id.replace("/", "__"))[0]
        try:
            # A Parquet input supplies its ids: each must make one plain file name inside --output.
            dreamed = path_under(args.output, f"{name}.png", "output name")
            strip_path = path_under(args.output, f"{name}-strip.png", "output name")
        except (UsageError, OutputUnwritableError) as exc:
            report["rejected"][record.source_id] = str(exc)
            print(f"skipped {shown(record.source_id)}: {exc}", file=sys.stderr)
            continue
        try:
            image = resize_short_side(decode_image(record.data), args.image_size)
        except ImageRejected as exc:
            report["rejected"][record.source_id] = str(exc)
            print(f"skipped {record.source_id}: {exc}", file=sys.stderr)
            continue
        start = pil_to_tensor(image)[None].to(device)
        result = dream(objective, start, config, progress=not args.no_progress)
        write_atomically(dreamed, encode_image(tensor_to_pil(result.image), "png"))
        strip = frame_strip([(label, tensor_to_pil(frame)) for label, frame in result.frames])
        write_atomically(strip_path, encode_image(strip, "png"))
        report["images"][record.source_id] = {
            "output": f"{name}.png",
            "before": objective.norm(start),
            "after": objective.norm(result.image),
            "history": result.history,
        }
    write_atomically(os.path.join(args.output, "deepdream.json"), json.dumps(report, indent=2).encode())
    if not report["images"]:
        raise UsageError(f"no image under {args.input} could be decoded")
    print(f"wrote {len(report['images'])} dreams to {args.output}", file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.exit(run_main(main))
