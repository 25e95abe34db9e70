"""``Stylize``: decoded images → stylised, encoded ``augmented`` rows (+ ``rejected``); ``EmbedPaintings``.

Three fused steps: plan each record's outputs from its seed (``models.style_policy``), stylise in batches of one
shape bucket (``StylizeBatchesFn``: the model is loaded once per worker process and shared by its threads through
``beam.utils.shared``), encode and build the row.

Two kinds of stylizer, one path: a checkpoint's N styles (each output conditioned on a style mixture), or Ghiasi
et al.'s arbitrary network with a painting collection (each output conditioned on a style embedding). For the
latter, ``EmbedPaintings`` computes every painting's embedding once per job; the sorted list reaches the planners
as a side input, and ``--alpha`` interpolates in embedding space toward the content image's own embedding.

Why our own batching DoFn rather than ``RunInference``: batches must hold images of one shape, padded
to a fixed size so that an image's bytes do not depend on its batch-mates, and the style conditioning and
alpha travel with each image; ``BatchElements`` knows none of that, and 2.77's ``max_batch_weight`` is
broken. Buffers live per bundle and are flushed in ``finish_bundle``.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import torch
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared
from PIL import Image

from models.checkpoint import load_stylizer
from models.device import resolve_device
from models.errors import ImageRejected, UsageError
from models.inference import NonFiniteOutput, StyleEmbedder, StylizerRunner, is_out_of_memory, resolve_precision
from models.style_policy import (
    PaintingSet,
    StylePlan,
    StylePolicy,
    blend_code,
    plan_outputs,
    plan_painting_outputs,
    record_seed,
)
from transforms.decode import DecodedImage
from transforms.images import MAX_PIXELS, decode_image, encode_image, pil_to_uint8
from transforms.read import ReadImages
from transforms.schemas import rejected_row
from transforms.sources import InputPattern

REJECTED = "rejected"
LOGGER = logging.getLogger(__name__)
# What a painting is decoded at: the predictor sees a 256² centre crop; JPEG draft decoding stays above it.
PAINTING_DRAFT_SIDE = 256


@dataclass(frozen=True)
class StyleTask:
    source_id: str
    label: str | None
    seed: int
    plan: StylePlan
    pixels: np.ndarray  # (H, W, 3) uint8, shared by the tasks of one image


@dataclass(frozen=True)
class StylisedImage:
    task: StyleTask
    pixels: np.ndarray  # (H, W, 3) uint8
    code: np.ndarray  # the conditioning vector the network was given (after alpha, for paintings)


@dataclass(frozen=True)
class StylizeFailure:
    source_id: str
    reason: str
    detail: str


class PlanStylesFn(beam.DoFn):
    """``DecodedImage`` → its ``StyleTask``s. With ``paintings`` (a side input of ``(id, embedding)`` pairs) the
    policy draws paintings; otherwise the checkpoint's ``style_names``."""

    def __init__(self, policy: StylePolicy, alpha_range: tuple[float, float], style_names: list[str], seed: int):
        self.policy = policy
        self.alpha_range = alpha_range
        self.style_names = list(style_names)
        self.seed = seed
        self._collection = (None, None)

    def _paintings(self, items) -> PaintingSet | None:
        """The fitted collection, once per side-input value (the same list object for a whole worker)."""
        if self._collection[0] is not items:
            try:
                fitted = PaintingSet.fit(list(items))
            except UsageError:  # every painting was rejected
                fitted = None
            self._collection = (items, fitted)
        return self._collection[1]

    def process(self, image: DecodedImage, paintings=None):
        seed = record_seed(self.seed, image.source_id)
        if paintings is None:
            plans = plan_outputs(self.policy, self.alpha_range, self.style_names, seed)
        else:
            collection = self._paintings(paintings)
            if collection is None:
                reason = "every --style-images painting was rejected"
                yield beam.pvalue.TaggedOutput(
                    REJECTED, rejected_row(image.source_id, "stylize", "no_usable_painting", reason)
                )
                return
            plans = plan_painting_outputs(self.policy, self.alpha_range, collection, seed)
        for plan in plans:
            yield StyleTask(image.source_id, image.label, seed, plan, image.pixels)


