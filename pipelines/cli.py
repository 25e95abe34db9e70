"""What every entry point shares: one-line errors, one logging setup, and the common flags with one meaning each.

The common flags and their meanings are the README's table "Flags every command shares"; a test reads that table and
every command's ``--help`` and checks that they agree.
"""

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Callable

from models.common.errors import StylebeamError, UsageError
from models.embedding.choices import BACKBONES  # noqa: F401  (the parsers' choices, torch-free)
from models.style.choices import PRECISIONS  # noqa: F401

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
    "what the stylizer computes in: auto: on GPU bf16 where it has it, else fp16; on CPU fp32, or bf16 where the "
    "CPU has native bf16 and a one-off measurement (cached per machine) finds it faster within 40 dB of fp32"
)
# models.style.registry.BUILTINS' names, named here so that a parser needs no torch (the registry builds networks
# with it; tests/pipelines/test_entry_points.py checks that the names agree).
BUILTIN_STYLIZERS = ("magenta26", "magenta_arbitrary")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ``UsageError``s: every command says what is wrong in one ``error:`` line and
    exits 2, the same way for a bad flag value as for a missing file.

    Every flag added (to the parser or one of its groups) is kept in ``declared``, its ``Action`` as
    ``add_argument`` returns it: what ``split_known_args`` knows as this command's own flags. A flag with a default
    whose help does not say it gets "(default: ...)" appended, so ``--help`` shows every default.
    """

    def __init__(self, *args, **kwargs):
        self.declared: list[argparse.Action] = []  # before argparse's own __init__ adds --help through add_argument
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        return self._declare(super().add_argument, args, kwargs)

    def add_argument_group(self, *args, **kwargs):
        return self._declaring(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs):
        return self._declaring(super().add_mutually_exclusive_group(**kwargs))

    def option_strings(self) -> list[str]:
        """Every flag spelling of this parser (``--batch-size``, ``-h``, ...)."""
        return [flag for action in self.declared for flag in action.option_strings]

    def _declaring(self, group):
        add = group.add_argument
        group.add_argument = lambda *args, **kwargs: self._declare(add, args, kwargs)
        return group

    def _declare(self, add, args, kwargs) -> argparse.Action:
        action = add(*args, **with_default_shown(kwargs))
        self.declared.append(action)
        return action


def with_default_shown(kwargs: dict) -> dict:
    """``add_argument``'s keywords with "(default: %(default)s)" added to a help that does not name its default
    (no default, ``False`` of a switch and an empty list say nothing worth a line)."""
    default, text = kwargs.get("default"), kwargs.get("help")
    if text in (None, argparse.SUPPRESS) or default in (None, False, [], argparse.SUPPRESS) or "default" in text:
        return kwargs
    return {**kwargs, "help": f"{text} (default: %(default)s)"}


def split_known_args(parser: ArgumentParser, argv: list[str], unknown_elsewhere: Callable[[list[str]], list[str]]):
    """Parse ``parser``'s own flags from ``argv``; return ``(namespace, rest)``, ``rest`` being what another parser
    (Beam's) is to read. ``unknown_elsewhere(rest)`` returns what in ``rest`` that other parser does not take either:
    any of it is a one-line usage error, with a did-you-mean among this parser's flags. A usage error of ours
    (a required flag missing because it was mistyped: ``--modle``) names the typo and its likely meaning too."""
    ours = parser.option_strings()
    try:
        opts, rest = parser.parse_known_args(argv)
    except UsageError as exc:
        strays = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]
        typos = [arg for arg in strays if arg not in ours and not _taken_elsewhere(arg, unknown_elsewhere)]
        close = [difflib.get_close_matches(arg, ours, n=1) for arg in typos]
        hints = [f"{arg} (did you mean {match[0]}?)" for arg, match in zip(typos, close, strict=True) if match]
        if hints:
            raise UsageError(f"{exc}; unrecognized: {', '.join(hints)}") from None
        raise
    unknown = unknown_elsewhere(rest)
    if unknown:
        close = difflib.get_close_matches(unknown[0].split("=", 1)[0], ours, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (neither this job's nor Beam's){hint}")
    return opts, rest


def _taken_elsewhere(flag: str, unknown_elsewhere: Callable[[list[str]], list[str]]) -> bool:
    try:
        return not unknown_elsewhere([flag])
    except UsageError:  # the other parser knows the flag and wanted its value
        return True


def deprecated(old: str, new: str) -> None:
    """The one-line notice of an old spelling that still works for one release."""
    print(f"deprecated: {old} is now {new}; the old spelling goes in the next release", file=sys.stderr)


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
