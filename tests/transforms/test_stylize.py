"""``Stylize`` on its own: decoded images → one encoded row per planned output, the same bytes as the runner's."""

import io

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from models.style.checkpoint import load_stylizer, save_stylizer
from models.style.policy import parse_styles
from models.style.runner import StylizerRunner, load_runner
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from tests.conftest import make_image
from transforms.decode import DecodedImage
from transforms.stylize import Stylize

STYLES = ["dots", "lines"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1))
    path = tmp_path_factory.mktemp("stylize") / "two.safetensors"
    digest = save_stylizer(str(path), model, STYLES)
    return str(path), digest


def test_every_planned_output_is_a_row_with_the_runners_pixels(checkpoint, beam_options):
    path, digest = checkpoint
    images = [
        DecodedImage("a.png", "cats", np.asarray(make_image(32, 24, seed=1))),
        DecodedImage("b.png", None, np.asarray(make_image(24, 24, seed=2))),
    ]
    # png: lossless, so the row's pixels are the runner's exactly
    options = {"batch_size": 2, "device": "cpu", "precision": "fp32", "image_format": "png"}
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), **options)
    model, _ = load_stylizer(path)
    runner = StylizerRunner(model, torch.device("cpu"), torch.float32, batch_size=2)
    expected = {
        f"{image.source_id}#{n}": runner(image.pixels[None], np.eye(2, dtype=np.float32)[n : n + 1], np.ones(1))[0]
        for image in images
        for n in range(2)
    }

    def summary(row):
        same = bool(np.array_equal(np.asarray(Image.open(io.BytesIO(row["image"]))), expected[row["id"]]))
        keys = ("id", "source_id", "label", "style", "stylizer", "width", "height")
        return (*(row[key] for key in keys), same)

    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(images) | stylize
        assert_that(
            out["rows"] | beam.Map(summary),
            equal_to(
                [
                    ("a.png#0", "a.png", "cats", "dots", digest, 32, 24, True),
                    ("a.png#1", "a.png", "cats", "lines", digest, 32, 24, True),
                    ("b.png#0", "b.png", None, "dots", digest, 24, 24, True),
                    ("b.png#1", "b.png", None, "lines", digest, 24, 24, True),
                ]
            ),
            label="rows",
        )
        assert_that(out["rejected"], equal_to([]), label="rejected")


def test_memory_running_out_in_a_forward_pass_is_a_rejected_row(checkpoint, beam_options, monkeypatch):
    """A record the stylizer has no memory for is a rejected row with a reason, not a crash."""
    path, digest = checkpoint

    def no_memory(self, pixels, style_weights, alpha):
        raise MemoryError

    monkeypatch.setattr(StylizerRunner, "__call__", no_memory)
    images = [DecodedImage("a.png", None, np.asarray(make_image(32, 24, seed=1)))]
    options = {"batch_size": 2, "device": "cpu", "precision": "fp32"}
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), **options)
    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(images) | stylize
        assert_that(out["rows"], equal_to([]), label="rows")
        assert_that(
            out["rejected"] | beam.Map(lambda r: (r["source_id"], r["stage"], r["error"].split(":")[0])),
            equal_to([("a.png", "stylize", "out_of_memory")] * 2),
            label="rejected",
        )


def metrics(result, namespace: str) -> tuple[dict, dict]:
    """A finished pipeline's counters (summed over steps) and the largest value of each distribution of
    ``namespace``, by name."""
    from apache_beam.metrics.metric import MetricsFilter

    queried = result.metrics().query(MetricsFilter().with_namespace(namespace))

    def value(metric):
        return metric.committed if metric.committed is not None else metric.attempted

    counters, largest = {}, {}
    for counter in queried["counters"]:  # one result per step: the retry step reports under the same names
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value(counter)
    for distribution in queried["distributions"]:
        name = distribution.key.metric.name
        largest[name] = max(largest.get(name, 0), value(distribution).max)
    return counters, largest


def test_a_task_that_fails_is_rejected_alone_and_its_batch_mates_are_written(checkpoint, beam_options):
    """A 3x3 photo is smaller than the network's reflection padding: its forward pass raises. Its batch fails in
    RunInference, is retried one task at a time, and only its two tasks become rejected rows (stage, reason, the
    exception's message); the handler's metrics say so under its namespace, the project's counters under theirs."""
    path, digest = checkpoint
    images = [
        DecodedImage("a.png", None, np.asarray(make_image(32, 24, seed=1))),
        DecodedImage("tiny.png", None, np.full((3, 3, 3), 128, np.uint8)),
        DecodedImage("b.png", None, np.asarray(make_image(24, 24, seed=2))),
    ]
    options = {"batch_size": 6, "device": "cpu", "precision": "fp32", "image_format": "png"}
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), **options)

    pipeline = TestPipeline(options=beam_options)
    out = pipeline | beam.Create(images) | stylize
    rows = ["a.png#0", "a.png#1", "b.png#0", "b.png#1"]
    assert_that(out["rows"] | beam.Map(lambda row: row["id"]), equal_to(rows), label="rows")

    def rejected(row):
        return row["source_id"], row["stage"], row["reason"], "Padding size" in row["error"]

    expected = [("tiny.png", "stylize", "inference_error", True)] * 2
    assert_that(out["rejected"] | beam.Map(rejected), equal_to(expected), label="rejected")
    result = pipeline.run()
    result.wait_until_finish()

    counters, distributions = metrics(result, "stylebeam.stylize")
    assert counters["num_inferences"] == 4  # Beam's own metrics, under the handler's namespace
    assert counters["failed_batches_counter"] == 3  # the batch of six, then the tiny photo's two tasks alone
    assert distributions["inference_request_batch_size"] == 1  # a and b were in the failed batch: retried alone
    counters, _ = metrics(result, "stylebeam")
    assert counters["images_stylised"] == 4 and counters["stylize_failures"] == 2 and counters["rows_encoded"] == 4


