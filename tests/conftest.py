"""Shared fixtures: generated images, Beam options that never reach for the Prism runner."""

import io

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def beam_options():
    """In-process FnApiRunner options for ``TestPipeline``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=FnApiRunner"])


def make_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic image with structure (gradients + blocks), not flat noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1), ((x // 8 + y // 8) % 2) * 255.0], axis=-1
    )
    base = (base * 0.7 + rng.uniform(0, 255, size=3) * 0.3).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def image_factory():
    return make_image
