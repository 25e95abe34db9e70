"""``Stylize``: decoded images → stylised, encoded ``augmented`` rows (+ ``rejected``); ``EmbedPaintings``.

Three steps: plan each record's outputs from its seed (``models.style.policy``), stylise them with Beam's
``RunInference`` and our ``StylizeModelHandler`` (one ``StylizerRunner`` per worker process, shared by its threads;
a failed batch retried one task at a time, see ``transforms.inference``), encode and build the row.

Two kinds of stylizer, one path: a checkpoint's N styles (each output conditioned on a style mixture), or Ghiasi
et al.'s arbitrary network with a painting collection (each output conditioned on a style embedding). For the
latter, ``EmbedPaintings`` computes every painting's embedding once per job; the sorted list reaches the planners
as a side input, and ``--alpha`` interpolates in embedding space toward the content image's own embedding.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import torch
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
from PIL import Image

from models.common.device import resolve_device
from models.common.errors import ImageRejected, UsageError
from models.style.policy import (
    PaintingSet,
    StylePlan,
    StylePolicy,
    plan_outputs,
    plan_painting_outputs,
    record_seed,
)
from models.style.runner import NonFiniteOutput, StylizerRunner, is_out_of_memory_error, load_runner
from transforms.decode import DecodedImage
from transforms.images import MAX_PIXELS, decode_image, encode_image, pil_to_uint8
from transforms.inference import ProcessModelHandler, RunInferenceWithRetry
from transforms.io import Balance
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
    image: DecodedImage | None = None  # its record: carried columns and geometry for the row (not the model's)


@dataclass(frozen=True)
class StylisedImage:
    task: StyleTask
    pixels: np.ndarray  # (H, W, 3) uint8
    code: np.ndarray  # the conditioning vector the network was given (after alpha, for paintings)


class PlanStylesFn(beam.DoFn):
    """``DecodedImage`` → its ``StyleTask``s. With ``paintings`` (a side input of ``(id, embedding)`` pairs) the
    policy draws paintings; otherwise the checkpoint's ``style_names``."""

    def __init__(self, policy: StylePolicy, alpha_range: tuple[float, float], style_names: list[str], seed: int):
        self.policy = policy
        self.alpha_range = alpha_range
        self.style_names = list(style_names)
        self.seed = seed
        self._collection = (None, None)
        self.planned = Metrics.counter("stylebeam", "tasks_planned")

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
            self.planned.inc()
            yield StyleTask(image.source_id, image.label, seed, plan, image.pixels, image)


