"""``DecodeImages``: ``SourceRecord`` → ``DecodedImage`` (RGB uint8 at the model's size), or ``rejected``.

Each image is decoded once, through ``transforms.images.decode_image``. Sizing for batching: the short
side is scaled to ``image_size`` and the long side centre-cropped to ``image_size + k·step`` with step an
eighth of the short side (32 px at 256: under 1/8 of the short side lost) and to at most ``max_aspect`` ×
the short side, so images fall into a few shape buckets that batch
together without padding (padding would change instance-norm statistics, hence the pixels).

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
    crop_box: tuple[float, float, float, float] | None = None  # in source pixels (module docstring)
    scale: float | None = None  # output px per source px


def bucket_crop(width: int, height: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int, int, int]:
    """The centre crop ``(left, top, right, bottom)`` that ``fit_to_bucket`` takes of a resized image of that size."""
    short, long = min(width, height), max(width, height)
    step = max(4, short // 8 // 4 * 4)
    longest = int(short * max_aspect)
    target = short + (min(long, longest) - short) // step * step
    if width > height:
        left = (width - target) // 2
        return left, 0, left + target, height
    top = (height - target) // 2
    return 0, top, width, top + target


def fit_to_bucket(image: Image.Image, image_size: int, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Scale the short side to ``image_size`` (0 keeps it) and crop the long side to the bucket grid."""
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
            pixels = pil_to_uint8(fit_to_bucket(image, self.image_size))
            crop_box, scale = source_geometry(record.data, image.size, self.image_size)
        except ImageRejected as exc:
            rejection = exc
        except MemoryError:  # one record's resize must not sink the job: it is that record's rejection
            rejection = ImageRejected("out_of_memory", "not enough memory to resize the image")
        else:
            self.decoded.inc()
            yield DecodedImage(record.source_id, record.label, pixels, record.extra, crop_box, scale)
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
