"""Every Parquet schema the project writes: the contracts of ../shared/DESIGN.md, in one place.

Rows are plain dicts keyed by column name. ``validate_row`` is for tests and for DoFns that want a
clear error at the point a bad row is built rather than deep inside the Parquet writer.
"""

import pyarrow as pa

from scraping.records import MEDIA_FIELDS

REJECTED = pa.schema(
    [
        ("source_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)

AUGMENTED = pa.schema(
    [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("label", pa.string()),
        ("style", pa.string()),
        ("style_weights", pa.list_(pa.float32())),  # checkpoint styles: the mixture; null for paintings
        ("style_ids", pa.list_(pa.string())),  # paintings: the one (or those mixed) behind the row; else null
        ("style_mix", pa.list_(pa.float32())),  # their weights
        ("style_embedding", pa.list_(pa.float32())),  # paintings: the embedding the network was given
        ("alpha", pa.float32()),
        ("seed", pa.int64()),
        ("image", pa.binary()),
        ("image_format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("stylizer", pa.string()),
    ]
)

RAW_CORPUS = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        *MEDIA_FIELDS,
        ("image", pa.binary()),
        ("image_format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)

CLEAN_CORPUS = pa.schema(list(RAW_CORPUS) + [("text", pa.string()), ("phash", pa.int64())])

EMBEDDINGS = pa.schema(
    [
        ("id", pa.string()),
        ("embedding", pa.list_(pa.float32())),
    ]
)

# Output file prefixes: OUT/{prefix}-SSSSS-of-NNNNN.parquet
PREFIXES = {
    "augmented": AUGMENTED,
    "rejected": REJECTED,
    "raw": RAW_CORPUS,
    "clean": CLEAN_CORPUS,
    "embeddings": EMBEDDINGS,
}


def rejected_row(source_id: str, stage: str, reason: str, detail: str = "") -> dict:
    """A dead-letter row. ``error`` is ``"{reason}: {detail}"``; summaries count by the ``reason`` slug."""
    error = f"{reason}: {detail}" if detail else reason
    return {"source_id": str(source_id), "stage": stage, "error": error}


def rejection_reason(row: dict) -> str:
    """The slug part of a rejected row's ``error`` (what summaries count)."""
    return row["error"].split(":", 1)[0]


def validate_row(row: dict, schema: pa.Schema) -> dict:
    """Raise ``ValueError`` naming the column when ``row`` does not fit ``schema``; return the row."""
    missing = [name for name in schema.names if name not in row]
    extra = [name for name in row if name not in schema.names]
    if missing or extra:
        raise ValueError(f"row does not fit schema: missing {missing}, unexpected {extra}")
    pa.Table.from_pylist([row], schema=schema)
    return row
