"""Corpus posts → model inputs and embeddings: the streamed training reader and the Beam embedding transform.

Both decode each image once through ``decode_image`` and prepare it the same way (short side to
``source_side(image_size)``, centre square), so training, evaluation and the embedding job see the same
pixels. The Beam transform is ``RunInference`` with our ``EmbeddingModelHandler`` (the model loaded once per
worker process; bad images leave through the same ``rejected`` output as every other job's, see
``transforms.inference``).
"""

import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
import torch
from apache_beam.pvalue import TaggedOutput
from PIL import Image

from models.common.errors import ImageRejected
from models.embedding.heldout import is_heldout
from models.embedding.text_targets import TextTargets, caption_tokens
from models.embedding.trainer import Example, ImageEmbedder, source_side
from transforms.images import center_crop, decode_image, pil_to_uint8, resize_short_side
from transforms.inference import ProcessModelHandler, RunInferenceWithRetry
from transforms.schemas import rejected_row
from transforms.sources import iter_parquet_batches

STAGE = "embed"
REJECTED = "rejected"
LOGGER = logging.getLogger(__name__)
CORPUS_COLUMNS = ["id", "image", "text", "caption", "caption_hashtags"]


def prepare_image(image: Image.Image, image_size: int) -> np.ndarray:
    """Decoded RGB → ``(S, S, 3)`` uint8, ``S = source_side(image_size)``: short side resized, centre square."""
    side = source_side(image_size)
    return pil_to_uint8(center_crop(resize_short_side(image, side), side))


def decode_and_prepare(data: bytes, image_size: int) -> np.ndarray:
    return prepare_image(decode_image(data, draft_side=source_side(image_size)), image_size)


def post_tokens(row: dict) -> list[str]:
    """A corpus row's caption tokens: the cleaned ``text`` (the raw ``caption`` when absent) and its hashtags."""
    text = row.get("text")
    return caption_tokens(text if text is not None else row.get("caption"), row.get("caption_hashtags"))


# Streamed training data -----------------------------------------------------------------------------------------
def iter_corpus_rows(paths: list[str], columns: list[str] = CORPUS_COLUMNS, batch_rows: int = 64) -> Iterator[dict]:
    """Rows of clean-corpus Parquet files, one row group in memory at a time."""
    for batch in iter_parquet_batches(paths, columns, batch_rows):
        yield from batch.to_pylist()


def iter_split_tokens(paths: list[str], heldout_fraction: float, heldout: bool) -> Iterator[list[str]]:
    """Caption tokens of one side of the held-out split (text columns only: images are not read)."""
    for row in iter_corpus_rows(paths, ["id", "text", "caption", "caption_hashtags"]):
        if is_heldout(row["id"], heldout_fraction) == heldout:
            yield post_tokens(row)


