"""Text→image retrieval on the held-out posts of a clean corpus: P@5, R@1/5/10, median rank, random baseline.

    python -m pipelines.evaluate_embeddings --input CLEAN --model CKPT [--embeddings EMB] [--output JSON]

The held-out posts are the ones pipelines.train_embeddings never trained on (same id hash, same fraction).
Image embeddings come from the model, or from pipelines.embed output with --embeddings. Prints a table and
writes the JSON report (default: retrieval.json beside the checkpoint).
"""

import json
import os
import sys
from collections import Counter

import numpy as np

from models.common.errors import InputNotFoundError, UsageError
from models.common.files import write_atomically
from models.embedding.heldout import is_heldout
from pipelines.cli import INPUT_HELP, OUTPUT_HELP, ArgumentParser, add_common_args, positive_int, run_main


def parse_args(argv):
    parser = ArgumentParser(prog="python -m pipelines.evaluate_embeddings", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help=f"{INPUT_HELP}: the clean corpus the model was trained on")
    parser.add_argument("--model", required=True, help="checkpoint from pipelines.train_embeddings (file or folder)")
    parser.add_argument("--embeddings", help="embeddings-*.parquet from pipelines.embed, instead of running the model")
    parser.add_argument(
        "--output", help=f"{OUTPUT_HELP}: the report's JSON path (default: retrieval.json beside the checkpoint)"
    )
    parser.add_argument("--queries", help="comma-separated query words (default: the most frequent caption words)")
    parser.add_argument("--max-queries", type=positive_int, default=50, help="automatic word queries (default: 50)")
    parser.add_argument(
        "--min-relevant", type=positive_int, default=3, help="held-out captions a query word must be in (default: 3)"
    )
    parser.add_argument("--k", type=positive_int, default=5, help="precision cut-off (default: 5, Gómez's P@5)")
    parser.add_argument("--heldout-fraction", type=float, help="override the fraction the model was trained with")
    add_common_args(
        parser,
        seed=False,
        batch_size=32,
        image_size=0,
        image_size_zero="the size the model was trained at (a centre square)",
        no_progress=True,
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from models.common.device import resolve_device
    from models.embedding.net import load_embedding_model
    from models.embedding.retrieval import embed_posts, evaluate, format_table
    from transforms.embed import heldout_posts
    from transforms.sources import clean_corpus_paths, table_paths

    paths = clean_corpus_paths(args.input)
    device = resolve_device(args.device)
    model, text, info = load_embedding_model(args.model, device)
    trained = info.training.get("train", {})
    fraction = args.heldout_fraction if args.heldout_fraction is not None else trained.get("heldout_fraction", 0)
    if not 0 < fraction < 1:
        raise UsageError("the model was trained on every post (held-out fraction 0); pass --heldout-fraction")
    image_size = args.image_size or trained.get("image_size", 224)
    counts = Counter()

    if args.embeddings:
        ids, image_embeddings, token_lists = stored_embeddings(
            paths, table_paths(args.embeddings, "embeddings"), fraction
        )
        counts["posts"] = len(ids)
    else:
        posts = heldout_posts(paths, image_size=image_size, heldout_fraction=fraction, counts=counts)
        ids, image_embeddings, token_lists = embed_posts(
            model, posts, image_size, args.batch_size, device, progress=not args.no_progress
        )
    if len(ids) < 2:
        raise UsageError(f"only {len(ids)} held-out posts with images; retrieval needs a larger corpus")
    queries = [word.strip().lower() for word in args.queries.split(",") if word.strip()] if args.queries else None
    report = evaluate(image_embeddings, token_lists, text, queries, args.min_relevant, args.max_queries, args.k)
    report.update(
        {
            "checkpoint": {"path": args.model, "digest": info.digest},
            "heldout_fraction": fraction,
            "counts": dict(counts),
        }
    )
    print(format_table(report))
    output = args.output or os.path.join(os.path.dirname(info_path(args.model)), "retrieval.json")
    write_atomically(output, json.dumps(report, indent=2, sort_keys=True).encode())
    print(f"wrote {output}", file=sys.stderr)
    return report


def info_path(model: str) -> str:
    return model if model.endswith(".safetensors") else os.path.join(model, "model.safetensors")


def stored_embeddings(corpus: list[str], embedding_files: list[str], fraction: float):
    """Held-out posts' embeddings from ``pipelines.embed`` output, aligned with their caption tokens."""
    from transforms.embed import iter_corpus_rows, post_tokens
    from transforms.sources import iter_parquet_batches

    columns = ["id", "text", "caption", "caption_hashtags"]
    tokens = {
        row["id"]: post_tokens(row) for row in iter_corpus_rows(corpus, columns) if is_heldout(row["id"], fraction)
    }
    ids, vectors = [], []
    for batch in iter_parquet_batches(embedding_files, ["id", "embedding"], 1024):
        for row in batch.to_pylist():
            if row["id"] in tokens:
                ids.append(row["id"])
                vectors.append(np.asarray(row["embedding"], dtype=np.float32))
    if not ids:
        raise InputNotFoundError("no held-out post of --input has an embedding in --embeddings")
    return ids, np.stack(vectors), [tokens[post_id] for post_id in ids]


if __name__ == "__main__":
    sys.exit(run_main(main))
