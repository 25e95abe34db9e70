"""Images → their text-supervised CNN embeddings, as Parquet.

    python -m pipelines.embed --input IN --output OUT --model CKPT [--image-size N] [--batch-size B] [Beam options]

IN is a clean corpus (Parquet with ``id`` and ``image``), other Parquet with an ``image`` column, a folder or a
glob of images. Writes OUT/embeddings-*.parquet (``id``, ``embedding``), OUT/rejected-*.parquet and
OUT/summary.json. Every standard Beam option works (``--runner=DataflowRunner`` ...).
"""

import logging
import sys

import apache_beam as beam

from models.embedding_net import load_embedding_model
from models.errors import UsageError
from pipelines.beam_options import JobOptions, check_worker_paths, parse_beam_args, run_pipeline
from pipelines.cli import run_main
from transforms.embed import EmbedImages
from transforms.io import CountRejected, WriteSummary, WriteTable
from transforms.read import ReadImages
from transforms.schemas import EMBEDDINGS, REJECTED
from transforms.sources import input_pattern


class EmbedOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", required=True, help="clean corpus Parquet, Parquet with `image`, images or a glob"
        )
        parser.add_argument("--output", required=True, help="output directory (local or gs://)")
        parser.add_argument(
            "--model", required=True, help="checkpoint from pipelines.train_embeddings (file or folder)"
        )
        parser.add_argument(
            "--image-size", type=int, default=0, help="crop side fed to the model; 0: the size it was trained at"
        )
        parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
        parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
        parser.add_argument(
            "--cpu-threads",
            type=int,
            default=1,
            help="torch threads per worker process on CPU; runners start one process per core (default: 1; 0: torch's)",
        )
        parser.add_argument(
            "--num-shards", type=int, default=0, help="output files per table; 0 lets the runner choose"
        )


def build(pipeline: beam.Pipeline, opts: EmbedOptions) -> None:
    """read → embed → write (+ rejected, summary)."""
    if opts.batch_size <= 0 or opts.image_size < 0:
        raise UsageError("--batch-size must be positive and --image-size >= 0")
    _, _, info = load_embedding_model(opts.model)  # fail here, not on a worker, if the checkpoint is bad
    image_size = opts.image_size or info.training.get("train", {}).get("image_size", 224)
    source = input_pattern(opts.input)

    read = pipeline | "ReadImages" >> ReadImages(source)
    embedded = read["records"] | "EmbedImages" >> EmbedImages(
        opts.model, image_size, opts.batch_size, opts.device, opts.cpu_threads
    )
    rejected = (read["rejected"], embedded["rejected"]) | "AllRejected" >> beam.Flatten()

    embedded["embeddings"] | "WriteEmbeddings" >> WriteTable(opts.output, "embeddings", EMBEDDINGS, opts.num_shards)
    rejected | "WriteRejected" >> WriteTable(opts.output, "rejected", REJECTED, opts.num_shards)
    counted = {
        "images_read": read["records"],
        "embeddings": embedded["embeddings"],
        "rejected": rejected,
        "*": rejected | "CountRejected" >> CountRejected(),
    }
    settings = {"input": opts.input, "model": {"path": opts.model, "digest": info.digest}, "image_size": image_size}
    pipeline | "WriteSummary" >> WriteSummary(opts.output, counted, extra=settings)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    _, options = parse_beam_args(
        EmbedOptions, argv, description=__doc__.split("\n\n")[0], prog="python -m pipelines.embed"
    )
    opts = options.view_as(EmbedOptions)
    check_worker_paths(options, input=opts.input, output=opts.output, model=opts.model)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, opts)
    return run_pipeline(
        pipeline,
        options,
        opts.output,
        lambda summary: (
            f"wrote {summary['counts']['embeddings']} embeddings and {summary['counts']['rejected']} "
            f"rejected rows to {opts.output} in {summary['elapsed_s']:.1f}s"
        ),
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(run_main(run))
