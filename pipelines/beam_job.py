"""The one entry of the Beam jobs (augment, collect, clean, embed): parse → check → build → run → report.

A job module describes itself as a ``BeamJob``: its flags (a ``JobOptions`` class), the tables it writes and a
``build`` that wires its transforms and returns what to write (``JobOutputs``). ``run_beam_job`` does the rest the
same way for every job: the job's flags are parsed by its own argparse parser (a real ``--help``, one-line usage
errors) and only the rest goes to Beam, so Beam never warns about flags it does not know; local paths are refused
on remote runners; the output folder is checked (writable, and never a mix of two runs: ``prepare_output``); the
tables, the dead letters (``rejected``) and ``summary.json`` are written; the finished job is reported on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.common.errors import IncompleteOutputError, OutputUnwritableError, StylebeamError, UsageError
from models.common.files import STORAGE_ERRNOS
from pipelines.cli import (
    NO_PROGRESS_HELP,
    ArgumentParser,
    check_apart,
    is_within,
    non_negative_int,
    resolved_path,
    split_known_args,
)

# Beam, torch and the transforms are imported where a job runs, not here: a job's ``--help`` needs none of them.
if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.io import OutputFolder

BEAM_HELP_EPILOG = (
    "Every standard Beam pipeline option is accepted too, e.g. --runner=DataflowRunner --project P "
    "--region R --temp_location gs://B/tmp --setup_file ./setup.py. Without --runner the job runs "
    "locally on FnApiRunner (add --direct_running_mode=multi_processing --direct_num_workers=N for N processes)."
)
LOGGER = logging.getLogger(__name__)
# Runners whose workers share this machine's filesystem.
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner")


class JobOptions:
    """Base of a job's own flags. ``_add_argparse_args(parser)`` adds them to the job's argparse parser (the hook
    has Beam's name so a job's options read as Beam users expect), but Beam never parses them: they are no
    ``PipelineOptions``, so jobs that share ``--input`` import side by side and Beam warns only about flags that
    really are unknown. Every job has ``--output`` (the folder it writes); the other flags the launcher reads are
    named in its ``BeamJob``."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError


@dataclass
class JobOutputs:
    """What a job's ``build`` hands back to be written.

    ``tables``: table prefix → PCollection of rows (written as ``OUT/{prefix}-*.parquet`` with its schema);
    ``rejected``: the PCollections of rejected rows of every stage; ``counted``: summary key → PCollection counted
    by elements; ``tallies``: PCollections of ``(summary key, amount)`` pairs; ``facts``: settings for the summary;
    ``written``: what the job's other writes return (augment's preview): ``summary.json`` waits for them too.
    ``schemas``: a table's schema for this run where it is not the job's fixed one (augment's carried columns).
    ``progress``: ``(PCollection, total or None, unit)``, what the progress line counts on a local run (default:
    the first table's rows, with no total). ``balances``: ``transforms.io.Balance`` ledgers checked before the
    summary is written (what went into a stage came out as rows or rejected rows); a gap fails the job.
    """

    tables: dict
    rejected: tuple
    counted: dict = field(default_factory=dict)
    tallies: tuple = ()
    facts: dict = field(default_factory=dict)
    written: tuple = ()
    schemas: dict = field(default_factory=dict)
    progress: tuple | None = None
    balances: tuple = ()


@dataclass(frozen=True)
class JobContext:
    """What the launcher knows that a ``build`` may need: Beam's options, the torch threads each worker process
    should use on CPU, what the job's ``check`` found while validating (augment's stylizer and input) and what its
    ``prepare`` step returned (collect's spool)."""

    options: PipelineOptions
    cpu_threads: int = 0
    prepared: object = None
    checked: object = None