class _Loaded:
    """What ``beam.utils.shared`` keeps per process (it needs a weak-referenceable object)."""

    def __init__(self, runner: StylizerRunner | None, embedder: StyleEmbedder | None):
        self.runner = runner
        self.embedder = embedder


def _load_models(checkpoint: str, arbitrary: bool, device: str, precision: str, batch_size: int, compile: bool):
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    if arbitrary:
        from models.checkpoint import load_arbitrary

        predictor, transformer, info = load_arbitrary(checkpoint, device="cpu")
        LOGGER.info("loaded arbitrary stylizer %s on %s as %s", info.digest, device, dtype)
        runner = StylizerRunner(transformer, device, dtype, batch_size, compile=compile)
        return _Loaded(runner, StyleEmbedder(predictor, device, dtype))
    model, info = load_stylizer(checkpoint, device="cpu")
    LOGGER.info("loaded stylizer %s (%d styles) on %s as %s", info.digest, model.num_styles, device, dtype)
    return _Loaded(StylizerRunner(model, device, dtype, batch_size, compile=compile), None)


class StylizeBatchesFn(beam.DoFn):
    """``StyleTask`` → ``StylisedImage`` (or ``StylizeFailure``), in batches of one image shape."""

    def __init__(
        self,
        checkpoint: str,
        batch_size: int,
        device: str,
        precision: str,
        cpu_threads: int = 0,
        compile: bool = False,
        arbitrary: bool = False,
    ):
        self.checkpoint = checkpoint
        self.arbitrary = arbitrary
        self.compile = compile
        self.cpu_threads = cpu_threads
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self._shared = shared.Shared()
        self.stylised = Metrics.counter("stylebeam", "images_stylised")
        self.batches = Metrics.counter("stylebeam", "batches")
        self.failures = Metrics.counter("stylebeam", "stylize_failures")
        self.content_embeddings = Metrics.counter("stylebeam", "content_embeddings")

    def _load(self) -> _Loaded:
        if resolve_device(self.device).type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        return _load_models(self.checkpoint, self.arbitrary, self.device, self.precision, self.batch_size, self.compile)

    def setup(self):
        key = f"{self.checkpoint}|{self.arbitrary}|{self.device}|{self.precision}|{self.batch_size}|{self.compile}"
        loaded = self._shared.acquire(self._load, tag=key)
        self._runner, self._embedder = loaded.runner, loaded.embedder

    def start_bundle(self):
        self._buckets = defaultdict(list)

    def process(self, task: StyleTask):
        bucket = self._buckets[task.pixels.shape]
        bucket.append(task)
        if len(bucket) >= self.batch_size:
            yield from self._run(bucket)
            bucket.clear()

    def finish_bundle(self):
        for bucket in self._buckets.values():
            for result in self._run(bucket):
                yield GlobalWindows.windowed_value(result)
        self._buckets.clear()

    def _run(self, tasks: list[StyleTask]):
        if not tasks:
            return []
        try:
            codes, outputs = self._stylize(tasks)
        except (RuntimeError, MemoryError) as exc:  # one bad batch must not sink the others: retry alone
            LOGGER.warning("batch of %d failed (%s); retrying one by one", len(tasks), exc)
            results = []
            for task in tasks:
                try:
                    codes, outputs = self._stylize([task])
                    results.append(StylisedImage(task, outputs[0], codes[0]))
                except NonFiniteOutput as single:
                    self.failures.inc()
                    results.append(StylizeFailure(task.source_id, "non_finite_output", str(single)))
                except (RuntimeError, MemoryError) as single:
                    self.failures.inc()
                    reason = "out_of_memory" if is_out_of_memory(single) else "inference_error"
                    results.append(StylizeFailure(task.source_id, reason, str(single) or type(single).__name__))
            return results
        self.stylised.inc(len(tasks))
        return [StylisedImage(task, pixels, code) for task, pixels, code in zip(tasks, outputs, codes, strict=True)]

    def _codes(self, tasks: list[StyleTask]) -> tuple[np.ndarray, np.ndarray]:
        """Each task's conditioning vector and pixel alpha. For paintings alpha acts in embedding space, toward
        the content image's own embedding (computed once per image of the batch), and the pixels are not blended."""
        codes = [task.plan.code for task in tasks]
        alphas = [task.plan.alpha for task in tasks]
        needs_content = [i for i, t in enumerate(tasks) if t.plan.on_paintings and t.plan.alpha < 1.0]
        if needs_content:
            images = {}
            for i in needs_content:
                images.setdefault(tasks[i].source_id, tasks[i].pixels)
            self.content_embeddings.inc(len(images))
            embedded = dict(zip(images, self._embedder(list(images.values())), strict=True))
            for i in needs_content:
                codes[i] = blend_code(codes[i], embedded[tasks[i].source_id], tasks[i].plan.alpha)
        for i, task in enumerate(tasks):
            if task.plan.on_paintings:
                alphas[i] = 1.0
        return np.stack(codes).astype(np.float32), np.asarray(alphas, np.float32)

    def _stylize(self, tasks: list[StyleTask]) -> tuple[np.ndarray, np.ndarray]:
        self.batches.inc()
        codes, alphas = self._codes(tasks)
        return codes, self._runner(np.stack([task.pixels for task in tasks]), codes, alphas)


