"""Beam's ``RunInference`` with the project's ``ModelHandler``s, and its dead letters as rejected rows.

``ProcessModelHandler`` is what the jobs' handlers (``transforms.stylize.StylizeModelHandler``,
``transforms.embed.EmbeddingModelHandler``) have in common:

- batches of exactly ``batch_size`` (``batch_elements_kwargs``: Beam's ``BatchElements`` with min = max; its
  ``max_batch_weight`` is broken in Beam 2.77 and not needed here);
- the model built once per worker process and shared by its threads (the local runner runs one worker thread per
  core; Beam's ``RunInference`` already shares one model between the threads of one step, and ``load_model``
  shares it between the steps too, the retry below included);
- ``share_model_across_processes``: one model per machine, served to every worker process of the machine by
  Beam's ``multi_process_shared``. It helps on GPU workers (Dataflow starts one SDK process per vCPU; each would
  otherwise hold its own copy and CUDA context on the one GPU), not on CPU, where every process computing on its
  own copy is what scales. Default: on when the workers' device is CUDA, off on CPU.

``RunInferenceWithRetry`` keeps one bad element from sinking its batch. Beam 2.77's
``RunInference.with_exception_handling()`` gives a failed batch as a whole (``failed_inferences``: ``(batch,
(exception type, repr, traceback lines))``), so a failed batch is retried one element at a time by a second
``RunInference`` over the same model, and only what fails alone becomes a rejected row (the handler's ``stage``, a
reason from the exception type, the exception's message). The results of each of the two steps become rows
(``rows_fn``) before they join: on the FnApiRunner a ``Flatten`` always materialises its inputs, so joining the
model's outputs (whole pixel arrays) ahead of the rows made every row wait for the last batch of the job, and every
output image be pickled and unpickled once more; joined as rows, the model's step, the row building and the writer
after it stay one fused stage.
"""

import copy
import logging
import threading
import uuid
import weakref
from collections.abc import Callable

import apache_beam as beam
import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms.schemas import rejected_row

LOGGER = logging.getLogger(__name__)
REJECTED = "rejected"
# What RunInference turns into dead letters: errors of the computation (torch raises RuntimeError, out-of-memory
# included; NonFiniteOutput is one) and Python's MemoryError. Anything else is a bug and fails the job, as it should.
INFERENCE_ERRORS = (RuntimeError, MemoryError)

_MODELS: "weakref.WeakValueDictionary[str, object]" = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def load_once_per_process(key: str, build: Callable[[], object]) -> object:
    """The process's model for ``key``, built on first use (one thread builds, the others wait for it). Kept while
    some step holds it."""
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = build()
            _MODELS[key] = model
        return model


class ProcessModelHandler(ModelHandler):
    """A ``ModelHandler`` whose model is built once per process; subclasses say how (``model_key``,
    ``build_model``), how to run a batch (``run_inference``) and name their ``stage`` and metrics namespace."""

    stage = "inference"

    def __init__(self, batch_size: int, device: str = "auto", share_across_processes: bool | None = None):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.batch_size = batch_size
        self.device = device
        self.share_across_processes = share_across_processes

    def model_key(self) -> str:
        """What identifies the built model within a process (every setting ``build_model`` reads)."""
        raise NotImplementedError(type(self))

    def build_model(self):
        raise NotImplementedError(type(self))

    def load_model(self):
        return load_once_per_process(self.model_key(), self.build_model)

    def share_model_across_processes(self) -> bool:
        if self.share_across_processes is not None:
            return self.share_across_processes
        # Asked on the worker, where the device is; the launcher asks too, only for timeouts, which are not used.
        return self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())

    def one_at_a_time(self) -> "ProcessModelHandler":
        """This handler with batches of one element: the same model (same key), for the retry."""
        single = copy.copy(self)
        single._batching_kwargs = {"min_batch_size": 1, "max_batch_size": 1}
        return single

    def source_id(self, element) -> str:
        """The id a rejected row of ``element`` carries."""
        raise NotImplementedError(type(self))

    def rejection_reason(self, error_type: type, message: str = "") -> str:
        """The reason slug of a rejected row, from the exception's type and message."""
        return "inference_error"


def exception_message(error_type: type, traceback_lines: list[str]) -> str:
    """The message of the exception a dead letter carries (Beam gives its type, repr and formatted traceback)."""
    name = error_type.__qualname__
    if error_type.__module__ not in ("builtins", "__main__"):
        name = f"{error_type.__module__}.{name}"
    for line in reversed(traceback_lines):
        if line.startswith(f"{name}: "):
            return line[len(name) + 2 :].strip()
    return name


def _elements_to_retry(failed):
    batch, (error_type, _, traceback_lines) = failed
    LOGGER.warning(
        "batch of %d failed (%s: %s); retrying one by one",
        len(batch),
        error_type.__name__,
        exception_message(error_type, traceback_lines),
    )
    return batch


class _RejectFailed(beam.DoFn):
    """A batch that failed alone → one rejected row per element (``{stage}_failures`` counted)."""

    def __init__(self, handler: ProcessModelHandler):
        self.handler = handler
        self.failures = Metrics.counter("stylebeam", f"{handler.stage}_failures")

    def process(self, failed):
        batch, (error_type, _, traceback_lines) = failed
        detail = exception_message(error_type, traceback_lines)
        reason = self.handler.rejection_reason(error_type, detail)
        for element in batch:
            self.failures.inc()
            yield rejected_row(self.handler.source_id(element), self.handler.stage, reason, detail)


class RunInferenceWithRetry(beam.PTransform):
    """Elements → ``{"rows": what ``rows_fn`` yields from the results, "rejected": rejected rows}``.

    ``RunInference(handler)`` in batches of ``batch_size``; a batch that raises is retried one element at a time
    through the same model; an element that still raises becomes a rejected row. ``rows_fn``: a ``DoFn`` from one
    result of the handler's ``run_inference`` to rows (main output) and rejected rows (output tagged
    ``"rejected"``), applied after each of the two steps (module docstring: why not after their join).
    """

    def __init__(self, handler: ProcessModelHandler, rows_fn: beam.DoFn):
        super().__init__()
        self.handler = handler
        self.rows_fn = rows_fn
        # Both RunInference steps name the same model: one copy per machine when it is shared across processes.
        self.model_identifier = f"stylebeam-{handler.stage}-{uuid.uuid4().hex}"

    def expand(self, elements):
        results, failed = elements | "RunInference" >> RunInference(
            self.handler, model_identifier=self.model_identifier
        ).with_exception_handling(exc_class=INFERENCE_ERRORS)
        retried, failed_alone = (
            failed.failed_inferences
            | "ElementsOfFailedBatches" >> beam.FlatMap(_elements_to_retry)
            | "RetryOneByOne"
            >> RunInference(
                self.handler.one_at_a_time(), model_identifier=self.model_identifier
            ).with_exception_handling(exc_class=INFERENCE_ERRORS)
        )
        rows = results | "Rows" >> beam.ParDo(self.rows_fn).with_outputs(REJECTED, main="rows")
        retried_rows = retried | "RetriedRows" >> beam.ParDo(self.rows_fn).with_outputs(REJECTED, main="rows")
        rejected = failed_alone.failed_inferences | "Rejected" >> beam.ParDo(_RejectFailed(self.handler))
        return {
            "rows": (rows.rows, retried_rows.rows) | "AllRows" >> beam.Flatten(),
            "rejected": (rejected, rows[REJECTED], retried_rows[REJECTED]) | "AllRejected" >> beam.Flatten(),
        }