@dataclass(frozen=True)
class BeamJob:
    """A Beam job: ``python -m pipelines.{name}``.

    ``schemas``: its tables' prefixes and schemas (``rejected`` is every job's and added here); ``build(pipeline,
    opts, context) -> JobOutputs``; ``describe(summary) -> str``, the line printed at the end. Optional steps, in
    the order they run: ``worker_paths(opts)`` names the paths workers open (flag → path); then the output folder
    is checked; ``check(opts)`` validates flags and what they name (what it returns is ``context.checked``, so
    ``build`` wires what was validated without looking again); ``prepare(opts)`` runs on the launcher before the
    pipeline is built (``None`` from it: nothing more to run). ``replaces_own_output(opts)``: true where this run
    replaces the job's own earlier output without ``--overwrite`` (augment's no-flag demo run; collect's scrape,
    whose tables are always rebuilt from its spool).

    What the launcher reads from the parsed flags, by the flags' ``dest`` names: ``reads``, the flags naming what the
    job reads (a path, a glob or a list of them; kept apart from ``--output``); ``device``, the flag of where its
    models run (checked on a local runner); ``cpu_threads``, the flag of torch threads per worker process.
    """

    name: str
    options: type[JobOptions]
    schemas: dict
    build: Callable
    describe: Callable[[dict], str]
    check: Callable | None = None
    worker_paths: Callable | None = None
    prepare: Callable | None = None
    replaces_own_output: Callable | None = None
    reads: tuple[str, ...] = ("input",)
    device: str | None = None
    cpu_threads: str | None = None

    @property
    def description(self) -> str:
        return sys.modules[self.build.__module__].__doc__.split("\n\n")[0]


def parse_job_args(job: BeamJob, argv: list[str] | None) -> tuple[argparse.Namespace, PipelineOptions]:
    """Split ``argv`` into the job's flags (parsed and validated here) and Beam's options (everything else).

    No ``--runner`` means ``FnApiRunner``: Beam 2.77's DirectRunner first tries to download the Prism runner,
    which a machine offline cannot do.
    """
    parser = ArgumentParser(
        prog=f"python -m pipelines.{job.name}",
        description=job.description,
        epilog=BEAM_HELP_EPILOG,
        allow_abbrev=False,  # a prefix of a Beam flag must not be taken for one of ours
    )
    job.options._add_argparse_args(parser)
    outputs = parser.add_argument_group("output folder")
    outputs.add_argument(
        "--num-shards",
        type=non_negative_int,
        default=0,
        help="files per output table; 0 lets the runner choose (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    outputs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's output in --output (only this job's tables, rejected rows, summary and "
        "temporary files are deleted; other files stay)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    opts, beam_argv = split_known_args(parser, argv, unknown_beam_flags)  # --help answers here, before Beam loads
    from apache_beam.options.pipeline_options import PipelineOptions

    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_argv):
        beam_argv.append("--runner=FnApiRunner")
        if not any(arg.startswith("--direct_running_mode") for arg in beam_argv):
            # One in-process worker thread per core, each running its models on one torch thread: the 256² Magenta
            # job went from 16 to 21 images/s on 2 cores against one worker with 2 torch threads (intra-op threads
            # scale poorly on these small convs; decode/encode run beside the model instead of between its calls).
            beam_argv += ["--direct_running_mode=multi_threading", f"--direct_num_workers={os.cpu_count() or 1}"]
    return opts, PipelineOptions(beam_argv)


def unknown_beam_flags(beam_argv: list[str]) -> list[str]:
    """The arguments in ``beam_argv`` that no Beam ``PipelineOptions`` takes (a typo, another command's flag, a
    path without its flag), found by Beam's own parser. Beam itself only warns about them and runs on, which turns
    ``--stlyes all`` or a bare ``photos/`` into a silent run with the defaults."""
    return beam_parser().parse_known_args(beam_argv)[1]


