"""``DecodeImages``: ``SourceRecord`` → ``DecodedImage`` (RGB uint8 at the model's size), or ``rejected``.

Each image is decoded once, through ``transforms.images.decode_image``. Sizing for batching: the short
side is scaled to ``image_size``; the long side is centre-cropped to at most ``max_aspect`` × the short side (on the
bucket grid) and then reflection-padded at its end up to ``image_size + k·step``, step an eighth of the short side
(32 px at 256), so images fall into a few shape buckets that batch together. The stylised output is cut back to the
image's own size (``DecodedImage.size``): no content is lost to the grid (a 143×96 photo at 128 stays 191×128 instead
of being cropped to 176×128). An image already on the grid is neither padded nor cut: its pixels are what they were.
The padding changes the network's instance-norm statistics a little (up to step - 1 reflected rows or columns), as
the network's own reflection padding to a multiple of 4 does (``models.style.stylizer``).

Each image keeps the geometry that maps its source pixels (upright, as EXIF orients them) to the model's input:
``crop_box`` ``(x0, y0, x1, y1)`` in source pixels and ``scale`` (model px per source px), so that a source point
``(x, y)`` lands at ``((x - x0) * scale, (y - y0) * scale)``.

``max_pixels`` bounds an image as decoded and as resized (checked before the resize): an image that would grow past
it, or one that runs out of memory, is a rejected row, never a failed job.
"""

import io
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image

from models.common.errors import ImageRejected
from transforms.images import MAX_PIXELS, decode_image, pil_to_uint8, resize_short_side, short_side_size
from transforms.schemas import rejected_row
from transforms.sources import SourceRecord

REJECTED = "rejected"
STAGE = "decode"
MAX_ASPECT = 3.0


@dataclass(frozen=True)
class DecodedImage:
    source_id: str
    label: str | None
    pixels: np.ndarray  # (H, W, 3) uint8
    extra: dict | None = None  # the input row's carried columns (``SourceRecord.extra``)
    size: tuple[int, int] | None = None  # (width, height) of the image inside ``pixels`` (the rest is padding)
    crop_box: tuple[float, float, float, float] | None = None  # in source pixels (module docstring)
    scale: float | None = None  # output px per source px

    @property
    def image(self) -> np.ndarray:
        """``pixels`` without the bucket padding: ``(height, width, 3)`` uint8."""
        if self.size is None:
            return self.pixels
        return self.pixels[: self.size[1], : self.size[0]]


def bucket_step(short: int) -> int:
    """The bucket grid's step for a short side: an eighth of it, a multiple of 4 (the network's own), at least 4."""
    return max(4, short // 8 // 4 * 4)


def bucket_crop(width: int, height: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int, int, int]:
    """The centre crop ``(left, top, right, bottom)`` that ``fit_to_bucket`` takes of a resized image of that size:
    none (the whole image) unless its long side is over ``max_aspect`` × the short one."""
    short, long = min(width, height), max(width, height)
    longest = int(short * max_aspect)
    if long <= longest:
        return 0, 0, width, height
    target = short + (longest - short) // bucket_step(short) * bucket_step(short)
    if width > height:
        left = (width - target) // 2
        return left, 0, left + target, height
    top = (height - target) // 2
    return 0, top, width, top + target


def fit_to_bucket(image: Image.Image, image_size: int, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Scale the short side to ``image_size`` (0 keeps it) and crop a long side over ``max_aspect`` × the short one
    to the bucket grid."""
    if image_size:
        image = resize_short_side(image, image_size)
    box = bucket_crop(*image.size, max_aspect)
    if box == (0, 0, *image.size):
        return image
    return image.crop(box)


def source_geometry(data: bytes, decoded_size: tuple[int, int], image_size: int, max_aspect: float = MAX_ASPECT):
    """``(crop_box, scale)`` of an image decoded to ``decoded_size`` from ``data`` (see the module docstring). The
    scale is taken against the source's own short side (read from its header): a JPEG draft decodes smaller."""
    with Image.open(io.BytesIO(data)) as header:
        source_short = min(header.size)
    decoded_short = min(decoded_size)
    scale = (image_size or decoded_short) / source_short
    resized = short_side_size(*decoded_size, image_size) if image_size else decoded_size
    left, top, right, bottom = bucket_crop(*resized, max_aspect)
    return (left / scale, top / scale, right / scale, bottom / scale), scale


def pad_to_bucket(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` → the long side reflection-padded at its end (bottom or right) up to the bucket grid."""
    height, width = pixels.shape[:2]
    short, long = min(width, height), max(width, height)
    step = bucket_step(short)
    padding = -(long - short) % step
    if not padding:
        return pixels
    pad = ((0, 0), (0, padding)) if width > height else ((0, padding), (0, 0))
    return np.pad(pixels, (*pad, (0, 0)), mode="reflect" if long > padding else "edge")


def check_resized_pixels(size: tuple[int, int], image_size: int, max_pixels: int) -> None:
    """``max_pixels`` holds after the resize too: an image whose short side is scaled up to ``image_size`` (a wide
    one above all: its long side is scaled before the crop) must not grow past the limit the decode kept it under.
    Raises ``ImageRejected("too_many_pixels")`` before any pixel is resized."""
    if not image_size:
        return
    width, height = short_side_size(*size, image_size)
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{size[0]}x{size[1]} resized to a short side of {image_size} is {width}x{height}, above {max_pixels} "
            "pixels (--max-pixels)",
        )


class DecodeImageFn(beam.DoFn):
    def __init__(self, image_size: int, min_side: int, max_pixels: int):
        self.image_size = image_size
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.decoded = Metrics.counter("stylebeam", "images_decoded")
        self.rejected = Metrics.counter("stylebeam", "images_rejected_decode")

    def process(self, record: SourceRecord):
        try:
            image = decode_image(
                record.data, min_side=self.min_side, max_pixels=self.max_pixels, draft_side=self.image_size or None
            )
            check_resized_pixels(image.size, self.image_size, self.max_pixels)
            fitted = pil_to_uint8(fit_to_bucket(image, self.image_size))
            pixels = pad_to_bucket(fitted)
            crop_box, scale = source_geometry(record.data, image.size, self.image_size)
        except ImageRejected as exc:
            rejection = exc
        except MemoryError:  # one record's resize must not sink the job: it is that record's rejection
            rejection = ImageRejected("out_of_memory", "not enough memory to resize the image")
        else:
            self.decoded.inc()
            size = None if pixels is fitted else (fitted.shape[1], fitted.shape[0])
            yield DecodedImage(
                record.source_id, record.label, pixels, record.extra, size=size, crop_box=crop_box, scale=scale
            )
            return
        self.rejected.inc()
        yield beam.pvalue.TaggedOutput(
            REJECTED, rejected_row(record.source_id, STAGE, rejection.reason, rejection.detail)
        )


class DecodeImages(beam.PTransform):
    """``SourceRecord``s → ``{"images": DecodedImage, "rejected": rejected rows}``."""

    def __init__(self, image_size: int = 256, min_side: int = 32, max_pixels: int = MAX_PIXELS):
        super().__init__()
        self.fn = DecodeImageFn(image_size, min_side, max_pixels)

    def expand(self, records):
        decoded = records | "Decode" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="images")
        return {"images": decoded.images, "rejected": decoded[REJECTED]}
