"""``DecodeImages``: ``SourceRecord`` → ``DecodedImage`` (RGB uint8 at the model's size), or ``rejected``.

Each image is decoded once, through ``transforms.images.decode_image``. Sizing for batching: the short
side is scaled to ``image_size`` and the long side centre-cropped to ``image_size + k·step`` with step an
eighth of the short side (32 px at 256: under 1/8 of the short side lost) and to at most ``max_aspect`` ×
the short side, so images fall into a few shape buckets that batch
together without padding (padding would change instance-norm statistics, hence the pixels).

``max_pixels`` bounds an image as decoded and as resized (checked before the resize): an image that would grow past
it, or one that runs out of memory, is a rejected row, never a failed job.
"""

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


def fit_to_bucket(image: Image.Image, image_size: int, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Scale the short side to ``image_size`` (0 keeps it) and crop the long side to the bucket grid."""
    if image_size:
        image = resize_short_side(image, image_size)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    step = max(4, short // 8 // 4 * 4)
    longest = int(short * max_aspect)
    target = short + (min(long, longest) - short) // step * step
    if target == long:
        return image
    if width > height:
        left = (width - target) // 2
        return image.crop((left, 0, left + target, height))
    top = (height - target) // 2
    return image.crop((0, top, width, top + target))


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
        except ImageRejected as exc:
            rejection = exc
        except MemoryError:  # one record's resize must not sink the job: it is that record's rejection
            rejection = ImageRejected("out_of_memory", "not enough memory to resize the image")
        else:
            self.decoded.inc()
            yield DecodedImage(record.source_id, record.label, pixels)
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
