"""Every Parquet schema the project writes, in one place: the column contracts that users and downstream jobs
rely on (README, "The main job" and "Corpus"). Rows are plain dicts keyed by column name.
"""

import pyarrow as pa

from scraping.records import MEDIA_FIELDS, printable

# How augment writes its stylised rows (--output-format); Parquet is the contract every other command reads.
OUTPUT_FORMATS = ("parquet", "imagefolder", "webdataset")

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


# Arrow type names that Hugging Face ``datasets`` spells its own way (its ``Value`` dtypes); every other primitive
# type is named as Arrow prints it (``int32``, ``string``, ``timestamp[us]``).
HF_DTYPES = {"bool": "bool", "halffloat": "float16", "float": "float32", "double": "float64"}


def huggingface_features(schema: pa.Schema, classes: list[str]) -> list[dict]:
    """The ``dataset_info.features`` of a Hugging Face dataset card (the YAML list ``datasets`` writes,
    ``Features._to_yaml_list``) for a table of ``schema``: every column as ``datasets`` would infer it, except
    ``image``, an ``Image`` (decoded to PIL on access), and ``label``, a ``ClassLabel`` over ``classes`` (the job's
    sorted class list, so it loads as the class index, ``label_index``).

    In the card, not in the Parquet schema's ``huggingface`` metadata: ``datasets`` takes a feature from that
    metadata only where the column's Arrow type is the feature's own storage (``Features.from_arrow_schema``), a
    struct of bytes and path for an ``Image``, an integer for a ``ClassLabel``; this table's ``image`` is binary and
    its ``label`` a string, the contract every other reader relies on. A card's features are cast to instead."""
    features = []
    for field in schema:
        if field.name == "image":
            features.append({"name": "image", "dtype": "image"})
        elif field.name == "label":
            names = {str(index): name for index, name in enumerate(classes)}
            features.append({"name": "label", "dtype": {"class_label": {"names": names}}})
        else:
            features.append({"name": field.name, **_card_type(field.type)})
    return features


def _card_type(arrow_type: pa.DataType) -> dict:
    """One column's type as a card writes it: ``{"dtype": ...}``, ``{"list": ...}`` or ``{"struct": [...]}``."""
    if pa.types.is_struct(arrow_type):
        fields = (arrow_type.field(i) for i in range(arrow_type.num_fields))
        return {"struct": [{"name": field.name, **_card_type(field.type)} for field in fields]}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        inner = _card_type(arrow_type.value_type)
        length = {"length": arrow_type.list_size} if pa.types.is_fixed_size_list(arrow_type) else {}
        return {"list": inner.get("dtype", inner.get("struct", inner)), **length}
    name = str(arrow_type)
    return {"dtype": HF_DTYPES.get(name, name)}


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