def beam_parser() -> argparse.ArgumentParser:
    """Beam's parser of every ``PipelineOptions`` subclass, as Beam builds it; a bad value of a Beam flag is a
    one-line ``UsageError`` instead of Beam's 300-line usage."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers = []
    with _quiet("apache_beam.options.pipeline_options"):
        PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    parsers[0].error = _beam_usage_error
    return parsers[0]


def _beam_usage_error(message: str):
    raise UsageError(f"{message} (a Beam pipeline option)")


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_beam_job(job: BeamJob, argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    """Run ``job`` with ``argv`` to the end; return the ``PipelineResult`` (``None`` when ``prepare`` says there is
    nothing to run). Every refusal is a ``StylebeamError`` raised before anything runs."""
    started = time.perf_counter()
    opts, options = parse_job_args(job, argv)
    import apache_beam as beam

    from transforms.io import clear_earlier_run

    if job.worker_paths is not None:
        check_worker_paths(options, **job.worker_paths(opts))
    if job.device is not None:
        check_local_device(options, vars(opts)[job.device])
    earlier = prepare_output(job, opts, options) if opts.output else None  # collect's --login alone writes none
    checked = job.check(opts) if job.check is not None else None
    prepared = None
    if job.prepare is not None:
        prepared = job.prepare(opts)
        if prepared is None:
            return None
    if test_pipeline is None:
        runner, run_options = local_runner(options)
        pipeline = beam.Pipeline(runner=runner, options=run_options)
    else:
        pipeline = test_pipeline
    requested_threads = vars(opts)[job.cpu_threads] if job.cpu_threads is not None else 0
    context = JobContext(options, cpu_threads_per_process(options, requested_threads), prepared, checked)
    outputs = job.build(pipeline, opts, context)
    write_outputs(pipeline, job, opts, outputs)
    if earlier is not None:  # only now, once the job is built: a bad checkpoint must not cost the earlier output
        deleted = clear_earlier_run(earlier, {*job.schemas, "rejected"})
        LOGGER.info("cleared %d files and folders of an earlier run from %s", len(deleted), opts.output)
    with progress_shown(pipeline, job, opts, options, outputs) as reporter:
        return run_pipeline(pipeline, options, opts.output, job.describe, started=started, progress=reporter)


@contextlib.contextmanager
def progress_shown(pipeline, job: BeamJob, opts, options: PipelineOptions, outputs: JobOutputs):
    """A local run's progress (``transforms.progress``): a counting step on ``outputs.progress`` and the reporter
    that prints it while the job runs; ``None`` (nothing added) with ``--no-progress``, on a remote runner (its
    console shows progress) or for a dry run."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions, TestOptions

    runner = (options.view_as(StandardOptions).runner or "FnApiRunner").rsplit(".", 1)[-1]
    if opts.no_progress or runner not in LOCAL_RUNNERS or options.view_as(TestOptions).dry_run:
        yield None
        return
    import tempfile

    from transforms.progress import CountProgressFn, ProgressReporter

    counted, total, unit = outputs.progress or (next(iter(outputs.tables.values())), None, "rows")
    with tempfile.TemporaryDirectory(prefix="stylebeam-progress-") as folder:
        _ = counted | "CountProgress" >> beam.ParDo(CountProgressFn(folder))
        yield ProgressReporter(folder, job.name, unit, total)


def prepare_output(job: BeamJob, opts, options: PipelineOptions) -> OutputFolder | None:
    """An output folder never holds a mix of runs: one that holds an earlier run's tables is refused unless
    ``--overwrite`` (or the job's own rule, ``replaces_own_output``), which deletes only this job's tables, its
    run files and temporary folders; another job's output is never mixed with this one's. An unfinished run (tables
    without the summary.json a run writes last) is an earlier run like any other: refused, or replaced with
    ``--overwrite``. A killed run's temporary folders (empty ones too) are deleted whenever this run claims the
    folder. Returns what is to be deleted once the
    job is built (``None``: nothing; a dry run deletes nothing)."""
    from apache_beam.options.pipeline_options import TestOptions

    from transforms.io import inspect_output

    output = opts.output
    check_writable(output)
    check_apart(output, **{name: vars(opts)[name] for name in job.reads})
    folder = inspect_output(output)
    own = {*job.schemas, "rejected"}
    foreign = sorted(set(folder.tables) - own)
    if foreign or (folder.summary_job not in (None, job.name)):
        what = ", ".join(f"{prefix}-*.parquet" for prefix in foreign) or f"pipelines.{folder.summary_job}'s output"
        raise UsageError(f"--output {output} holds an earlier run of another job ({what}); choose another folder")
    replace = opts.overwrite or (job.replaces_own_output is not None and job.replaces_own_output(opts))
    if folder.earlier_run and not replace:
        held = sorted(
            {f"{prefix}-*.parquet" for prefix in folder.tables} | {p.rsplit("/", 1)[-1] for p in folder.run_files}
        )
        what = f"an earlier run ({', '.join(held)})"
        if folder.unfinished:  # no summary.json: the run was killed or failed before its end
            what = f"an unfinished run ({', '.join(held)} but no summary.json)"
        raise UsageError(f"--output {output} holds {what}; pass --overwrite to replace it, or choose another folder")
    if options.view_as(TestOptions).dry_run or not (folder.earlier_run or folder.temp):
        return None
    return folder


