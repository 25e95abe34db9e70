"""Options of the Beam jobs: a shared base class and one parser that gives each job a real ``--help``."""

import argparse
import sys

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
