"""What every entry point shares: one-line errors, common flags, Beam option helpers."""

import argparse
import logging
import sys
from collections.abc import Callable

from models.errors import StylebeamError


def run_main(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run ``main``; a ``StylebeamError`` prints ``error: <message>`` and exits 2 (tracebacks are for bugs)."""
    try:
        main(argv)
    except StylebeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def add_common_args(parser: argparse.ArgumentParser, *, batch_size: int = 8, image_size: int = 256) -> None:
    group = parser.add_argument_group("common")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    group.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="where models run (default: %(default)s)"
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="images per batch (default: %(default)s)"
    )
    group.add_argument(
        "--image-size",
        type=positive_int,
        default=image_size,
        help="short side of images fed to models (default: %(default)s)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