class EncodeRowFn(beam.DoFn):
    """``StylisedImage`` → an ``augmented`` row; failures → ``rejected``."""

    def __init__(self, image_format: str, stylizer_digest: str):
        self.image_format = image_format
        self.stylizer_digest = stylizer_digest
        self.written = Metrics.counter("stylebeam", "rows_encoded")

    def process(self, item):
        if isinstance(item, StylizeFailure):
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(item.source_id, "stylize", item.reason, item.detail))
            return
        task = item.task
        try:
            data = encode_image(Image.fromarray(item.pixels, "RGB"), self.image_format)
        except (OSError, ValueError) as exc:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(task.source_id, "encode", "encode_error", str(exc)))
            return
        height, width = item.pixels.shape[:2]
        plan = task.plan
        self.written.inc()
        yield {
            "id": f"{task.source_id}#{plan.index}",
            "source_id": task.source_id,
            "label": task.label,
            "style": plan.style,
            "style_weights": None if plan.on_paintings else [float(w) for w in plan.code],
            "style_ids": list(plan.style_ids) if plan.style_ids else None,
            "style_mix": list(plan.style_mix) if plan.style_mix else None,
            "style_embedding": [float(v) for v in item.code] if plan.on_paintings else None,
            "alpha": plan.alpha,
            "seed": task.seed,
            "image": data,
            "image_format": self.image_format,
            "width": width,
            "height": height,
            "stylizer": self.stylizer_digest,
        }


