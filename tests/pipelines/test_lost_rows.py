"""No job loses rows silently: ``WriteSummary``'s ledgers (``transforms.io.Balance``) against a stage that drops or
duplicates an element, on its own and in augment end to end."""

import json
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.testing.test_pipeline import TestPipeline

from models.common.errors import IncompleteOutputError
from pipelines import augment
from pipelines.cli import run_main
from tests.conftest import encode, make_image
from transforms import stylize
from transforms.io import Balance, WriteSummary


def run_summary(tmp_path, beam_options, came_in, came_out):
    with TestPipeline(options=beam_options) as pipeline:
        into = pipeline | "In" >> beam.Create(came_in[:1])
        more = pipeline | "More" >> beam.Create(came_in[1:])  # a ledger adds up several PCollections on each side
        out = pipeline | "Out" >> beam.Create(came_out)
        rejected = pipeline | "Rejected" >> beam.Create([])
        balance = Balance("widgets", "between here and there", (into, more), (out, rejected))
        pipeline | WriteSummary(str(tmp_path), {"widgets_in": into}, facts={"job": "test"}, balances=(balance,))


def test_a_balanced_ledger_writes_the_summary_without_its_own_counts(tmp_path, beam_options):
    run_summary(tmp_path, beam_options, ["a", "b", "c"], ["a", "b", "c"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {"output": str(tmp_path), "job": "test", "counts": {"widgets_in": 1}}


@pytest.mark.parametrize(
    ("came_out", "message"),
    [
        (["a"], "2 of 3 widgets were lost between here and there; the output is incomplete"),
        (["a", "b", "c", "c"], "1 more widgets came out than went in (4 for 3) between here and there"),
    ],
)
def test_a_ledger_that_does_not_add_up_fails_the_job_and_writes_no_summary(tmp_path, beam_options, came_out, message):
    with pytest.raises(Exception) as raised:  # the runner wraps what a worker raised
        run_summary(tmp_path, beam_options, ["a", "b", "c"], came_out)
    assert message in str(raised.value)
    assert not (tmp_path / "summary.json").exists()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(["cats/a.png", "cats/b.png", "dogs/c.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(make_image(40, 32, seed=i)))
    return root


def run_augment(photos, output, stylizer, *extra) -> int:
    argv = [
        f"--input={photos}",
        f"--output={output}",
        f"--stylizer={stylizer}",
        "--styles=all",
        "--image-size=32",
        "--min-side=16",
        "--batch-size=2",
        "--num-shards=1",
        "--no-progress",
        *extra,
    ]
    return run_main(augment.run, argv)


@pytest.mark.slow
def test_a_complete_augment_run_balances(photos, two_style_stylizer, tmp_path, capsys):
    assert run_augment(photos, tmp_path / "out", two_style_stylizer, "--include-originals") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["rows_written"] == 3 * 2 + 3
    assert "tasks_planned: 6" in capsys.readouterr().err


def drop_image_b(process):
    """``process`` of a DoFn, with what it would make of ``cats/b.png`` dropped without a trace."""

    def dropping(self, element, *args, **kwargs):
        source_id = element.task.source_id if isinstance(element, stylize.StylisedImage) else element.source_id
        if source_id.endswith("b.png"):
            return
        yield from process(self, element, *args, **kwargs)

    return dropping


def test_stylised_images_lost_before_the_writer_fail_the_run_in_one_line(
    photos, two_style_stylizer, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(stylize.EncodeRowFn, "process", drop_image_b(stylize.EncodeRowFn.process))
    out = tmp_path / "out"
    assert run_augment(photos, out, two_style_stylizer, "--include-originals") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: 2 of 6 stylised images were lost between the stylizer and the writer; the output is incomplete "
        "(no summary.json was written: re-run with --overwrite)"
    ]
    assert not (out / "summary.json").exists()
    assert list((out / "data").glob("augmented-*.parquet"))  # what was written stays, as an unfinished run


@pytest.mark.slow
def test_originals_lost_before_the_writer_fail_the_run(photos, two_style_stylizer, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stylize.OriginalRowFn, "process", drop_image_b(stylize.OriginalRowFn.process))
    out = tmp_path / "out"
    assert run_augment(photos, out, two_style_stylizer, "--include-originals") == 2
    err = capsys.readouterr().err
    assert "error: 1 of 3 originals were lost before the writer; the output is incomplete" in err
    assert "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_the_error_is_found_in_the_text_of_an_exception_from_another_process(tmp_path):
    from pipelines.beam_job import output_failure

    wrapped = RuntimeError(
        "Pipeline failed: models.common.errors.IncompleteOutputError: 4 of 14 stylised images were lost between "
        "the stylizer and the writer; the output is incomplete [while running 'WriteSummary/WriteJson']"
    )
    failure = output_failure(wrapped, str(tmp_path))
    assert isinstance(failure, IncompleteOutputError)
    assert str(failure) == (
        "4 of 14 stylised images were lost between the stylizer and the writer; the output is incomplete"
    )


def slow_flushes(monkeypatch):
    """Beam's timed flush of a worker's output buffer (``data_plane.TimeBasedBufferingClosableOutputStream``, every
    second) made to take 0.5 s between reading the buffer and clearing it, as a flusher thread preempted on a loaded
    machine does: an element the bundle writes meanwhile is dropped unless nothing flushes on a timer."""
    from apache_beam.runners.worker import data_plane

    real_init = data_plane.TimeBasedBufferingClosableOutputStream.__init__

    def init(self, close_callback=None, flush_callback=None, *args, **kwargs):
        def flush(data):
            if isinstance(threading.current_thread(), data_plane.PeriodicThread):
                time.sleep(0.5)
            return flush_callback(data)

        real_init(self, close_callback, flush if flush_callback else None, *args, **kwargs)

    monkeypatch.setattr(data_plane.TimeBasedBufferingClosableOutputStream, "__init__", init)


def trickle(count: int):
    for i in range(count):
        time.sleep(0.3)
        yield i


def test_the_local_threaded_runner_loses_nothing_when_a_timed_flush_is_slow(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.beam_job import local_runner

    slow_flushes(monkeypatch)
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    runner, run_options = local_runner(options)
    with beam.Pipeline(runner=runner, options=run_options) as pipeline:
        # one element every 0.3 s for 3 s, across a stage boundary (the group): several timed flushes would fall mid-way
        counted = (
            pipeline
            | beam.Create([10])
            | "Trickle" >> beam.FlatMap(trickle)
            | beam.Map(lambda i: (i % 2, i))
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, values: len(values))
        )
        assert_that(counted, equal_to([5, 5]))
    assert options.view_as(DirectOptions).direct_running_mode == "multi_threading"  # the caller's options untouched


def slow_input_writes(monkeypatch):
    """The runner sending a stage its inputs, in chunks of ~10 MB, made to take 0.3 s per chunk, as on a loaded machine
    or with ~800 MB of pixels: a timed flush of that buffer (every second, itself slowed by ``slow_flushes``) then
    falls between chunks and drops the chunk written while it runs."""
    from apache_beam.runners.worker import data_plane

    real_write = data_plane.SizeBasedBufferingClosableOutputStream.write

    def write(self, data, *rest):
        if len(data) > 5_000_000:  # only the runner writes whole chunks; workers write one element at a time
            time.sleep(0.3)
        return real_write(self, data, *rest)

    monkeypatch.setattr(data_plane.SizeBasedBufferingClosableOutputStream, "write", write)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_threading", "multi_processing"])
def test_the_local_runner_loses_nothing_it_sends_a_stage_when_a_timed_flush_is_slow(monkeypatch, mode):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.beam_job import local_runner

    slow_flushes(monkeypatch)
    slow_input_writes(monkeypatch)
    options = PipelineOptions(["--runner=FnApiRunner", f"--direct_running_mode={mode}", "--direct_num_workers=2"])
    runner, run_options = local_runner(options)
    with beam.Pipeline(runner=runner, options=run_options) as pipeline:
        # 150 MB across a stored Flatten: the runner writes the next stage ~8 chunks per worker, 0.3 s apart
        big = pipeline | beam.Create(list(range(150))) | beam.Map(lambda i: bytes(1_000_000))
        small = pipeline | "Small" >> beam.Create([b""])
        counted = (big, small) | beam.Flatten() | beam.Map(lambda _: 1) | beam.CombineGlobally(sum)
        assert_that(counted, equal_to([151]))  # Beam's own runner, threads: 89 and 98 of 151 in two runs
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 1000  # Beam's default back after the run
