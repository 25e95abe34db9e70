"""One media item of one Instagram post: what the scraper and the download-folder reader both produce.

A post becomes one record per carousel position (``index`` 0 for a single-image post): ``kind`` is
``image`` (with the fetched bytes), ``video`` (skipped: no bytes, counted) or ``error`` (the fetch failed;
``error`` holds ``"reason: detail"``). ``pipelines.collect`` turns image records into raw-corpus rows.
"""

import datetime

import pyarrow as pa

IMAGE, VIDEO, ERROR = "image", "video", "error"
SOURCE = "instagram"

# The scraper's spool shards (STATE/spool-*.parquet) hold these records as written.
MEDIA_RECORD = pa.schema(
    [
        ("shortcode", pa.string()),
        ("index", pa.int32()),
        ("kind", pa.string()),
        ("hashtags_queried", pa.list_(pa.string())),
        ("caption", pa.string()),
        ("caption_hashtags", pa.list_(pa.string())),
        ("posted_at", pa.timestamp("us", tz="UTC")),
        ("owner", pa.string()),
        ("image", pa.binary()),
        ("error", pa.string()),
    ]
)


def media_record(
    post_fields: dict, index: int, kind: str, image: bytes | None = None, error: str | None = None
) -> dict:
    """``post_fields``: shortcode, hashtags_queried, caption, caption_hashtags, posted_at, owner (the same for
    every item of a post); this adds the item's position, kind and payload."""
    return {**post_fields, "index": index, "kind": kind, "image": image, "error": error}


def utc(moment: datetime.datetime) -> datetime.datetime:
    """instaloader's ``date_utc`` is naive UTC; Parquet wants it aware."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def record_id(shortcode: str, index: int) -> str:
    return f"{SOURCE}:{shortcode}:{index}"