class StylizeModelHandler(ProcessModelHandler):
    """``RunInference``'s handler for the stylizer: ``StyleTask``s → ``StylisedImage``s, through one
    ``StylizerRunner`` per process (with its style predictor for an arbitrary-style checkpoint).

    A batch may mix image shapes; each shape is one call of the runner (its forward passes have a fixed size, so an
    image's bytes do not depend on its batch-mates). Counters (namespace ``stylebeam``): ``images_stylised``,
    ``batches`` (one per shape per batch), ``content_embeddings``; Beam's own inference metrics are under
    ``stylebeam.stylize``.
    """

    stage = "stylize"

    def __init__(
        self,
        checkpoint: str,
        batch_size: int,
        device: str,
        precision: str,
        cpu_threads: int = 0,
        compile: bool = False,
        arbitrary: bool = False,
        share_across_processes: bool | None = None,
    ):
        super().__init__(batch_size, device, share_across_processes)
        self.checkpoint = checkpoint
        self.arbitrary = arbitrary
        self.compile = compile
        self.cpu_threads = cpu_threads
        self.precision = precision
        self.stylised = Metrics.counter("stylebeam", "images_stylised")
        self.batches = Metrics.counter("stylebeam", "batches")
        self.content_embeddings = Metrics.counter("stylebeam", "content_embeddings")

    def model_key(self) -> str:
        settings = (self.checkpoint, self.arbitrary, self.device, self.precision, self.batch_size, self.compile)
        return "stylize|" + "|".join(map(str, settings))

    def build_model(self) -> StylizerRunner:
        if resolve_device(self.device).type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        runner, _ = load_runner(
            self.checkpoint,
            arbitrary=self.arbitrary,
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            compile=self.compile,
        )
        return runner

    def run_inference(self, batch, model: StylizerRunner, inference_args=None) -> list[StylisedImage]:
        by_shape = defaultdict(list)
        for task in batch:
            by_shape[task.pixels.shape].append(task)
        results = []
        for tasks in by_shape.values():
            self.batches.inc()
            pixels = np.stack([task.pixels for task in tasks])
            outputs, conditioning = model.stylize_plans(
                pixels, [task.plan for task in tasks], [task.source_id for task in tasks]
            )
            if conditioning.content_embeddings:
                self.content_embeddings.inc(conditioning.content_embeddings)
            results += [
                StylisedImage(task, output, code)
                for task, output, code in zip(tasks, outputs, conditioning.codes, strict=True)
            ]
        self.stylised.inc(len(results))
        return results

    def get_num_bytes(self, batch) -> int:
        return sum(task.pixels.nbytes for task in batch)  # the default pickles the whole batch to measure it

    def get_metrics_namespace(self) -> str:
        return "stylebeam.stylize"

    def source_id(self, task: StyleTask) -> str:
        return task.source_id

    def rejection_reason(self, error_type: type, message: str = "") -> str:
        if issubclass(error_type, NonFiniteOutput):
            return "non_finite_output"
        return "out_of_memory" if is_out_of_memory_error(error_type, message) else "inference_error"


def image_row(image: DecodedImage, pixels: np.ndarray, data: bytes, image_format: str, classes: dict) -> dict:
    """The columns every ``augmented`` row of ``image`` shares: its record (source id, label and its index in
    ``classes``, label → index), the encoded ``pixels``, their geometry, and the input's carried columns."""
    height, width = pixels.shape[:2]
    return {
        **(image.extra or {}),
        "source_id": image.source_id,
        "label": image.label,
        "label_index": classes.get(image.label),
        "image": data,
        "image_format": image_format,
        "width": width,
        "height": height,
        "crop_box": None if image.crop_box is None else list(image.crop_box),
        "scale": image.scale,
    }


class EncodeRowFn(beam.DoFn):
    """``StylisedImage`` → an ``augmented`` row; an image that cannot be encoded → ``rejected``. ``classes``: the
    job's sorted class list (``label_index`` is a label's position in it)."""

    def __init__(self, image_format: str, stylizer_digest: str, classes: list[str] = ()):
        self.image_format = image_format
        self.stylizer_digest = stylizer_digest
        self.classes = {label: i for i, label in enumerate(classes)}
        self.written = Metrics.counter("stylebeam", "rows_encoded")

    def process(self, item: StylisedImage):
        task = item.task
        image = task.image or DecodedImage(task.source_id, task.label, task.pixels)
        pixels = item.pixels if image.size is None else item.pixels[: image.size[1], : image.size[0]]
        try:
            data = encode_image(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), self.image_format)
        except (OSError, ValueError) as exc:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(task.source_id, "encode", "encode_error", str(exc)))
            return
        plan = task.plan
        self.written.inc()
        yield {
            **image_row(image, pixels, data, self.image_format, self.classes),
            "id": f"{task.source_id}#{plan.index}",
            "style": plan.style,
            "style_weights": None if plan.on_paintings else [float(w) for w in plan.code],
            "style_ids": list(plan.style_ids) if plan.style_ids else None,
            "style_mix": list(plan.style_mix) if plan.style_mix else None,
            "style_embedding": [float(v) for v in item.code] if plan.on_paintings else None,
            "alpha": plan.alpha,
            "seed": task.seed,
            "stylizer": self.stylizer_digest,
        }


ORIGINAL_STYLE = "none"


