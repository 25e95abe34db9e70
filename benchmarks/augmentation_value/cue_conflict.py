"""A cue-conflict image set made in code: the class is a shape; in training, the texture is a shortcut.

Geirhos et al. 2019 ("ImageNet-trained CNNs are biased towards texture; increasing shape bias improves
accuracy and robustness") measure which cue a network follows on images whose shape says one class and whose
texture says another. Here every image is one silhouette (``SHAPES``, at a random position, size and rotation)
filled with a texture, on a muted background of smooth noise. In training, class ``k`` wears texture ``k``
(a pattern and a hue of its own) with probability ``texture_correlation``, any other class's texture
otherwise: the texture predicts the class almost as well as the shape and is far easier to see, so a
CNN takes it. Three test sets:

- ``in_distribution``: drawn like the training set;
- ``cue_conflict``: shape ``k`` in the texture of another class ``j`` (``texture_labels`` holds ``j``);
- ``unseen_textures``: textures of families and colours that no training image has.

Every image is drawn from its own seed (the set seed, the split and its index), so a set of any size is a
prefix of a larger one and a re-run gives identical pixels.
"""

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "plus", "heart", "crescent", "arrow", "ell", "ring")
# One pattern family per class, in class order; the unseen set uses families no class has.
CLASS_TEXTURES = ("stripes", "checker", "dots", "waves", "rings", "hatch", "zigzag", "bricks", "blobs", "speckle")
UNSEEN_TEXTURES = ("cells", "marble", "plaid", "scales")
SPLITS = {"train": 0, "in_distribution": 1, "cue_conflict": 2, "unseen_textures": 3, "probe": 4}
TEST_SETS = ("in_distribution", "cue_conflict", "unseen_textures")
# Pattern periods per image width: a texture repeats many times across a silhouette (about 5 px at 64 px), as
# Geirhos et al.'s textures (fur, skin, bark) do; coarser "markings" (3 stripes across) read as shape to a CNN
# and survive a style network as content.
TEXTURE_CYCLES = (10.0, 13.0)
# The "fine" family's grain (about 2.5-3 px per period at 64 px): finer than Magenta's strokes at the sizes it
# stylises, so the stylizer can replace it; the manipulation check (``manipulation.py``) measures whether it does.
FINE_TEXTURE_CYCLES = (20.0, 26.0)
SUPERSAMPLE = 4  # silhouettes are drawn at 4x and box-filtered down: anti-aliased edges


@dataclass(frozen=True)
class CueConflictSpec:
    classes: int = 8
    image_size: int = 64
    train_per_class: int = 100
    test_per_class: int = 40
    texture_correlation: float = 0.9
    seed: int = 0
    texture_cycles: tuple[float, float] = TEXTURE_CYCLES
    # The in-distribution test set's correlation; None: the training's. 1 / classes: texture independent of the
    # class, so the set scores shape, not the shortcut.
    in_distribution_correlation: float | None = None


@dataclass
class LabelledImages:
    """``pixels`` ``(N, S, S, 3)`` uint8; ``labels`` ``(N,)`` class of the shape; ``texture_labels`` ``(N,)`` class
    whose training texture the image wears, -1 for none. ``ids`` are ImageFolder paths (``circle/train-00012.png``)."""

    ids: list[str]
    labels: np.ndarray
    texture_labels: np.ndarray
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class CueConflictData:
    class_names: list[str]
    train: LabelledImages
    tests: dict[str, LabelledImages]


def make_cue_conflict(spec: CueConflictSpec) -> CueConflictData:
    if not 2 <= spec.classes <= len(SHAPES):
        raise ValueError(f"classes must be 2..{len(SHAPES)}, got {spec.classes}")
    names = list(SHAPES[: spec.classes])
    train = _make_split(spec, names, "train", spec.train_per_class)
    tests = {name: _make_split(spec, names, name, spec.test_per_class) for name in TEST_SETS}
    return CueConflictData(names, train, tests)


def _make_split(spec: CueConflictSpec, names: list[str], split: str, per_class: int) -> LabelledImages:
    ids, labels, texture_labels, pixels = [], [], [], []
    for index in range(per_class * spec.classes):
        label = index % spec.classes  # classes interleaved: any prefix is balanced
        rng = np.random.default_rng([spec.seed, SPLITS[split], index])
        texture = _texture_class(split, label, spec, rng)
        ids.append(f"{names[label]}/{split}-{index:05d}.png")
        labels.append(label)
        texture_labels.append(texture)
        pixels.append(render_image(label, texture, spec.image_size, rng, spec.texture_cycles))
    return LabelledImages(ids, np.array(labels, np.int64), np.array(texture_labels, np.int64), np.stack(pixels))