def check_writable(output: str) -> None:
    """A local ``--output`` must be a folder (or not exist yet) that this user can create files in."""
    if "://" in output and not output.startswith("file://"):
        return  # object stores answer permissions at write time; the job's first write fails in one line there
    path = os.path.abspath(output.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output {output} is a file; give a folder (it is created if missing)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--output {output} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: permission denied, this user cannot write in {existing}")


def write_outputs(pipeline: beam.Pipeline, job: BeamJob, opts, outputs: JobOutputs) -> None:
    """The tables, the dead letters of every stage and ``summary.json``, the same way for every job. The summary is
    written last, once every table's shards are in place and every other file is written: it marks the run as
    finished (``transforms.io``)."""
    import apache_beam as beam

    from transforms.io import CountRejected, WriteSummary, WriteTable
    from transforms.schemas import REJECTED

    schemas = {**job.schemas, **outputs.schemas}
    written = [
        rows | f"Write{prefix.capitalize()}" >> WriteTable(opts.output, prefix, schemas[prefix], opts.num_shards)
        for prefix, rows in outputs.tables.items()
    ]
    rejected = outputs.rejected | "AllRejected" >> beam.Flatten(pipeline=pipeline)
    written.append(rejected | "WriteRejected" >> WriteTable(opts.output, "rejected", REJECTED, opts.num_shards))
    counted = {**outputs.counted, "rejected": rejected}
    tallies = (rejected | "CountRejected" >> CountRejected(), *outputs.tallies)
    facts = {"job": job.name, **outputs.facts}
    after = (*written, *outputs.written)
    pipeline | "WriteSummary" >> WriteSummary(opts.output, counted, tallies, facts, after, outputs.balances)


def run_pipeline(
    pipeline,
    options: PipelineOptions,
    output_dir: str,
    describe,
    *,
    started: float | None = None,
    progress=None,
):
    """Run a built job to the end and report it; return the ``PipelineResult``.

    A Dataflow ``--dry_run`` only builds and validates the job, and says so. A finished job gets its wall
    time (from ``started``, default now) added to ``summary.json``, its Beam counters printed, and the
    one-line ``describe(summary)`` printed, all on stderr. ``progress``: a ``ProgressReporter`` to run meanwhile.
    """
    from apache_beam.options.pipeline_options import TestOptions
    from apache_beam.runners.runner import PipelineState

    from transforms.io import update_summary

    started = time.perf_counter() if started is None else started
    with storage_errors_in_one_line(output_dir), progress or contextlib.nullcontext():
        result = pipeline.run()
        if options.view_as(TestOptions).dry_run:
            print("dry run: the Dataflow job was built and validated, nothing was submitted", file=sys.stderr)
            return result
        result.wait_until_finish()
    if result.state == PipelineState.DONE:
        print_counters(result)
        summary = update_summary(output_dir, elapsed_s=round(time.perf_counter() - started, 3))
        print(describe(summary), file=sys.stderr)
    return result


@contextlib.contextmanager
def storage_errors_in_one_line(output: str):
    """A job that fails because its output cannot be written (a full disk, a quota, a read-only or forbidden folder)
    fails with one ``OutputUnwritableError`` line, instead of the exception Beam wraps around the worker's and the
    tracebacks it logs and prints on the way (291 lines for augment on a full disk); so does one whose counts do not
    add up (an ``IncompleteOutputError`` line, ``transforms.io.Balance``). Beam's error logs, and the
    tracebacks its in-process workers print to stderr, are held back while the job runs and let through unless the
    failure was such a storage error: every other failure keeps its tracebacks. (Workers in other processes,
    ``--direct_running_mode=multi_processing``, print theirs to their own stderr, which this process cannot hold.)"""
    held = _HoldBeamErrors()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(held)
    printed = _HoldTracebacks(sys.stderr)
    failure = None
    try:
        with contextlib.redirect_stderr(printed):
            yield
    except Exception as exc:
        failure = output_failure(exc, output)
        if failure is None:
            raise
    finally:
        for handler in handlers:
            handler.removeFilter(held)
        if failure is None:
            for record in held.records:
                logging.getLogger(record.name).handle(record)
            printed.release()
    if failure is not None:
        raise failure from None


class _HoldTracebacks:
    """``sys.stderr`` while a job runs: what is written passes through, except the tracebacks Beam's worker prints
    for a failed bundle (``sdk_worker._execute``), which are kept until ``release``."""

    def __init__(self, stream):
        self._stream = stream
        self._held = []
        self._holding = False

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last)") or (self._holding and text == "\n"):
            self._held.append(text)
            self._holding = text != "\n"
            return len(text)
        self._holding = False
        return self._stream.write(text)

    def release(self) -> None:
        self._stream.write("".join(self._held))
        self._held = []

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _HoldBeamErrors(logging.Filter):
    """Keeps Beam's ERROR records (each failed bundle's traceback, as every worker saw it) for later."""

    def __init__(self):
        super().__init__()
        self.records = []
        self._ids = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith("apache_beam"):
            return True
        if id(record) not in self._ids:  # one record reaches every handler: keep it once
            self._ids.add(id(record))
            self.records.append(record)
        return False


