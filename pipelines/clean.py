"""Raw corpus → clean corpus: captions normalised and filtered, images checked and re-encoded, duplicates removed.

    python -m pipelines.clean --input RAW --output OUT [--min-words N] [--max-caption-chars N]
        [--languages en,es,ca|all] [--min-side PX] [--max-aspect R] [--max-pixels N] [--max-hamming BITS]
        [--format jpeg|png|webp] [Beam options]

RAW is pipelines.collect's output folder (its raw-*.parquet), a glob or files. Writes OUT/data/clean-*.parquet,
OUT/rejected/rejected-*.parquet (stage read, caption, image or dedup, with the reason) and OUT/summary.json (counts per
reason). Every standard Beam option works (``--runner=DataflowRunner`` ...).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from models.common.errors import UsageError
from pipelines.beam_job import BeamJob, JobContext, JobOptions, JobOutputs, run_beam_job
from pipelines.cli import INPUT_HELP, OUTPUT_HELP, positive_float, positive_int, run_main
from transforms.captions import MAX_CAPTION_CHARS, CaptionFilter
from transforms.images import FORMATS, MAX_PIXELS
from transforms.schemas import CLEAN_CORPUS

if TYPE_CHECKING:  # Beam and the transforms load when the job runs, not for --help
    import apache_beam as beam

    from transforms.corpus import CleanSettings

# transforms.dedup.DEFAULT_MAX_DISTANCE (as imagededup), named here so that --help needs no Beam
# (tests/pipelines/test_entry_points.py checks that the two agree).
DEFAULT_MAX_HAMMING = 10


class CleanOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", required=True, help=f"{INPUT_HELP}: the raw corpus, collect's output folder, a glob or files"
        )
        parser.add_argument("--output", required=True, help=f"{OUTPUT_HELP}: a directory, local or gs://")
        captions = parser.add_argument_group("captions")
        captions.add_argument(
            "--min-words", type=int, default=3, help="words left after cleaning, hashtag words included (default: 3)"
        )
        captions.add_argument(
            "--max-caption-chars",
            type=positive_int,
            default=MAX_CAPTION_CHARS,
            help="longer captions are rejected, not cut: Instagram allows 2,200 (default: %(default)s)",
        )
        captions.add_argument(
            "--languages",
            default="all",
            help="keep captions whose prose is in these languages (py3langid codes, e.g. en,es,ca,fr); "
            "short or uncertain prose is kept (default: all)",
        )
        captions.add_argument(
            "--min-language-confidence",
            type=positive_float,
            default=0.5,
            help="below this probability the language counts as undetermined (default: %(default)s)",
        )
        images = parser.add_argument_group("images")
        images.add_argument("--min-side", type=positive_int, default=128, help="pixels (default: %(default)s)")
        images.add_argument(
            "--max-aspect", type=positive_float, default=3.0, help="long side / short side (default: %(default)s)"
        )
        images.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="(default: %(default)s)")
        images.add_argument(
            "--format",
            dest="image_format",
            default="jpeg",
            choices=sorted(FORMATS),
            help="re-encoding of every image (default: %(default)s)",
        )
        images.add_argument(
            "--max-hamming",
            type=int,
            default=DEFAULT_MAX_HAMMING,
            help="near duplicates: phash bits that may differ, 0-63 (default: %(default)s, as imagededup)",
        )


def settings_of(opts: CleanOptions) -> CleanSettings:
    from transforms.corpus import CleanSettings

    if not 0 <= opts.max_hamming < 64:
        raise UsageError(f"--max-hamming must be in 0..63, got {opts.max_hamming}")
    languages = None
    if opts.languages.strip().lower() != "all":
        languages = frozenset(code.strip() for code in opts.languages.split(",") if code.strip())
    try:
        captions = CaptionFilter(opts.min_words, languages, opts.min_language_confidence, opts.max_caption_chars)
    except ValueError as exc:
        raise UsageError(f"--languages: {exc}") from None
    return CleanSettings(
        min_side=opts.min_side,
        max_aspect=opts.max_aspect,
        max_pixels=opts.max_pixels,
        image_format=opts.image_format,
        max_distance=opts.max_hamming,
        captions=captions,
    )


def build(pipeline: beam.Pipeline, opts: CleanOptions, context: JobContext) -> JobOutputs:
    """read raw → clean (captions, images, duplicates); the entry writes what it returns."""
    import apache_beam as beam

    from transforms.corpus import CleanCorpus, ReadCorpusTables
    from transforms.schemas import RAW_CORPUS
    from transforms.sources import input_pattern, table_paths

    settings = settings_of(opts)
    paths = table_paths(opts.input, "raw")

    read = pipeline | "ReadRaw" >> ReadCorpusTables(paths, RAW_CORPUS, input_pattern(opts.input).root)
    raw = read["rows"]
    cleaned = raw | "CleanCorpus" >> CleanCorpus(settings)
    counted = {"rows_read": raw, "rows_written": cleaned["clean"]}
    removals = cleaned["caption_removals"] | "RemovalTallies" >> beam.Map(lambda key: (key, 1))
    rejected = (read["rejected"], cleaned["rejected"])
    facts = {
        "settings": {
            "input": opts.input,
            "min_words": opts.min_words,
            "max_caption_chars": opts.max_caption_chars,
            "languages": sorted(settings.captions.languages) if settings.captions.languages else "all",
            "min_language_confidence": opts.min_language_confidence,
            "min_side": opts.min_side,
            "max_aspect": opts.max_aspect,
            "max_pixels": opts.max_pixels,
            "format": opts.image_format,
            "max_hamming": opts.max_hamming,
        }
    }
    return JobOutputs({"clean": cleaned["clean"]}, rejected, counted, (removals,), facts)


def worker_paths(opts: CleanOptions) -> dict:
    return {"input": opts.input, "output": opts.output}


def describe_clean(summary: dict) -> str:
    counts = summary["counts"]
    # rows_read counts the rows that could be read; those that could not are rejected at stage read
    rows = counts["rows_read"] + counts.get("rejected.stage.read", 0)
    return (
        f"kept {counts['rows_written']} of {rows} rows, rejected {counts['rejected']}; "
        f"wrote {summary['output']} in {summary['elapsed_s']:.1f}s"
    )


JOB = BeamJob("clean", CleanOptions, {"clean": CLEAN_CORPUS}, build, describe_clean, worker_paths=worker_paths)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    return run_beam_job(JOB, argv, test_pipeline)


if __name__ == "__main__":
    sys.exit(run_main(run))
