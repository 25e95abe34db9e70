"""What every entry point shares: one-line errors, one logging setup, and the common flags with one meaning each.

The common flags and their meanings are the README's table "Flags every command shares"; a test reads that table and
every command's ``--help`` and checks that they agree.
"""

import argparse
import logging
import sys
from collections.abc import Callable

from models.errors import StylebeamError, UsageError

# The project's own loggers report progress at INFO; libraries (Beam, gensim, urllib3) only warnings and errors.
PROJECT_LOGGERS = ("pipelines", "transforms", "models", "scraping")

INPUT_HELP = "what to read"
OUTPUT_HELP = "where to write"
SEED_HELP = "random seed: every random draw derives from it"
DEVICE_HELP = "where models run: auto picks CUDA when torch sees a GPU"
BATCH_SIZE_HELP = "images per forward pass"
IMAGE_SIZE_HELP = "short side of the images the model sees, in pixels"
CPU_THREADS_HELP = (
    "torch threads per worker process on CPU; 0: one where the runner runs a worker per core (Dataflow, the "
    "local default of a worker thread per core, multi_processing), else torch's default"
)
NO_PROGRESS_HELP = "no progress bars"
PRECISION_HELP = (
    "what the stylizer computes in: auto: bf16 where the CPU/GPU has native bf16, else fp32 on CPU / fp16 on GPU"
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ``UsageError``s: every command says what is wrong in one ``error:`` line and
    exits 2, the same way for a bad flag value as for a missing file."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def run_main(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Set up logging, run ``main``; a ``StylebeamError`` prints ``error: <message>`` and exits 2 (tracebacks are
    for bugs)."""
    configure_logging()
    try:
        main(argv)
    except StylebeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def configure_logging() -> None:
    """The one logging setup of every command: time, level and message on stderr; the project at INFO, the rest
    at WARNING (Beam alone logs a dozen INFO lines per job about its own machinery)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # gcsfs logs each request it gives up on with the whole aiohttp traceback, then raises: the exception reaches
    # the command, which says what failed in one line (an unreachable bucket printed ~100 lines before it).
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def add_common_args(
    parser,
    *,
    seed: bool = True,
    device: bool = True,
    batch_size: int | None = None,
    image_size: int | None = None,
    image_size_zero: str = "",
    cpu_threads: bool = False,
    no_progress: bool = False,
) -> None:
    """Add the common flags a command takes, with their one meaning (and the README table's wording).

    ``batch_size``/``image_size``: the command's default (``None``: the command has no such flag; for
    ``image_size`` a default of 0 means "see ``image_size_zero``", e.g. "the size the model was trained at").
    """
    group = parser.add_argument_group("common")
    if seed:
        group.add_argument("--seed", type=int, default=0, help=f"{SEED_HELP} (default: %(default)s)")
    if device:
        group.add_argument(
            "--device", default="auto", choices=["auto", "cpu", "cuda"], help=f"{DEVICE_HELP} (default: %(default)s)"
        )
    if batch_size is not None:
        group.add_argument(
            "--batch-size", type=positive_int, default=batch_size, help=f"{BATCH_SIZE_HELP} (default: %(default)s)"
        )
    if image_size is not None:
        zero = f"; 0: {image_size_zero}" if image_size_zero else ""
        group.add_argument(
            "--image-size",
            type=non_negative_int if image_size_zero else positive_int,
            default=image_size,
            metavar="N",
            help=f"{IMAGE_SIZE_HELP}{zero} (default: %(default)s)",
        )
    if cpu_threads:
        group.add_argument(
            "--cpu-threads", type=non_negative_int, default=0, help=f"{CPU_THREADS_HELP} (default: %(default)s)"
        )
    if no_progress:
        group.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