class Stylize(beam.PTransform):
    """``DecodedImage``s → ``{"rows": augmented rows, "rejected": rejected rows}``.

    ``paintings``: for an arbitrary-style checkpoint, the ``EmbedPaintings`` output (``(id, embedding)`` pairs);
    ``style_names`` is then unused.
    """

    def __init__(
        self,
        checkpoint: str,
        style_names: list[str],
        stylizer_digest: str,
        policy: StylePolicy,
        alpha_range: tuple[float, float],
        seed: int = 0,
        batch_size: int = 8,
        device: str = "auto",
        precision: str = "auto",
        image_format: str = "jpeg",
        cpu_threads: int = 0,
        compile: bool = False,
        paintings=None,
    ):
        super().__init__()
        self.paintings = paintings
        self.plan = PlanStylesFn(policy, alpha_range, style_names, seed)
        self.stylize = StylizeBatchesFn(
            checkpoint, batch_size, device, precision, cpu_threads, compile, arbitrary=paintings is not None
        )
        self.encode = EncodeRowFn(image_format, stylizer_digest)

    def expand(self, images):
        if self.paintings is None:
            planned = images | "PlanStyles" >> beam.ParDo(self.plan).with_outputs(REJECTED, main="tasks")
        else:
            side = beam.pvalue.AsList(self.paintings)
            planned = images | "PlanStyles" >> beam.ParDo(self.plan, side).with_outputs(REJECTED, main="tasks")
        encoded = (
            planned.tasks
            | "StylizeBatches" >> beam.ParDo(self.stylize)
            | "Encode" >> beam.ParDo(self.encode).with_outputs(REJECTED, main="rows")
        )
        rejected = (planned[REJECTED], encoded[REJECTED]) | "StylizeRejected" >> beam.Flatten()
        return {"rows": encoded.rows, "rejected": rejected}


class EmbedPaintingFn(beam.DoFn):
    """A painting's ``SourceRecord`` → ``(painting id, embedding)``; an unusable one → a rejected row (stage
    ``style``). Decoded once, through the project codec; the predictor is loaded once per process."""

    def __init__(
        self, checkpoint: str, device: str, precision: str, cpu_threads: int = 0, max_pixels: int = MAX_PIXELS
    ):
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self.cpu_threads = cpu_threads
        self.max_pixels = max_pixels
        self._shared = shared.Shared()
        self.embedded = Metrics.counter("stylebeam", "paintings_embedded")

    def setup(self):
        def load():
            if resolve_device(self.device).type == "cpu" and self.cpu_threads:
                torch.set_num_threads(self.cpu_threads)
            return _load_models(self.checkpoint, True, self.device, self.precision, 1, False)

        # The same key as StylizeBatchesFn's with batch 1: a separate predictor copy costs ~10 MB, not a reload.
        key = f"{self.checkpoint}|embed|{self.device}|{self.precision}"
        self._embedder = self._shared.acquire(load, tag=key).embedder

    def process(self, record):
        try:
            image = decode_image(record.data, min_side=16, max_pixels=self.max_pixels, draft_side=PAINTING_DRAFT_SIDE)
            embedding = self._embedder([pil_to_uint8(image)])[0]
        except ImageRejected as exc:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(record.source_id, "style", exc.reason, exc.detail))
            return
        except MemoryError:
            detail = "not enough memory to prepare the painting"
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(record.source_id, "style", "out_of_memory", detail))
            return
        if not np.isfinite(embedding).all():
            row = rejected_row(record.source_id, "style", "non_finite_embedding", "the style predictor gave NaN or Inf")
            yield beam.pvalue.TaggedOutput(REJECTED, row)
            return
        self.embedded.inc()
        yield record.source_id, embedding.astype(np.float32)


class EmbedPaintings(beam.PTransform):
    """PBegin → ``{"paintings": (id, embedding) pairs, "rejected": rejected rows (stage "style")}``; paintings are
    decoded under the job's ``max_pixels``, as its photos are."""

    def __init__(
        self,
        source: InputPattern,
        checkpoint: str,
        device: str = "auto",
        precision: str = "auto",
        cpu_threads: int = 0,
        max_pixels: int = MAX_PIXELS,
    ):
        super().__init__()
        self.source = source
        self.fn = EmbedPaintingFn(checkpoint, device, precision, cpu_threads, max_pixels)

    def expand(self, pbegin):
        read = pbegin | "ReadPaintings" >> ReadImages(self.source)
        embedded = read["records"] | "Embed" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="paintings")
        restaged = read["rejected"] | "AsStyleStage" >> beam.Map(lambda row: {**row, "stage": "style"})
        rejected = (restaged, embedded[REJECTED]) | "PaintingsRejected" >> beam.Flatten()
        return {"paintings": embedded.paintings, "rejected": rejected}
