"""``Stylize``: decoded images → stylised, encoded ``augmented`` rows (+ ``rejected``).

Three fused steps: plan each record's outputs from its seed (``transforms.style_policy``), stylise in
batches of one shape bucket (``StylizeBatchesFn``: the model is loaded once per worker process and
shared by its threads through ``beam.utils.shared``), encode and build the row.

Why our own batching DoFn rather than ``RunInference``: batches must hold images of one shape, padded
to a fixed size so that an image's bytes do not depend on its batch-mates, and the style mixture and
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
from models.inference import NonFiniteOutput, StylizerRunner, resolve_precision
from transforms.decode import DecodedImage
from transforms.images import encode_image
from transforms.schemas import rejected_row
from transforms.style_policy import StylePlan, StylePolicy, plan_outputs, record_seed

REJECTED = "rejected"
LOGGER = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class StylizeFailure:
    source_id: str
    reason: str
    detail: str


class PlanStylesFn(beam.DoFn):
    def __init__(self, policy: StylePolicy, alpha_range: tuple[float, float], style_names: list[str], seed: int):
        self.policy = policy
        self.alpha_range = alpha_range
        self.style_names = list(style_names)
        self.seed = seed

    def process(self, image: DecodedImage):
        seed = record_seed(self.seed, image.source_id)
        for plan in plan_outputs(self.policy, self.alpha_range, self.style_names, seed):
            yield StyleTask(image.source_id, image.label, seed, plan, image.pixels)


class _LoadedStylizer:
    """What ``beam.utils.shared`` keeps per process (it needs a weak-referenceable object)."""

    def __init__(self, runner: StylizerRunner):
        self.runner = runner


class StylizeBatchesFn(beam.DoFn):
    """``StyleTask`` → ``StylisedImage`` (or ``StylizeFailure``), in batches of one image shape."""

    def __init__(
        self, checkpoint: str, batch_size: int, device: str, precision: str, cpu_threads: int = 0, compile: bool = False
    ):
        self.checkpoint = checkpoint
        self.compile = compile
        self.cpu_threads = cpu_threads
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self._shared = shared.Shared()
        self.stylised = Metrics.counter("stylebeam", "images_stylised")
        self.batches = Metrics.counter("stylebeam", "batches")
        self.failures = Metrics.counter("stylebeam", "stylize_failures")

    def _load(self) -> _LoadedStylizer:
        device = resolve_device(self.device)
        if device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        model, info = load_stylizer(self.checkpoint, device="cpu")
        dtype = resolve_precision(self.precision, device)
        LOGGER.info("loaded stylizer %s (%d styles) on %s as %s", info.digest, model.num_styles, device, dtype)
        return _LoadedStylizer(StylizerRunner(model, device, dtype, self.batch_size, compile=self.compile))

    def setup(self):
        key = f"{self.checkpoint}|{self.device}|{self.precision}|{self.batch_size}|{self.compile}"
        self._runner = self._shared.acquire(self._load, tag=key).runner

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
            outputs = self._stylize(tasks)
        except RuntimeError as exc:  # one bad batch must not sink the others: retry alone, reject what still fails
            LOGGER.warning("batch of %d failed (%s); retrying one by one", len(tasks), exc)
            results = []
            for task in tasks:
                try:
                    results.append(StylisedImage(task, self._stylize([task])[0]))
                except NonFiniteOutput as single:
                    self.failures.inc()
                    results.append(StylizeFailure(task.source_id, "non_finite_output", str(single)))
                except RuntimeError as single:
                    self.failures.inc()
                    results.append(StylizeFailure(task.source_id, "inference_error", str(single)))
            return results
        self.stylised.inc(len(tasks))
        return [StylisedImage(task, pixels) for task, pixels in zip(tasks, outputs, strict=True)]

    def _stylize(self, tasks: list[StyleTask]) -> np.ndarray:
        self.batches.inc()
        pixels = np.stack([task.pixels for task in tasks])
        weights = np.stack([task.plan.style_weights for task in tasks])
        alphas = np.array([task.plan.alpha for task in tasks], np.float32)
        return self._runner(pixels, weights, alphas)


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
        self.written.inc()
        yield {
            "id": f"{task.source_id}#{task.plan.index}",
            "source_id": task.source_id,
            "label": task.label,
            "style": task.plan.style,
            "style_weights": [float(w) for w in task.plan.style_weights],
            "alpha": task.plan.alpha,
            "seed": task.seed,
            "image": data,
            "image_format": self.image_format,
            "width": width,
            "height": height,
            "stylizer": self.stylizer_digest,
        }


class Stylize(beam.PTransform):
    """``DecodedImage``s → ``{"rows": augmented rows, "rejected": rejected rows}``."""

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
    ):
        super().__init__()
        self.plan = PlanStylesFn(policy, alpha_range, style_names, seed)
        self.stylize = StylizeBatchesFn(checkpoint, batch_size, device, precision, cpu_threads, compile)
        self.encode = EncodeRowFn(image_format, stylizer_digest)

    def expand(self, images):
        encoded = (
            images
            | "PlanStyles" >> beam.ParDo(self.plan)
            | "StylizeBatches" >> beam.ParDo(self.stylize)
            | "Encode" >> beam.ParDo(self.encode).with_outputs(REJECTED, main="rows")
        )
        return {"rows": encoded.rows, "rejected": encoded[REJECTED]}
