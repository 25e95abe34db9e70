"""Every Parquet schema the project writes, in one place: the column contracts that users and downstream jobs
rely on (README, "The main job" and "Corpus"). Rows are plain dicts keyed by column name.
"""

import pyarrow as pa

from scraping.records import MEDIA_FIELDS, printable

# One dead-letter row per input record that could not be used (or per file or row group that could not be read:
# ``records`` says how many input records the row stands for). ``reason`` is the slug summaries count; ``error`` is
# the human line, "reason: detail".
REJECTED = pa.schema(
    [
        ("source_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
        ("reason", pa.string()),
        ("records", pa.int64()),
    ]
)

AUGMENTED = pa.schema(
    [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("label", pa.string()),
        ("label_index", pa.int32()),  # index of label in the job's sorted class list (summary.json "classes")
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
        # Source pixels → output pixels: x' = (x - x0) * scale, y' = (y - y0) * scale (transforms.decode).
        ("crop_box", pa.list_(pa.float64())),  # (x0, y0, x1, y1) in the source's upright pixels
        ("scale", pa.float64()),  # output px per source px
        ("stylizer", pa.string()),
    ]
)
# Input columns the augmented rows carry under their own names already (``id`` is the source id, ``label`` the label).
MAPPED_INPUT_COLUMNS = ("id", "label", "image")


def augmented_schema(input_schema: pa.Schema | None = None, keep: tuple[str, ...] = ()) -> pa.Schema:
    """``AUGMENTED`` plus the input's ``keep`` columns (with their Parquet types), after ours."""
    if not keep:
        return AUGMENTED
    return pa.schema([*AUGMENTED, *(input_schema.field(name) for name in keep)])


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


def rejected_row(source_id: str, stage: str, reason: str, detail: str = "", records: int = 1) -> dict:
    """A dead-letter row: ``reason`` is a slug (``corrupt_image``), ``detail`` what a person needs to see."""
    error = printable(f"{reason}: {detail}" if detail else reason)
    return {
        "source_id": printable(str(source_id)),
        "stage": stage,
        "error": error,
        "reason": reason,
        "records": records,
    }
