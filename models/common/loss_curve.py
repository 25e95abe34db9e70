"""The one loss-curve plot of both trainers, drawn with PIL (no plotting library in the dependencies).

A ``Curve`` is a named series of ``(step, value)`` points; the plot draws every curve on one pair of axes, a legend
in each curve's colour, the step range below and value ticks on the left: one per decade on a log scale, low / middle
/ high on a linear one.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = (640, 360)


@dataclass(frozen=True)
class Curve:
    name: str
    steps: Sequence[float]
    values: Sequence[float]
    colour: tuple[int, int, int]
    width: int = 2
    markers: bool = False  # a dot on every point (per-epoch values)


def smoothed(values: Sequence[float], points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a moving average that leaves about ``points`` independent points, centred."""
    values = np.asarray(values, dtype=np.float64)
    window = max(1, len(values) // points)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(len(smooth)) + (window - 1) / 2, smooth


def draw_loss_curves(curves: Sequence[Curve], *, log_scale: bool, title: str = "", steps: int = 0) -> Image.Image:
    """A ``SIZE`` RGB image of ``curves``; ``steps`` is the x extent (default: the largest step drawn).

    On a log scale values <= 0 are left out (a switched-off loss term is all zeros).
    """
    width, height = SIZE
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 12, 24, height - 30
    if title:
        draw.text((left, 6), title, fill="black")
    points = []
    for curve in curves:
        pairs = [(float(s), float(v)) for s, v in zip(curve.steps, curve.values, strict=True) if math.isfinite(v)]
        if log_scale:
            pairs = [(s, math.log10(v)) for s, v in pairs if v > 0]
        if pairs:
            points.append((curve, pairs))
    if not points:
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left + 10, top + 10), "no steps yet", fill="black")
        return image

    ys = [y for _, pairs in points for _, y in pairs]
    low, high = min(ys), max(ys)
    if log_scale:
        low, high = math.floor(low), max(math.ceil(high), math.floor(low) + 1)
        ticks = [(float(decade), f"1e{decade}") for decade in range(low, high + 1)]
    else:
        high = high if high > low else low + 1.0
        ticks = [(low + f * (high - low), f"{low + f * (high - low):.3g}") for f in (0.0, 0.5, 1.0)]
    extent = max(steps, max(s for _, pairs in points for s, _ in pairs), 1)

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + step / extent * (right - left), bottom - (value - low) / (high - low) * (bottom - top)

    for value, label in ticks:
        y = xy(0, value)[1]
        draw.line([left, y, right, y], fill=(225, 225, 225))
        draw.text((4, y - 6), label, fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, bottom + 8), "step 0", fill="black")
    draw.text((right - 70, bottom + 8), f"step {extent:g}", fill="black")
    for index, (curve, pairs) in enumerate(points):
        xys = [xy(s, v) for s, v in pairs]
        if len(xys) > 1:
            draw.line(xys, fill=curve.colour, width=curve.width)
        if curve.markers:
            for x, y in xys:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=curve.colour)
        draw.text((right - 90, top + 6 + 14 * index), curve.name, fill=curve.colour)
    return image
