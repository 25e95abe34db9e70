"""The one image codec of the project: bytes → RGB, RGB → bytes, and any PIL mode → RGB pixels.

Every job decodes through ``decode_image`` exactly once per record, so every job rejects the same
files for the same reasons. Pixels leave here as uint8 ``(H, W, 3)`` or, through ``models.common.pixels``, as
float32 ``(3, H, W)`` in [0, 1].
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from models.common.errors import ImageRejected, InputNotFoundError
from models.common.files import read_file

if TYPE_CHECKING:  # torch is imported where a tensor is made: a command's --help reads FORMATS and MAX_PIXELS
    import torch

# Decompression-bomb guard: 64 MP is above any camera photo we expect and far below what would
# exhaust a worker (64 MP RGB = 192 MB decoded).
MAX_PIXELS = 64_000_000
# The largest pixel limit a job can set (--max-pixels): Pillow refuses larger images itself, in Image.open and in
# its plugins (GIF frames, TIFF tiles), with DecompressionBombError at twice Image.MAX_IMAGE_PIXELS (178,956,970
# px unless a program changed it). Below it decode_image's own check from the header is the only one (Pillow's
# warning at half that is ignored per call), so --max-pixels is the one limit a user meets.
MAX_PIXELS_CEILING = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 178_956_970
MIN_SIDE = 16
FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
# JPEG quality 95 with 4:4:4 chroma: stylised edges keep their colour; ~2x the bytes of q=85.
JPEG_QUALITY = 95

ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(
    data: bytes,
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    draft_side: int | None = None,
) -> Image.Image:
    """Decode encoded bytes into an upright RGB image, or raise ``ImageRejected``.

    Handles EXIF orientation, every Pillow mode (L, LA, P with transparency, RGBA, CMYK, I;16, I, F, 1)
    and animations (first frame). Transparent pixels are composited over white. ``draft_side`` lets the
    JPEG decoder downscale by a power of two while keeping the short side ≥ ``draft_side``: a 4000 px
    photo headed for 256 px decodes ~8x faster.

    ``max_pixels`` (at most ``MAX_PIXELS_CEILING``) is checked on the header's size before any pixel is decoded,
    and it alone decides: Pillow's own decompression-bomb warning (at ``Image.MAX_IMAGE_PIXELS``) is ignored for
    this call, not changed for the process. Memory running out is the reason ``out_of_memory``.
    """
    if not data:
        raise ImageRejected("empty_file", "0 bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns (UserWarning) about broken EXIF or a short read it recovered from: the image either
            # decodes or raises; one stderr line per crafted file in a 10M-image job would bury the real ones.
            warnings.simplefilter("ignore", UserWarning)
            # max_pixels decides, not Pillow's process-wide MAX_IMAGE_PIXELS (a lower limit of its own that
            # --max-pixels could not raise); Pillow's hard refusal above MAX_PIXELS_CEILING still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{width}x{height} exceeds {max_pixels} pixels")
            if draft_side and image.format == "JPEG":
                # draft keeps the result >= the requested size; scale so the short side stays >= draft_side
                scale = draft_side / min(width, height)
                if scale < 1:
                    image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except MemoryError:
        raise ImageRejected("out_of_memory", "not enough memory to decode the image") from None
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "cannot identify image format") from None
    # IndexError: Pillow 12's QOI decoder on a file cut after its header (the only other exception fuzzing found:
    # 26 formats cut at every length)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageRejected("corrupt_image", str(exc) or type(exc).__name__) from None
    except Exception as exc:  # whatever else a plugin raises on a crafted file: struct.error, TypeError
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from None

    # A broken EXIF block must not cost the pixels: keep the stored orientation.
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        image = ImageOps.exif_transpose(image)
    try:
        rgb = to_rgb(image)
    except MemoryError:
        raise ImageRejected("out_of_memory", f"not enough memory to convert {image.mode} to RGB") from None
    except Exception as exc:  # a mode Pillow decodes but cannot convert
        raise ImageRejected(
            "corrupt_image", f"cannot convert {image.mode} to RGB ({type(exc).__name__}: {exc})"
        ) from None
    if min(rgb.size) < min_side:
        raise ImageRejected("too_small", f"{rgb.width}x{rgb.height} has a side below {min_side} px")
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB. Alpha (including P-mode transparency) is composited over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            array = array / 257.0
        elif array.size and (array.max() > 255 or array.min() < 0):
            low, high = float(array.min()), float(array.max())
            array = (array - low) * (255.0 / max(high - low, 1e-12))
        grey = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def encode_image(image: Image.Image, fmt: str = "jpeg") -> bytes:
    """RGB image → encoded bytes. Deterministic: same pixels, same bytes (no timestamps, no EXIF)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; use one of {sorted(FORMATS)}")
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    elif fmt == "png":
        image.save(buffer, "PNG", compress_level=6)
    else:
        image.save(buffer, "WEBP", quality=JPEG_QUALITY, method=4)
    return buffer.getvalue()


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The ``(width, height)`` that ``resize_short_side(image, size)`` gives an image of that size: known, and
    checked against a pixel limit, before any pixel is resized."""
    scale = size / min(width, height)
    if abs(scale - 1) < 1e-9:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def long_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The ``(width, height)`` that ``resize_long_side(image, size)`` gives an image of that size."""
    scale = size / max(width, height)
    if abs(scale - 1) < 1e-9:
        return width, height
    return (size, max(1, round(height * scale))) if width >= height else (max(1, round(width * scale)), size)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the short side is ``size`` (aspect kept). Antialiased; a no-op when already there."""
    new_size = short_side_size(*image.size, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def resize_long_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the long side is exactly ``size`` (aspect kept, the short side rounded). Antialiased."""
    new_size = long_side_size(*image.size, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Any PIL image → ``(3, H, W)`` float32 RGB in [0, 1] (``models.common.pixels`` convention)."""
    from models.common.pixels import uint8_to_float

    return uint8_to_float(pil_to_uint8(image))


def pil_to_uint8(image: Image.Image) -> np.ndarray:
    """RGB PIL → ``(H, W, 3)`` uint8 (the cheap form to ship between workers; convert to float on the model side)."""
    return np.asarray(to_rgb(image), dtype=np.uint8)


def read_bytes(path: str) -> bytes:
    """Read a local path or any fsspec URL (``gs://``, ``memory://``, …); only a missing file is "not found"."""
    return read_file(path, "file", missing=InputNotFoundError)


def load_image(path: str, **decode_kwargs) -> Image.Image:
    """Read and decode one image file; errors name the file."""
    try:
        return decode_image(read_bytes(path), **decode_kwargs)
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"{path}: {exc.detail}") from None