def test_the_handler_batches_by_the_jobs_batch_size_and_retries_with_the_same_model():
    from apache_beam.ml.inference.base import ModelHandler

    from transforms.stylize import StylizeModelHandler

    handler = StylizeModelHandler("two.safetensors", batch_size=5, device="cpu", precision="fp32")
    assert isinstance(handler, ModelHandler)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 5, "max_batch_size": 5}
    single = handler.one_at_a_time()
    assert single.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 1}
    assert single.model_key() == handler.model_key()  # the retry runs the same runner (same forward size)
    assert not handler.share_model_across_processes()  # CPU: a model per process
    assert (
        StylizeModelHandler("x", 5, "cuda", "auto", share_across_processes=False).share_model_across_processes()
        is False
    )
    assert handler.get_metrics_namespace() == "stylebeam.stylize"


def test_worker_threads_share_one_runner(checkpoint, monkeypatch):
    """The local job runs one worker thread per core: they (and the retry step) share one runner per process."""
    from apache_beam.options.pipeline_options import PipelineOptions

    import transforms.stylize

    path, digest = checkpoint
    loads = []

    def counted(*args, **kwargs):
        loads.append(args)
        return load_runner(*args, **kwargs)

    monkeypatch.setattr(transforms.stylize, "load_runner", counted)
    images = [DecodedImage(f"{i}.png", None, np.asarray(make_image(24, 24, seed=i))) for i in range(8)]
    # batch size 7: a model key no other test in this process built
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), batch_size=7, device="cpu")
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    with TestPipeline(options=options) as pipeline:
        out = pipeline | beam.Create(images) | beam.Reshuffle() | stylize
        assert_that(out["rows"] | beam.combiners.Count.Globally(), equal_to([16]))
    assert len(loads) == 1


@pytest.mark.slow
def test_a_model_shared_across_processes_gives_the_same_rows(checkpoint, beam_options):
    """share_model_across_processes (on for GPU workers): the runner lives in one server process per machine and
    the handler reaches it only through method calls (Beam's multi_process_shared proxy); the rows are the runner's
    pixels and a failing task is still rejected alone."""
    path, digest = checkpoint
    images = [DecodedImage(f"{i}.png", None, np.asarray(make_image(24, 16, seed=i))) for i in range(2)]
    images.append(DecodedImage("tiny.png", None, np.full((3, 3, 3), 9, np.uint8)))
    options = {"batch_size": 4, "device": "cpu", "precision": "fp32", "image_format": "png"}
    stylize = Stylize(
        path, STYLES, digest, parse_styles("all"), (1.0, 1.0), share_model_across_processes=True, **options
    )
    assert stylize.handler.share_model_across_processes()
    runner = StylizerRunner(load_stylizer(path)[0], torch.device("cpu"), torch.float32)
    expected = {
        f"{image.source_id}#{n}": runner(image.pixels[None], np.eye(2, dtype=np.float32)[n : n + 1], np.ones(1))[0]
        for image in images[:2]
        for n in range(2)
    }

    def same(row):
        return row["id"], bool(np.array_equal(np.asarray(Image.open(io.BytesIO(row["image"]))), expected[row["id"]]))

    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(images) | stylize
        assert_that(out["rows"] | beam.Map(same), equal_to([(key, True) for key in expected]), label="rows")
        rejected = out["rejected"] | beam.Map(lambda row: (row["source_id"], row["reason"]))
        assert_that(rejected, equal_to([("tiny.png", "inference_error")] * 2), label="rejected")


def test_the_stylised_pixels_reach_the_encoder_without_a_join(checkpoint):
    """On the FnApiRunner a Flatten materialises its inputs and ends the fused stage: the model's outputs (whole
    images) must be encoded on each of RunInference's two steps, and only the encoded rows joined."""
    path, digest = checkpoint
    pipeline = beam.Pipeline()
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), device="cpu", precision="fp32")
    _ = pipeline | beam.Create([]) | "Stylize" >> stylize
    components = pipeline.to_runner_api().components
    # A composite lists its leaf's outputs as its own: only leaves (no subtransforms) say which step made a PCollection.
    leaves = {name: t for name, t in components.transforms.items() if not t.subtransforms}
    producer = {output: name for name, t in leaves.items() for output in t.outputs.values()}
    flattens = [t for t in components.transforms.values() if t.spec.urn == "beam:transform:flatten:v1"]
    joined = {components.transforms[producer[pcoll]].unique_name for t in flattens for pcoll in t.inputs.values()}
    assert any(name.endswith("StylizeBatches/Rows/ParDo(EncodeRowFn)") for name in joined), sorted(joined)
    assert not [name for name in joined if "RunInference" in name or "RetryOneByOne" in name], sorted(joined)