def shuffled(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """Streaming shuffle through a buffer of ``buffer_size`` items (a full shuffle would need the whole corpus)."""
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def corpus_examples(
    paths: list[str],
    text: TextTargets,
    *,
    image_size: int,
    heldout_fraction: float,
    heldout: bool,
    counts: Counter | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 1024,
    decode_threads: int = 2,
) -> Iterator[Example]:
    """Training (or held-out) examples streamed from the corpus, in ``TrainConfig`` form.

    Posts whose caption has no known word are counted as ``no_text_target`` (and their images never
    decoded), undecodable images as ``rejected.<reason>``, the rest as ``examples``. With ``shuffle_seed``
    the file order and a ``shuffle_buffer`` of rows are shuffled.
    """
    counts = counts if counts is not None else Counter()
    rng = random.Random(shuffle_seed)
    if shuffle_seed is not None:
        paths = list(paths)
        rng.shuffle(paths)
    rows = (row for row in iter_corpus_rows(paths) if is_heldout(row["id"], heldout_fraction) == heldout)
    if shuffle_seed is not None:
        rows = shuffled(rows, shuffle_buffer, rng)

    def with_targets():
        for chunk in _chunks(rows, 64):
            targets, known = text.encode([post_tokens(row) for row in chunk])
            counts["no_text_target"] += int((~known).sum())
            yield from ((row, targets[i]) for i, row in enumerate(chunk) if known[i])

    for (row, target), image in decoded(
        with_targets(), lambda pair: pair[0]["image"], image_size, counts, decode_threads
    ):
        counts["examples"] += 1
        yield Example(row["id"], image, target)


def heldout_posts(
    paths: list[str],
    *,
    image_size: int,
    heldout_fraction: float,
    counts: Counter | None = None,
    decode_threads: int = 2,
) -> Iterator[tuple[str, np.ndarray, list[str]]]:
    """``(id, (S, S, 3) uint8, caption tokens)`` of the held-out posts, for retrieval evaluation."""
    counts = counts if counts is not None else Counter()
    rows = (row for row in iter_corpus_rows(paths) if is_heldout(row["id"], heldout_fraction))
    for row, image in decoded(rows, lambda row: row["image"], image_size, counts, decode_threads):
        counts["posts"] += 1
        yield row["id"], image, post_tokens(row)


def decoded(items: Iterable, image_of, image_size: int, counts: Counter, threads: int = 2) -> Iterator[tuple]:
    """``(item, prepared image)`` for each item whose image bytes (``image_of(item)``) decode; others are counted.

    Decoding runs in ``threads`` threads: Pillow releases the GIL while decoding and resizing.
    """

    def prepare(item):
        try:
            return decode_and_prepare(image_of(item) or b"", image_size), None
        except ImageRejected as exc:
            return None, exc.reason

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for chunk in _chunks(items, 64):
            for item, (image, reason) in zip(chunk, pool.map(prepare, chunk), strict=True):
                if reason is not None:
                    counts[f"rejected.{reason}"] += 1
                else:
                    yield item, image


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# Beam ---------------------------------------------------------------------------------------------------------------
class DecodeForEmbedding(beam.DoFn):
    """``SourceRecord`` → ``(source_id, (S, S, 3) uint8)``; undecodable images → tagged ``rejected`` rows."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def process(self, record):
        try:
            yield record.source_id, decode_and_prepare(record.data, self.image_size)
        except ImageRejected as exc:
            yield TaggedOutput(REJECTED, rejected_row(record.source_id, STAGE, exc.reason, exc.detail))


class EmbeddingModelHandler(ProcessModelHandler):
    """``RunInference``'s handler for the text-supervised CNN: ``(id, (S, S, 3) uint8)`` → ``(id, embedding)``, through
    one ``ImageEmbedder`` per process. Its forward passes have a fixed size (``batch_size``, padded), so an
    image's embedding does not depend on how Beam batched it (re-runs give bit-identical embeddings; checked in
    tests/pipelines/test_embed.py). Beam's inference metrics are under ``stylebeam.embed``."""

    stage = STAGE

    def __init__(
        self,
        model_path: str,
        image_size: int,
        batch_size: int,
        device: str = "auto",
        cpu_threads: int = 0,
        share_across_processes: bool | None = None,
    ):
        super().__init__(batch_size, device, share_across_processes)
        self.model_path = model_path
        self.image_size = image_size
        self.cpu_threads = cpu_threads

    def model_key(self) -> str:
        return f"embed|{self.model_path}|{self.image_size}|{self.batch_size}|{self.device}"

    def build_model(self) -> ImageEmbedder:
        from models.common.device import resolve_device
        from models.embedding.net import load_embedding_model

        device = resolve_device(self.device)
        if device.type == "cpu" and self.cpu_threads:
            # Runners start about one worker process per core; torch's own per-process thread pool on top of that
            # oversubscribes the CPU (a tiny-ResNet step: 39 ms with 1 thread, 523 ms with 2, on a busy 2-core box).
            torch.set_num_threads(self.cpu_threads)
        model, _, info = load_embedding_model(self.model_path, device)
        LOGGER.info("embedding model %s (%s) loaded on %s", self.model_path, info.digest, device)
        return ImageEmbedder(model, device, self.image_size, self.batch_size)

    def run_inference(self, batch, model: ImageEmbedder, inference_args=None) -> list[tuple[str, np.ndarray]]:
        embeddings = model([image for _, image in batch])
        return [(post_id, embedding) for (post_id, _), embedding in zip(batch, embeddings, strict=True)]

    def get_num_bytes(self, batch) -> int:
        return sum(image.nbytes for _, image in batch)  # the default pickles the whole batch to measure it

    def get_metrics_namespace(self) -> str:
        return "stylebeam.embed"

    def source_id(self, element) -> str:
        return element[0]


class EmbeddingRowFn(beam.DoFn):
    """``(id, embedding)`` → an ``EMBEDDINGS`` row; a non-finite embedding → a rejected row instead of garbage."""

    def process(self, item):
        post_id, embedding = item
        if not np.isfinite(embedding).all():
            detail = f"{int((~np.isfinite(embedding)).sum())} of {embedding.size} values are NaN or Inf"
            yield TaggedOutput(REJECTED, rejected_row(post_id, STAGE, "non_finite_embedding", detail))
            return
        yield {"id": post_id, "embedding": embedding.astype(np.float32).tolist()}


class EmbedImages(beam.PTransform):
    """``SourceRecord``s (``transforms.read.ReadImages``) → ``{"embeddings": EMBEDDINGS rows, "rejected": rows}``.

    ``share_model_across_processes``: one model per machine for all its worker processes (default: on CUDA only;
    see ``transforms.inference``)."""

    def __init__(
        self,
        model_path: str,
        image_size: int,
        batch_size: int = 32,
        device: str = "auto",
        cpu_threads: int = 0,
        share_model_across_processes: bool | None = None,
    ):
        super().__init__()
        self.image_size = image_size
        self.handler = EmbeddingModelHandler(
            model_path, image_size, batch_size, device, cpu_threads, share_model_across_processes
        )

    def expand(self, rows):
        decoded = rows | "Decode" >> beam.ParDo(DecodeForEmbedding(self.image_size)).with_outputs(
            REJECTED, main="images"
        )
        embedded = decoded.images | "Embed" >> RunInferenceWithRetry(self.handler, EmbeddingRowFn())
        rejected = (decoded[REJECTED], embedded["rejected"]) | "EmbedRejected" >> beam.Flatten()
        return {"embeddings": embedded["rows"], "rejected": rejected}
