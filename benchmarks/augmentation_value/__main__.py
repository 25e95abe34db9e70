"""Does style augmentation help? Train the same small CNN on each arm's data and compare.

    python -m benchmarks.augmentation_value [--output DIR] [--arms a,b,...] [--ratio R] [--alpha A|LO,HI]
        [--seeds N] [--stylizer NAME|CKPT] [--style-images DIR] [--train DIR --test DIR [--test DIR ...]]
        [--sweep [--sweep-ratios R ...] [--sweep-alphas A ...]] [--jobs N]

Writes OUT/results.json, OUT/results.md and OUT/results.png, and keeps each augment job's Parquet under
OUT/work/jobs/. See the README section "Does it help?".
"""

import argparse
import os
import sys
from pathlib import Path

from benchmarks.augmentation_value.augment_job import ExperimentError, write_painting_collection
from benchmarks.augmentation_value.classifier import TrainSettings
from benchmarks.augmentation_value.cue_conflict import SHAPES, CueConflictSpec
from benchmarks.augmentation_value.experiment import (
    ARM_NAMES,
    ARMS,
    Settings,
    Variant,
    run_experiment,
)
from benchmarks.augmentation_value.report import markdown_table, recommend, write_reports
from models.style.policy import parse_alpha
from pipelines.cli import positive_float, positive_int, run_main

