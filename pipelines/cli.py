"""What every entry point shares: one-line errors, one logging setup, and the common flags with one meaning each.

The common flags and their meanings are the README's table "Flags every command shares"; a test reads that table and
every command's ``--help`` and checks that they agree.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable

from models.common.errors import StylebeamError, UsageError

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
# Every size a flag sets is bounded before work starts; a value past these is a typo, not a setting.
# A batch is held in memory at once (and on CUDA run at once): 1024 images of 256² are ~30 GB of stylizer
# activations (~450 MB per megapixel, measured on the Magenta net at 512²).
MAX_BATCH_SIZE = 1024
# 8192² = 67 MP: past --max-pixels' default (64 MP); no model here trains or runs at such a short side.
MAX_IMAGE_SIZE = 8192
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
        group.add_argument("--seed", type=random_seed, default=0, help=f"{SEED_HELP} (default: %(default)s)")
    if device:
        group.add_argument(
            "--device", default="auto", choices=["auto", "cpu", "cuda"], help=f"{DEVICE_HELP} (default: %(default)s)"
        )
    if batch_size is not None:
        group.add_argument(
            "--batch-size",
            type=int_between(1, MAX_BATCH_SIZE),
            default=batch_size,
            help=f"{BATCH_SIZE_HELP} (default: %(default)s)",
        )
    if image_size is not None:
        zero = f"; 0: {image_size_zero}" if image_size_zero else ""
        group.add_argument(
            "--image-size",
            type=int_between(0 if image_size_zero else 1, MAX_IMAGE_SIZE),
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


# The range every consumer of --seed takes: numpy's legacy RandomState (gensim's LDA) stops at 2**32 - 1; torch,
# numpy's Generator and the per-record seed mixing (models.style.policy.record_seed) take more.
MAX_SEED = 2**32 - 1


def random_seed(text: str) -> int:
    """``--seed``: an integer from 0 to ``MAX_SEED``; anything else is a usage error naming the range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``, both included (a size a flag sets, bounded)."""

    def integer(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text}")
        return value

    return integer


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


def check_apart(output: str | None, **inputs) -> None:
    """Refuse an ``--output`` that overlaps what a command reads, either way, after resolving symlinks: an input
    inside the output (the command would read what it writes) or the output inside an input's search area (the next
    run reads this run's output as input: a second augment of a Parquet folder re-augmented the first's rows, ids
    ``r0#0#0``). ``inputs``: flag name (``style_images``) → a path, glob or URL, or a list of them."""
    if not output:
        return
    from transforms.sources import search_area  # lazy: the torch-only commands need no Beam at import

    written = resolved_path(output)
    for name, specs in inputs.items():
        for spec in [specs] if isinstance(specs, str) else specs or []:
            root, below = search_area(spec)
            read = resolved_path(root)
            flag = f"--{name.replace('_', '-')}"
            if is_within(read, written):
                raise UsageError(f"--output {output} is where {flag} {spec} is read from; write to another folder")
            if is_within(written, read) and (below or written == read):
                raise UsageError(
                    f"--output {output} is inside {flag} {spec}: a later run would read this output as its input; "
                    "write outside it"
                )


def resolved_path(path: str) -> str:
    """A local path made absolute with every symlink resolved (missing tails kept); a URL as it is."""
    if "://" in path and not path.startswith("file://"):
        return path.rstrip("/")
    return os.path.realpath(path.removeprefix("file://"))


def is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