class OriginalRowFn(beam.DoFn):
    """``DecodedImage`` → its ``augmented`` row as it went into the stylizer (``--include-originals``): style
    ``none``, alpha 0, id ``{source_id}#none``, the same geometry and columns as its stylised rows."""

    def __init__(self, image_format: str, seed: int, classes: list[str] = ()):
        self.image_format = image_format
        self.seed = seed
        self.classes = {label: i for i, label in enumerate(classes)}

    def process(self, image: DecodedImage):
        pixels = np.ascontiguousarray(image.image)
        try:
            data = encode_image(Image.fromarray(pixels, "RGB"), self.image_format)
        except (OSError, ValueError) as exc:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(image.source_id, "encode", "encode_error", str(exc)))
            return
        yield {
            **image_row(image, pixels, data, self.image_format, self.classes),
            "id": f"{image.source_id}#{ORIGINAL_STYLE}",
            "style": ORIGINAL_STYLE,
            "style_weights": None,
            "style_ids": None,
            "style_mix": None,
            "style_embedding": None,
            "alpha": 0.0,
            "seed": record_seed(self.seed, image.source_id),
            "stylizer": None,
        }


class Stylize(beam.PTransform):
    """``DecodedImage``s → ``{"rows": augmented rows, "rejected": rejected rows}``.

    ``paintings``: for an arbitrary-style checkpoint, the ``EmbedPaintings`` output (``(id, embedding)`` pairs);
    ``style_names`` is then unused. ``share_model_across_processes``: one stylizer per machine for all its worker
    processes (default: on CUDA only; see ``transforms.inference``). ``classes``: the job's sorted class list
    (``label_index``); ``include_originals``: each image once more, unstylised (``OriginalRowFn``). ``balances``:
    the ledgers ``WriteSummary`` checks (every planned task, and every original, is a row or a rejected row).
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
        share_model_across_processes: bool | None = None,
        classes: list[str] = (),
        include_originals: bool = False,
    ):
        super().__init__()
        self.paintings = paintings
        self.plan = PlanStylesFn(policy, alpha_range, style_names, seed)
        arbitrary = paintings is not None
        self.handler = StylizeModelHandler(
            checkpoint, batch_size, device, precision, cpu_threads, compile, arbitrary, share_model_across_processes
        )
        self.encode = EncodeRowFn(image_format, stylizer_digest, classes)
        self.originals = OriginalRowFn(image_format, seed, classes) if include_originals else None

    def expand(self, images):
        if self.paintings is None:
            planned = images | "PlanStyles" >> beam.ParDo(self.plan).with_outputs(REJECTED, main="tasks")
        else:
            side = beam.pvalue.AsList(self.paintings)
            planned = images | "PlanStyles" >> beam.ParDo(self.plan, side).with_outputs(REJECTED, main="tasks")
        stylised = planned.tasks | "StylizeBatches" >> RunInferenceWithRetry(self.handler, self.encode)
        rejected = (planned[REJECTED], stylised["rejected"])
        rows = stylised["rows"]
        # Every planned task is a row or a rejected row (the stylize and encode stages both reject into it).
        accounted = (rows, stylised["rejected"])
        balances = (Balance("stylised images", "between the stylizer and the writer", (planned.tasks,), accounted),)
        if self.originals is not None:
            originals = images | "Originals" >> beam.ParDo(self.originals).with_outputs(REJECTED, main="rows")
            both = (rows, originals.rows)
            rows = both | "WithOriginals" >> beam.Flatten()
            rejected += (originals[REJECTED],)
            balances += (
                Balance("originals", "before the writer", (images,), (originals.rows, originals[REJECTED])),
                Balance("rows", "between the encoders and the writer", both, (rows,)),
            )
        return {"rows": rows, "rejected": rejected | "StylizeRejected" >> beam.Flatten(), "balances": balances}


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
            return load_runner(self.checkpoint, arbitrary=True, device=self.device, precision=self.precision)[0]

        # Its own runner (a predictor copy costs ~10 MB) rather than the stylize step's, which may run elsewhere.
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
