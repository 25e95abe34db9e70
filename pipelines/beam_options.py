"""Options of the Beam jobs: a shared base class and one parser that gives each job a real ``--help``."""

import argparse
import sys
import time

from apache_beam.options.pipeline_options import PipelineOptions

BEAM_HELP_EPILOG = (
    "Every standard Beam pipeline option is accepted too, e.g. --runner=DataflowRunner --project P "
    "--region R --temp_location gs://B/tmp --setup_file ./setup.py. Without --runner the job runs "
    "locally on FnApiRunner (add --direct_running_mode=multi_processing --direct_num_workers=N for N processes)."
)


class JobOptions(PipelineOptions):
    """Base of every job's options.

    Beam parses the flags of every *direct* ``PipelineOptions`` subclass in the process together, so two
    jobs that both define ``--input`` could not be imported side by side (argparse "conflicting option
    string"). Job flags live one level down and are parsed only through ``view_as(TheJobOptions)``.
    """


def parse_beam_args(options_cls: type[JobOptions], argv: list[str] | None, *, description: str, prog: str):
    """Parse ``argv`` into ``(known, beam_options)`` for a ``JobOptions`` subclass.

    The job's own flags get a real argparse ``--help`` and validation (a bad flag exits with a one-line
    usage error); everything else goes to Beam. No ``--runner`` means ``FnApiRunner``: Beam 2.77's
    DirectRunner first tries to download the Prism runner, which a machine offline cannot do.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=BEAM_HELP_EPILOG)
    options_cls._add_argparse_args(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args(argv)
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        argv.append("--runner=FnApiRunner")
    return known, PipelineOptions(argv)


def run_pipeline(pipeline, options: PipelineOptions, output_dir: str, describe, *, started: float | None = None):
    """Run a built job to the end and report it; return the ``PipelineResult``.

    A Dataflow ``--dry_run`` only builds and validates the job, and says so. A finished job gets its wall
    time (from ``started``, default now) added to ``summary.json``, its Beam counters printed, and the
    one-line ``describe(summary)`` printed, all on stderr.
    """
    from apache_beam.options.pipeline_options import TestOptions
    from apache_beam.runners.runner import PipelineState

    from transforms.io import update_summary

    started = time.perf_counter() if started is None else started
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


def cpu_threads_per_process(options: PipelineOptions, requested: int) -> int:
    """Torch threads for each worker process on CPU; 0 means torch's default (every core).

    ``requested`` > 0 wins. Otherwise: one thread when the runner starts several worker processes per
    machine (Dataflow starts one per vCPU; local ``multi_processing``), every core for one local process.
    Measured on a busy 2-core machine: a tiny-ResNet step took 39 ms with 1 thread, 523 ms with 2.
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if requested > 0:
        return requested
    runner = options.view_as(StandardOptions).runner or ""
    direct = options.view_as(DirectOptions)
    many_local = direct.direct_running_mode == "multi_processing" and (direct.direct_num_workers or 0) != 1
    return 1 if runner.endswith("DataflowRunner") or many_local else 0


# Runners whose workers share this machine's filesystem.
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner")


def check_worker_paths(options: PipelineOptions, **paths: str | None) -> None:
    """On a remote runner every path the workers open must be remote storage: a local ``--stylizer`` passes
    the launcher's checks and then fails on every worker. ``paths``: flag name → value."""
    from apache_beam.options.pipeline_options import StandardOptions

    from models.errors import UsageError

    runner = (options.view_as(StandardOptions).runner or "FnApiRunner").rsplit(".", 1)[-1]
    if runner in LOCAL_RUNNERS:
        return
    local = [f"--{name.replace('_', '-')} {path}" for name, path in paths.items() if path and "://" not in path]
    if local:
        raise UsageError(
            f"{runner} workers cannot read this machine's files: {', '.join(local)}; "
            "copy them to gs:// (gcloud storage cp) and pass those paths"
        )
