"""The media record: one list of post fields for the scraper's spool and the corpus tables."""

import datetime

import pyarrow as pa

from scraping.records import MEDIA_FIELDS, MEDIA_RECORD, media_record
from transforms.schemas import CLEAN_CORPUS, RAW_CORPUS

# The raw-corpus contract of DESIGN.md, column by column.
RAW_CONTRACT = [
    ("id", pa.string()),
    ("source", pa.string()),
    ("shortcode", pa.string()),
    ("index", pa.int32()),
    ("hashtags_queried", pa.list_(pa.string())),
    ("caption", pa.string()),
    ("caption_hashtags", pa.list_(pa.string())),
    ("posted_at", pa.timestamp("us", tz="UTC")),
    ("owner", pa.string()),
    ("image", pa.binary()),
    ("image_format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),
]


def test_the_corpus_tables_keep_their_contract_and_take_the_post_fields_from_the_records():
    assert [(field.name, field.type) for field in RAW_CORPUS] == RAW_CONTRACT
    assert CLEAN_CORPUS.names == [name for name, _ in RAW_CONTRACT] + ["text", "phash"]
    shared = [field.name for field in MEDIA_FIELDS]
    assert shared == ["shortcode", "index", "hashtags_queried", "caption", "caption_hashtags", "posted_at", "owner"]
    for field in MEDIA_FIELDS:
        assert RAW_CORPUS.field(field.name) == field == MEDIA_RECORD.field(field.name)


def test_a_lone_surrogate_in_a_caption_cannot_break_the_parquet_writer():
    """Instagram's JSON can hold half an emoji (``"\\ud83d"``): UTF-8 cannot encode it, so the spool write failed."""
    fields = {
        "shortcode": "X",
        "hashtags_queried": ["miro"],
        "caption": "broken \ud83d emoji",
        "caption_hashtags": [],
        "posted_at": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        "owner": "7",
    }
    record = media_record(fields, 0, "image", image=b"x")
    assert record["caption"] == "broken \ufffd emoji"
    assert pa.Table.from_pylist([record], schema=MEDIA_RECORD).num_rows == 1
