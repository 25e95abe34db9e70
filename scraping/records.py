"""One media item of one Instagram post: what the scraper and the download-folder reader both produce.

A post becomes one record per carousel position (``index`` 0 for a single-image post): ``kind`` is
``image`` (with the fetched bytes), ``video`` (skipped: no bytes, counted) or ``error`` (the image could not
be had: a download failed, or a file of a download folder could not be read; ``error`` holds
``"reason: detail"``). ``pipelines.collect`` turns image records into raw-corpus rows.
"""

import datetime
import re

import pyarrow as pa

IMAGE, VIDEO, ERROR = "image", "video", "error"
SOURCE = "instagram"

# What every item of a post carries, in table order: its key (shortcode, carousel position), then what the
# post says. The one list behind the scraper's spool (MEDIA_RECORD) and the corpus tables
# (transforms.schemas.RAW_CORPUS).
MEDIA_FIELDS = [
    pa.field("shortcode", pa.string()),
    pa.field("index", pa.int32()),
    pa.field("hashtags_queried", pa.list_(pa.string())),
    pa.field("caption", pa.string()),
    pa.field("caption_hashtags", pa.list_(pa.string())),
    pa.field("posted_at", pa.timestamp("us", tz="UTC")),
    pa.field("owner", pa.string()),
]

# The scraper's spool shards (STATE/spool-*.parquet) hold these records as written.
MEDIA_RECORD = pa.schema(
    [*MEDIA_FIELDS, pa.field("kind", pa.string()), pa.field("image", pa.binary()), pa.field("error", pa.string())]
)

# Half of a UTF-16 surrogate pair: Instagram's JSON can carry one ("\ud83d", an emoji cut in two), and so does a
# file name that is not UTF-8 (os.fsdecode escapes each undecodable byte as one); UTF-8, Parquet's encoding,
# cannot hold either.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` as Parquet can store it: each lone surrogate (half an emoji, a file name's undecodable byte)
    becomes U+FFFD."""
    return LONE_SURROGATE.sub("\ufffd", text)


def media_record(
    post_fields: dict, index: int, kind: str, image: bytes | None = None, error: str | None = None
) -> dict:
    """``post_fields``: shortcode, hashtags_queried, caption, caption_hashtags, posted_at, owner (the same for
    every item of a post); this adds the item's position, kind and payload. Caption and error are made
    ``printable``."""
    caption = post_fields.get("caption")
    caption = None if caption is None else printable(caption)
    error = None if error is None else printable(error)
    return {**post_fields, "caption": caption, "index": index, "kind": kind, "image": image, "error": error}


def utc(moment: datetime.datetime) -> datetime.datetime:
    """instaloader's ``date_utc`` is naive UTC; Parquet wants it aware."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def record_id(shortcode: str, index: int) -> str:
    return f"{SOURCE}:{shortcode}:{index}"