def _texture_class(split: str, label: int, spec: CueConflictSpec, rng: np.random.Generator) -> int:
    if split == "unseen_textures":
        return -1
    other = (label + 1 + rng.integers(spec.classes - 1)) % spec.classes  # uniform over the other classes
    if split == "cue_conflict":
        return int(other)
    correlation = spec.texture_correlation
    if split == "in_distribution" and spec.in_distribution_correlation is not None:
        correlation = spec.in_distribution_correlation
    elif split == "probe":  # the manipulation check's: texture independent of the shape
        correlation = 1 / spec.classes
    return label if rng.random() < correlation else int(other)


def render_image(
    shape: int, texture: int, size: int, rng: np.random.Generator, cycles: tuple[float, float] = TEXTURE_CYCLES
) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image: ``SHAPES[shape]`` filled with class texture ``texture`` (-1: an unseen
    texture) over a smooth, low-saturation background."""
    mask = shape_mask(SHAPES[shape], size, rng)[..., None]
    background = smooth_background(size, rng)
    fill = class_texture(texture, size, rng, cycles) if texture >= 0 else unseen_texture(size, rng, cycles)
    image = background * (1 - mask) + fill * mask
    return (image * 255).round().clip(0, 255).astype(np.uint8)


def shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` float coverage in [0, 1] of one silhouette at a random pose and scale."""
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.26, 0.42) * big  # from about half to about 85% of the image across
    margin = radius * 1.02
    cx, cy = rng.uniform(margin, big - margin, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)

    def place(points) -> list[tuple[float, float]]:
        points = np.asarray(points, np.float64)
        c, s = np.cos(angle), np.sin(angle)
        x = points[:, 0] * c - points[:, 1] * s
        y = points[:, 0] * s + points[:, 1] * c
        return list(zip(cx + radius * x, cy + radius * y, strict=True))

    def disc(r: float, offset=(0.0, 0.0), fill: int = 255) -> None:
        ((ox, oy),) = place([offset])
        draw.ellipse((ox - r * radius, oy - r * radius, ox + r * radius, oy + r * radius), fill=fill)

    if name == "circle":
        disc(0.85)
    elif name == "crescent":
        disc(0.92)
        disc(0.78, offset=(0.42, 0.0), fill=0)
    elif name == "ring":
        disc(0.92)
        disc(0.5, fill=0)
    else:
        draw.polygon(place(POLYGONS[name]), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _regular(count: int, radius: float = 1.0, phase: float = -np.pi / 2) -> list[tuple[float, float]]:
    t = phase + np.arange(count) * 2 * np.pi / count
    return list(zip(radius * np.cos(t), radius * np.sin(t), strict=True))


def _star() -> list[tuple[float, float]]:
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return list(zip(x / 17, (y + 2.5) / 17, strict=True))


POLYGONS = {
    "square": [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)],
    "triangle": _regular(3),
    "star": _star(),
    "plus": [
        (-0.3, -0.95),
        (0.3, -0.95),
        (0.3, -0.3),
        (0.95, -0.3),
        (0.95, 0.3),
        (0.3, 0.3),
        (0.3, 0.95),
        (-0.3, 0.95),
        (-0.3, 0.3),
        (-0.95, 0.3),
        (-0.95, -0.3),
        (-0.3, -0.3),
    ],
    "heart": _heart(),
    "arrow": [(-0.95, -0.22), (0.15, -0.22), (0.15, -0.62), (0.95, 0.0), (0.15, 0.62), (0.15, 0.22), (-0.95, 0.22)],
    "ell": [(-0.65, -0.95), (-0.15, -0.95), (-0.15, 0.45), (0.75, 0.45), (0.75, 0.95), (-0.65, 0.95)],
}


def _grid(size: int, rng: np.random.Generator, angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in image widths, rotated by ``angle`` (random if None) and shifted by a random phase."""
    angle = rng.uniform(0, np.pi) if angle is None else angle
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c, s = np.cos(angle), np.sin(angle)
    u, v = x * c + y * s, -x * s + y * c
    return u + rng.uniform(0, 1), v + rng.uniform(0, 1)


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` noise in about [-1, 1], smooth on the scale of ``size / cells``."""
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, np.float32)