# The defaults of --ratio and --alpha are the sweep's best setting (report.recommend; README "Does it help?"):
# alpha 0.5 was the least harmful at 3 of 4 ratios, and the ratio made no difference beyond one std.
DEFAULT_RATIO = 0.5
DEFAULT_ALPHA = "0.5"
SWEEP_RATIOS = (0.5, 1.0, 2.0, 4.0)
SWEEP_ALPHAS = ("0.5", "1", "0.5,1")
SWEEP_ARM = "style-random"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.augmentation_value", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default="augmentation-value", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--arms",
        default=",".join(ARM_NAMES),
        help=f"comma-separated arms to run, of: {', '.join(ARM_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--ratio",
        type=positive_float,
        default=DEFAULT_RATIO,
        help="stylised : original images in the style arms (offline: rows added; online: probability R/(1+R)) "
        "(default: %(default)s, the sweep's best)",
    )
    parser.add_argument(
        "--alpha",
        default=DEFAULT_ALPHA,
        help="style strength A or a range LO,HI (default: %(default)s, the sweep's best)",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="training seeds per arm (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the augment jobs (default: 0)")
    parser.add_argument("--stylizer", default="magenta26", help="built-in name or checkpoint (default: %(default)s)")
    parser.add_argument(
        "--style-images",
        help="painting collection of the painting arms (default: the package's style PNGs + scikit-image textures)",
    )
    data = parser.add_argument_group("data: the generated cue-conflict set, or --train/--test ImageFolders")
    data.add_argument("--classes", type=positive_int, default=8, help="shapes, 2-10 (default: %(default)s)")
    data.add_argument(
        "--image-size", type=positive_int, default=64, help="the CNN's input, pixels per side (default: %(default)s)"
    )
    data.add_argument(
        "--stylise-size",
        type=positive_int,
        default=128,
        help="the data are made (or loaded) at this size, stylised at it by the augment job (--image-size there) "
        "and by the online arm, then scaled to --image-size (default: %(default)s)",
    )
    data.add_argument("--train-per-class", type=positive_int, default=100, help="(default: %(default)s)")
    data.add_argument("--test-per-class", type=positive_int, default=50, help="per test set (default: %(default)s)")
    data.add_argument(
        "--texture-correlation",
        type=float,
        default=0.9,
        help="share of training images wearing their class's texture (default: %(default)s)",
    )
    data.add_argument("--train", dest="train_dir", help="your own training ImageFolder (class sub-folders)")
    data.add_argument("--test", dest="test_dirs", action="append", default=[], help="a test ImageFolder (repeat)")
    training = parser.add_argument_group("training (the same for every arm)")
    training.add_argument("--steps", type=positive_int, default=TrainSettings.steps, help="(default: %(default)s)")
    training.add_argument(
        "--batch-size", type=positive_int, default=TrainSettings.batch_size, help="(default: %(default)s)"
    )
    training.add_argument(
        "--width", type=positive_int, default=TrainSettings.width, help="CNN stem channels (default: %(default)s)"
    )
    training.add_argument(
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="training runs in parallel, one thread each (default: the CPU count, %(default)s)",
    )
    sweep = parser.add_argument_group("sweep: the style-random arm over ratios × alphas, beside 'none'")
    sweep.add_argument("--sweep", action="store_true", help="run the sweep instead of the arms")
    sweep.add_argument("--sweep-ratios", type=positive_float, nargs="+", default=list(SWEEP_RATIOS))
    sweep.add_argument("--sweep-alphas", nargs="+", default=list(SWEEP_ALPHAS))
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    for alpha in [args.alpha, *args.sweep_alphas]:
        parse_alpha(alpha)  # a bad value is a UsageError now, not a failed augment job later
    if bool(args.test_dirs) != bool(args.train_dir):
        raise ExperimentError("--train and --test go together: --train DIR --test DIR [--test DIR ...]")
    for folder in [args.train_dir, *args.test_dirs] if args.train_dir else []:
        if not Path(folder).is_dir():
            raise ExperimentError(f"not a directory: {folder}")
    if not 2 <= args.classes <= len(SHAPES):
        raise ExperimentError(f"--classes must be 2..{len(SHAPES)}, got {args.classes}")
    if not 0 <= args.texture_correlation <= 1:
        raise ExperimentError(f"--texture-correlation must be in [0, 1], got {args.texture_correlation}")
    by_name = {arm.name: arm for arm in ARMS}
    if args.sweep:
        variants = [Variant(by_name["none"], 0.0, "1")]
        variants += [Variant(by_name[SWEEP_ARM], r, a) for a in args.sweep_alphas for r in args.sweep_ratios]
    else:
        names = [name.strip() for name in args.arms.split(",") if name.strip()]
        unknown = [name for name in names if name not in by_name]
        if unknown or not names:
            raise ExperimentError(
                f"unknown arm(s) {', '.join(unknown) or '(none given)'}; arms: {', '.join(ARM_NAMES)}"
            )
        variants = [Variant(by_name[name], args.ratio, args.alpha) for name in names]
    style_images = args.style_images
    if style_images is None and any(v.arm.paintings for v in variants):
        style_images = str(write_painting_collection(Path(args.output) / "work" / "paintings"))
    return Settings(
        output=args.output,
        variants=tuple(variants),
        seeds=tuple(args.seed + i for i in range(args.seeds)),
        data_seed=args.seed,
        stylizer=args.stylizer,
        style_images=style_images,
        cue_conflict=CueConflictSpec(
            classes=args.classes,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            texture_correlation=args.texture_correlation,
            seed=args.seed,
        ),
        image_size=args.image_size,
        stylise_size=args.stylise_size,
        train_dir=args.train_dir,
        test_dirs=tuple(args.test_dirs),
        train=TrainSettings(steps=args.steps, batch_size=args.batch_size, width=args.width),
        jobs=args.jobs,
    )


def run(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = settings_from(args)
    print(
        f"{len(settings.variants)} arms × {len(settings.seeds)} seeds, {settings.train.steps} steps each, "
        f"{settings.jobs} parallel; stylizer {settings.stylizer}; output {settings.output}",
        file=sys.stderr,
    )
    results = run_experiment(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    results["recommended"] = recommend(results)
    paths = write_reports(results, settings.output)
    print(markdown_table(results))
    timing = results["timing"]
    print(
        f"{timing['total_s']:.0f}s in all ({timing['augment_jobs_s']:.0f}s in augment jobs); "
        f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']}",
        file=sys.stderr,
    )
    return results


if __name__ == "__main__":
    sys.exit(run_main(run))