# How an OSError reads inside the text of an exception that crossed a process boundary (Beam's multi_processing
# workers, a remote runner): "[Errno 28] No space left on device: '/out/beam-temp-x/1.parquet'".
ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^\n]*?(?:: '([^'\n]+)')?(?=$|\n| \[while running)", re.MULTILINE)
UNWRITABLE_TEXT = re.compile(r"OutputUnwritableError: (cannot write [^\n]*?)(?=$|\n| \[while running)", re.MULTILINE)
INCOMPLETE_TEXT = re.compile(r"IncompleteOutputError: ([^\n]*?)(?=$|\n| \[while running)", re.MULTILINE)


def output_failure(exc: BaseException, output: str) -> StylebeamError | None:
    """The one-line error for a job that failed writing: an ``OutputUnwritableError`` raised on a worker (our own
    writes), or an ``OSError`` with a storage errno (``models.common.files.STORAGE_ERRNOS``) from Beam's sinks,
    found in the exception's chain or, when it crossed a process, in its text. A permission error counts only where it
    names a file under ``output`` (a checkpoint that cannot be read is no output failure). An
    ``IncompleteOutputError`` (``WriteSummary``'s ledgers did not add up) is one too. ``None`` for anything
    else."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for error in chain:
        if isinstance(error, (OutputUnwritableError, IncompleteOutputError)):
            return error
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            failure = _storage_failure(error.errno, error.filename, output)
            if failure is not None:
                return failure
    text = "\n".join(str(error) for error in chain)
    unwritable = UNWRITABLE_TEXT.search(text)
    if unwritable:
        return OutputUnwritableError(unwritable.group(1))
    incomplete = INCOMPLETE_TEXT.search(text)
    if incomplete:
        return IncompleteOutputError(incomplete.group(1))
    for match in ERRNO_TEXT.finditer(text):
        failure = _storage_failure(int(match.group(1)), match.group(2), output)
        if failure is not None:
            return failure
    return None


def _storage_failure(number: int, filename, output: str) -> OutputUnwritableError | None:
    if number not in STORAGE_ERRNOS:
        return None
    filename = os.fsdecode(filename) if isinstance(filename, (str, bytes)) else None
    under_output = filename is None or is_within(resolved_path(filename), resolved_path(output))
    if number in (errno.EACCES, errno.EPERM) and not (filename and under_output):
        return None
    where = output if under_output else filename
    return OutputUnwritableError(f"cannot write {where}: {STORAGE_ERRNOS[number]} ({errno.errorcode[number]})")


def print_counters(result) -> None:
    """The job's Beam counters (committed values where the runner has them), one per line."""
    counters = {}
    try:
        queried = result.metrics().query().get("counters", [])
    except NotImplementedError:
        return
    for counter in queried:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    for name in sorted(counters):
        print(f"{name:>28}: {counters[name]}", file=sys.stderr)


# How often the worker threads of the local runner's multi_threading mode flush their output buffers on a timer:
# never, in effect (once in ~25 days; Beam's default is every second). See ``local_runner``.
TIMED_FLUSH_OFF_MS = 2**31 - 1