def _pattern(
    family: str, size: int, rng: np.random.Generator, cycles: tuple[float, float] = TEXTURE_CYCLES
) -> np.ndarray:
    """``(size, size)`` mix field in [0, 1] between a texture's two colours, ``cycles`` periods per image width."""
    u, v = _grid(size, rng)
    f = rng.uniform(*cycles)
    tau = 2 * np.pi
    if family == "stripes":
        m = np.sin(tau * f * u) > 0
    elif family == "checker":
        m = np.sin(tau * f * 0.7 * u) * np.sin(tau * f * 0.7 * v) > 0
    elif family == "dots":
        m = np.hypot((f * u) % 1 - 0.5, (f * v) % 1 - 0.5) < 0.28
    elif family == "waves":
        m = np.sin(tau * f * u + 2.0 * np.sin(tau * 2.0 * v)) > 0
    elif family == "rings":
        m = np.sin(tau * f * np.hypot(u % 1.0 - 0.5, v % 1.0 - 0.5) * 1.6) > 0
    elif family == "hatch":
        m = (np.abs(np.sin(tau * f * u)) < 0.35) | (np.abs(np.sin(tau * f * v)) < 0.35)
    elif family == "zigzag":
        m = np.sin(tau * f * u + 6.0 * np.abs((f * v) % 1 - 0.5)) > 0
    elif family == "bricks":
        row = np.floor(f * v)
        m = ((f * v) % 1 > 0.18) & (((f / 2) * u + 0.5 * (row % 2)) % 1 > 0.1)
    elif family == "blobs":
        m = _smooth_noise(size, 8, rng) > 0
    elif family == "speckle":
        m = rng.random((size, size)) < 0.35
    elif family == "cells":  # Voronoi cells, outlined
        points = rng.uniform(0, 1, size=(12, 2))
        y, x = np.mgrid[0:size, 0:size] / size
        d = np.sort(np.hypot(x[..., None] - points[:, 0], y[..., None] - points[:, 1]), axis=-1)
        return (d[..., 1] - d[..., 0] < 0.03).astype(np.float32)
    elif family == "marble":
        return (0.5 + 0.5 * np.sin(tau * 2.0 * u + 3.0 * _smooth_noise(size, 5, rng))).astype(np.float32)
    elif family == "plaid":
        return (0.25 * (2 + np.sin(tau * f * 0.6 * u) + np.sin(tau * f * 0.6 * v))).astype(np.float32)
    elif family == "scales":
        row = np.floor(f * v)
        cx = (f * u + 0.5 * (row % 2)) % 1 - 0.5
        return (np.hypot(cx, (f * v) % 1) > 0.55).astype(np.float32)
    else:
        raise ValueError(f"unknown texture family {family!r}")
    return m.astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def class_texture(
    texture: int, size: int, rng: np.random.Generator, cycles: tuple[float, float] = TEXTURE_CYCLES
) -> np.ndarray:
    """Class ``texture``'s pattern in its own hue (bright on dark), with a little per-image jitter."""
    hue = texture / len(CLASS_TEXTURES) + rng.uniform(-0.02, 0.02)
    light = _hsv(hue, 0.75 + rng.uniform(-0.1, 0.1), 0.95 + rng.uniform(-0.05, 0.05))
    dark = _hsv(hue + 0.06, 0.9, 0.35 + rng.uniform(-0.05, 0.05))
    mix = _pattern(CLASS_TEXTURES[texture], size, rng, cycles)[..., None]
    return dark * (1 - mix) + light * mix


def unseen_texture(size: int, rng: np.random.Generator, cycles: tuple[float, float] = TEXTURE_CYCLES) -> np.ndarray:
    """A family no class wears, in two random colours (any hue, so colour says nothing either)."""
    family = UNSEEN_TEXTURES[rng.integers(len(UNSEEN_TEXTURES))]
    first = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.7, 1.0))
    second = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.2, 0.45))
    mix = _pattern(family, size, rng, cycles)[..., None]
    return second * (1 - mix) + first * mix


def smooth_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Muted colour clouds: the same distribution for every class and split."""
    base = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.2), rng.uniform(0.45, 0.7))
    clouds = np.stack([_smooth_noise(size, 4, rng) for _ in range(3)], -1) * 0.08
    return np.clip(base + clouds + 0.06 * _smooth_noise(size, 4, rng)[..., None], 0, 1)


def write_image_folder(images: LabelledImages, root) -> None:
    """``root/<class>/<name>.png`` for each image (lossless): the ``--input`` the augment job reads."""
    from pathlib import Path

    for image_id, pixels in zip(images.ids, images.pixels, strict=True):
        path = Path(root) / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, compress_level=1)


def make_probe(spec: CueConflictSpec, per_class: int) -> LabelledImages:
    """The manipulation check's images: shape and texture independent (``texture_labels`` uniform over classes)."""
    return _make_split(spec, list(SHAPES[: spec.classes]), "probe", per_class)


def make_split(spec: CueConflictSpec, split: str, per_class: int) -> LabelledImages:
    """One split of the set (``SPLITS``) on its own: the oracle's re-textured training set, for instance."""
    return _make_split(spec, list(SHAPES[: spec.classes]), split, per_class)
