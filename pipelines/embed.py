"""Images → their text-supervised CNN embeddings, as Parquet.

    python -m pipelines.embed --input IN --output OUT --model CKPT [--image-size N] [--batch-size B] [Beam options]

IN is a clean corpus (Parquet with ``id`` and ``image``), other Parquet with an ``image`` column, a folder or a
glob of images. Writes OUT/data/embeddings-*.parquet (``id``, ``embedding``), OUT/rejected/rejected-*.parquet and
OUT/summary.json. Every standard Beam option works (``--runner=DataflowRunner`` ...).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pipelines.beam_job import BeamJob, JobContext, JobOptions, JobOutputs, run_beam_job
from pipelines.cli import INPUT_HELP, OUTPUT_HELP, add_common_args, run_main
from transforms.schemas import EMBEDDINGS

if TYPE_CHECKING:  # Beam, torch and the transforms load when the job runs, not for --help
    import apache_beam as beam


class EmbedOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            required=True,
            help=f"{INPUT_HELP}: a clean corpus, Parquet with an `image` column, a folder of images or a glob",
        )
        parser.add_argument("--output", required=True, help=f"{OUTPUT_HELP}: a directory, local or gs://")
        parser.add_argument(
            "--model", required=True, help="checkpoint from pipelines.train_embeddings (file or folder)"
        )
        add_common_args(
            parser,
            seed=False,
            batch_size=32,
            image_size=0,
            image_size_zero="the size the model was trained at (a centre square)",
            cpu_threads=True,
        )


def build(pipeline: beam.Pipeline, opts: EmbedOptions, context: JobContext) -> JobOutputs:
    """read → embed; the entry writes what it returns."""
    from models.embedding.net import load_embedding_model
    from transforms.embed import EmbedImages
    from transforms.read import ReadImages
    from transforms.sources import input_pattern

    _, _, info = load_embedding_model(opts.model)  # fail here, not on a worker, if the checkpoint is bad
    image_size = opts.image_size or info.training.get("train", {}).get("image_size", 224)
    source = input_pattern(opts.input)

    read = pipeline | "ReadImages" >> ReadImages(source)
    embedded = read["records"] | "EmbedImages" >> EmbedImages(
        opts.model, image_size, opts.batch_size, opts.device, context.cpu_threads
    )
    counted = {"images_read": read["records"], "embeddings": embedded["embeddings"]}
    facts = {"input": opts.input, "model": {"path": opts.model, "digest": info.digest}, "image_size": image_size}
    rejected = (read["rejected"], embedded["rejected"])
    return JobOutputs({"embeddings": embedded["embeddings"]}, rejected, counted, facts=facts)


def describe(summary: dict) -> str:
    counts = summary["counts"]
    return (
        f"wrote {counts['embeddings']} embeddings and {counts['rejected']} rejected rows to {summary['output']} "
        f"in {summary['elapsed_s']:.1f}s"
    )


def worker_paths(opts: EmbedOptions) -> dict:
    return {"input": opts.input, "output": opts.output, "model": opts.model}


JOB = BeamJob(
    "embed",
    EmbedOptions,
    {"embeddings": EMBEDDINGS},
    build,
    describe,
    worker_paths=worker_paths,
    device="device",
    cpu_threads="cpu_threads",
)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    return run_beam_job(JOB, argv, test_pipeline)


if __name__ == "__main__":
    sys.exit(run_main(run))