def local_runner(options: PipelineOptions):
    """``(runner, options)`` to build the pipeline with: for FnApiRunner's ``multi_threading`` mode (the local
    default) and ``multi_processing`` mode, an ``FnApiRunner`` whose data channels never flush their buffers on a
    timer, on either side; for any other runner or mode, ``(None, options)`` (Beam picks the runner from the options).

    Why: in these modes Beam (2.77) runs its workers behind a gRPC data channel, and an output buffer
    (``data_plane.TimeBasedBufferingClosableOutputStream``) is also flushed every second by a timer thread, which
    sends ``get()`` and then ``_clear()``s the buffer without holding the writing thread out: bytes written between
    the two are dropped without a trace. Both ends can write through such buffers: each worker sends a bundle's
    outputs to the runner, and the runner sends each stage its inputs, in chunks of ~10 MB (a 1,000-photo 512² job
    streams ~800 MB of pixels to the stylise stage over several seconds). Augment lost 4 of 14 stylised images on
    the worker side on a loaded machine, and 150 of 1,000 at 512² on the runner side. Without the timer the buffers
    are flushed by size on the writing thread and when a bundle's input or output ends, which is all a batch job
    needs. The runner side's timer is Beam's module constant, read when the runner starts its gRPC server, so
    ``_UntimedFnApiRunner`` holds it at 0 (size-based only) while it runs stages. Worker processes
    (``multi_processing``) buffer by size already; in-process worker threads (``multi_threading``) take the timer
    from their environment, which is set here to never: Beam forces its default environment in that mode, so the
    same threads are asked for as ``in_memory`` with ``direct_num_workers`` workers on this environment (a copy of
    ``options`` says so; the caller's is untouched)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = (options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1]
    mode = options.view_as(DirectOptions).direct_running_mode
    if runner != "FnApiRunner" or mode not in ("multi_threading", "multi_processing"):
        return None, options
    import copy

    from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers
    from apache_beam.transforms.environments import EmbeddedPythonGrpcEnvironment, python_sdk_capabilities

    class _UntimedFnApiRunner(FnApiRunner):
        """FnApiRunner whose runner-side data channel buffers flush by size and at the end of each input, never on
        a timer (see ``local_runner``)."""

        def run_stages(self, stage_context, stages):
            saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
            worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0  # 0: size-based buffers (``ClosableOutputStream.create``)
            try:
                return super().run_stages(stage_context, stages)
            finally:
                worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = saved

    if mode == "multi_processing":
        return _UntimedFnApiRunner(), options
    environment = EmbeddedPythonGrpcEnvironment(
        data_buffer_time_limit_ms=TIMED_FLUSH_OFF_MS, capabilities=python_sdk_capabilities(), artifacts=()
    )
    threaded = copy.deepcopy(options)
    threaded.view_as(DirectOptions).direct_running_mode = "in_memory"
    runner_logger = logging.getLogger(FnApiRunner.__module__)
    if not any(isinstance(known, _ThreadsAsInMemory) for known in runner_logger.filters):
        runner_logger.addFilter(_ThreadsAsInMemory())
    return _UntimedFnApiRunner(default_environment=environment), threaded


class _ThreadsAsInMemory(logging.Filter):
    """Drops FnApiRunner's warning that ``in_memory`` with several workers has no parallelism: with the environment
    ``local_runner`` gives it, it has (one worker thread each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


def cpu_threads_per_process(options: PipelineOptions, requested: int) -> int:
    """Torch threads for each worker process on CPU; 0 means torch's default (every core).

    ``requested`` > 0 wins. Otherwise: one thread when the runner runs several workers per machine (Dataflow starts
    one process per vCPU; locally ``multi_processing`` processes or ``multi_threading`` threads, the default), every
    core for a single local worker.
    Measured on a busy 2-core machine: a tiny-ResNet step took 39 ms with 1 thread, 523 ms with 2.
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if requested > 0:
        return requested
    runner = options.view_as(StandardOptions).runner or ""
    direct = options.view_as(DirectOptions)
    many_local = (
        direct.direct_running_mode in ("multi_processing", "multi_threading") and (direct.direct_num_workers or 0) != 1
    )
    return 1 if runner.endswith("DataflowRunner") or many_local else 0


def check_local_device(options: PipelineOptions, device: str | None) -> None:
    """On a local runner the workers are this machine: ``--device cuda`` without a GPU is refused here, in one line,
    instead of in every worker's setup behind Beam's tracebacks. (A remote runner's workers have their own GPUs.)"""
    from apache_beam.options.pipeline_options import StandardOptions

    from models.common.device import resolve_device

    runner = (options.view_as(StandardOptions).runner or "FnApiRunner").rsplit(".", 1)[-1]
    if device and runner in LOCAL_RUNNERS:
        resolve_device(device)


def check_worker_paths(options: PipelineOptions, **paths: str | None) -> None:
    """On a remote runner every path the workers open must be remote storage: a local ``--stylizer`` passes
    the launcher's checks and then fails on every worker. ``paths``: flag name → value."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = (options.view_as(StandardOptions).runner or "FnApiRunner").rsplit(".", 1)[-1]
    if runner in LOCAL_RUNNERS:
        return
    local = [f"--{name.replace('_', '-')} {path}" for name, path in paths.items() if path and "://" not in path]
    if local:
        raise UsageError(
            f"{runner} workers cannot read this machine's files: {', '.join(local)}; "
            "copy them to gs:// (gcloud storage cp) and pass those paths"
        )
