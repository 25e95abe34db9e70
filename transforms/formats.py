"""Augment's output formats besides Parquet, one writer each, both through Beam's file sink (``WriteToFiles``:
temporary files, renamed into place once all are written), into the run's ``OUT/data/`` (``transforms.io``):

- ``imagefolder``: ``OUT/data/<label>/<id>.<ext>``, what ``torchvision.datasets.ImageFolder`` reads;
- ``webdataset``: ``OUT/data/augmented-SSSSS-of-NNNNN.tar`` shards of ``--shard-size`` samples, each sample
  ``KEY.jpg`` (or ``.png``/``.webp``), ``KEY.cls`` (the label index) and ``KEY.json`` (every other column), what
  ``webdataset`` and ``datasets.load_dataset("webdataset", ...)`` read.

Keys are zero-padded ranks of the row ids in sorted order (img2dataset's convention: no dots, which would split a
WebDataset key). The row id stays in the json. Bytes are deterministic: samples sorted by id, member mtimes,
owners and modes fixed. ``OUT/README.md``, a Hugging Face dataset card, points ``load_dataset(OUT)`` at ``data/``.
"""

import base64
import hashlib
import io
import json
import math
import tarfile
import uuid

import apache_beam as beam
from apache_beam.io.fileio import FileSink, WriteToFiles
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.value_provider import StaticValueProvider
from apache_beam.pvalue import AsSingleton

from models.common.files import MAX_FILE_NAME_BYTES, safe_file_name, write_atomically
from transforms.io import DATA_FOLDER, TEMP_PREFIX, output_path

# File extension of each --format (transforms.images.FORMATS): the one WebDataset and ImageFolder readers decode.
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
UNLABELLED = "_unlabelled"  # the ImageFolder class folder of rows without a label (--label-depth 0, or empty)
KEY_DIGITS = 9  # img2dataset's key width: 1e9 samples before keys grow
# Characters escaped in a file name (as %XX of their UTF-8 bytes): path separators, ``%`` itself (so escaping is
# one-to-one: two ids stay two names), what Windows refuses, and anything not printable. Letters of any script stay.
ESCAPED = set('/\\%:*?"<>|')
# A stem longer than this (UTF-8 bytes; 8 more are left for the extension) is cut and given a digest of the whole
# id: ext4 and APFS allow 255 bytes a component (models.common.files.MAX_FILE_NAME_BYTES).
NAME_BYTES = MAX_FILE_NAME_BYTES - 8


def file_stem(text: str) -> str:
    """``text`` (a row id, a label) as one file-name component: ``rocket/rocket_000.jpg#1`` →
    ``rocket%2Frocket_000.jpg#1``. Escaping is one-to-one, so distinct ids never share a file; a leading dot (a
    hidden file) is escaped too; a name too long for the file system keeps its start and ends in ``~`` and 16 hex
    digits of the id's SHA-256."""
    stem = "".join(
        "".join(f"%{byte:02X}" for byte in ch.encode()) if ch in ESCAPED or not ch.isprintable() else ch for ch in text
    )
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem.encode()) > NAME_BYTES:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        stem = stem.encode()[: NAME_BYTES - 17].decode(errors="ignore") + "~" + digest
    return safe_file_name(stem, "row id")


def image_file_path(row: dict) -> str:
    """``<label>/<id>.<ext>``: where a row's image lands in an ImageFolder tree."""
    label = file_stem(row["label"]) if row["label"] else UNLABELLED
    return f"{label}/{file_stem(row['id'])}.{EXTENSIONS[row['image_format']]}"


class ImageFileSink(FileSink):
    """One file per row: its encoded image bytes as they are (no re-encoding)."""

    def open(self, fh):
        self._fh = fh

    def write(self, row):
        self._fh.write(row["image"])

    def flush(self):
        pass  # one file per image, written whole by write(): nothing is buffered here


def _named_by_destination(window, pane, shard_index, total_shards, compression, destination):
    return destination  # one file per destination: its name is the destination


class WriteImageFolder(beam.PTransform):
    """Rows → ``OUT/data/<label>/<id>.<ext>``; outputs one element once every file is in place (what
    ``WriteSummary`` waits on)."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, rows):
        data = output_path(self.output_dir, DATA_FOLDER)
        temp = output_path(self.output_dir, f"{TEMP_PREFIX}imagefolder-{uuid.uuid4().hex}")

        def make_class_folder(row):
            # Beam's local rename does not create the folder a file moves into (and logs the failure at debug
            # level only): the class folder must exist first. Object stores have no folders: mkdirs is a no-op.
            try:
                FileSystems.mkdirs(output_path(data, image_file_path(row).split("/")[0]))
            except OSError:
                pass  # exists already
            return row

        written = (
            rows
            | "ClassFolders" >> beam.Map(make_class_folder)
            | "WriteImages"
            >> WriteToFiles(
                data,
                file_naming=_named_by_destination,
                destination=image_file_path,
                sink=lambda _: ImageFileSink(),
                temp_directory=StaticValueProvider(str, temp),
            )
        )
        return written | "AllImages" >> beam.combiners.Count.Globally() | "DropTemp" >> beam.Map(_drop_folder, temp)


def _drop_folder(count, folder):
    """Delete the (empty, once its files are renamed) temporary folder of a ``WriteToFiles``."""
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
    return count


class TarShardSink(FileSink):
    """One WebDataset shard per element ``(file name, rows sorted by id, first key)``: per row ``KEY.<ext>``,
    ``KEY.cls`` (the label index, when the row has a label) and ``KEY.json`` (every column but the image).
    Members carry fixed mtimes, owners and modes, so a shard's bytes depend on its rows alone."""

    def open(self, fh):
        # closed in flush, once Beam has written every element of the file
        self._tar = tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT)  # noqa: SIM115

    def write(self, shard):
        _, rows, first_key = shard
        for number, row in enumerate(rows):
            key = f"{first_key + number:0{KEY_DIGITS}d}"
            self._add(f"{key}.{EXTENSIONS[row['image_format']]}", row["image"])
            if row["label_index"] is not None:
                self._add(f"{key}.cls", str(row["label_index"]).encode())
            columns = {name: _json_value(value) for name, value in row.items() if name != "image"}
            # default=str: a carried timestamp, date or decimal as its text
            self._add(f"{key}.json", json.dumps(columns, sort_keys=True, default=str).encode())

    def _add(self, name: str, data: bytes):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def flush(self):
        self._tar.close()  # writes the end-of-archive blocks; the file handle stays open for Beam to close


def _json_value(value):
    """A column value as JSON: bytes (a carried binary column) as base64 text, the rest as they are."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {name: _json_value(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return value


class WriteWebDataset(beam.PTransform):
    """Rows → ``OUT/data/{prefix}-SSSSS-of-NNNNN.tar``, ``shard_size`` samples a shard in id order (the last one
    fewer); outputs one element once every shard is in place. The ids (not the images) of every row meet in one
    place to be ranked: a few tens of bytes a row."""

    def __init__(self, output_dir: str, shard_size: int, prefix: str = "augmented"):
        super().__init__()
        self.output_dir = output_dir
        self.shard_size = shard_size
        self.prefix = prefix

    def expand(self, rows):
        data = output_path(self.output_dir, DATA_FOLDER)
        temp = output_path(self.output_dir, f"{TEMP_PREFIX}{self.prefix}-{uuid.uuid4().hex}")
        size, prefix = self.shard_size, self.prefix
        ranks = (
            rows
            | "Ids" >> beam.Map(lambda row: row["id"])
            | "AllIds" >> beam.combiners.ToList()
            | "Rank" >> beam.Map(lambda ids: {row_id: rank for rank, row_id in enumerate(sorted(ids))})
        )

        def to_shard(row, ranks):
            return ranks[row["id"]] // size, row

        def shard_of(keyed, ranks):
            index, rows = keyed
            total = math.ceil(len(ranks) / size)
            name = f"{prefix}-{index:05d}-of-{total:05d}.tar"
            return name, sorted(rows, key=lambda row: row["id"]), index * size

        written = (
            rows
            | "ShardOf" >> beam.Map(to_shard, AsSingleton(ranks))
            | "GroupShards" >> beam.GroupByKey()
            | "SortShard" >> beam.Map(shard_of, AsSingleton(ranks))
            | "WriteShards"
            >> WriteToFiles(
                data,
                file_naming=_named_by_destination,
                destination=lambda shard: shard[0],
                sink=lambda _: TarShardSink(),
                temp_directory=StaticValueProvider(str, temp),
            )
        )
        return written | "AllShards" >> beam.combiners.Count.Globally() | "DropTemp" >> beam.Map(_drop_folder, temp)


def dataset_card(output_format: str, features: list[dict] | None = None, prefix: str = "augmented") -> str:
    """``OUT/README.md``: a Hugging Face dataset card whose ``configs`` point ``load_dataset(OUT)`` at the run's
    data (split ``prefix``), never at ``rejected/``, ``summary.json`` or ``preview.png``; ``features``
    (``transforms.schemas.huggingface_features``, for Parquet) make ``image`` an ``Image`` and ``label`` a
    ``ClassLabel``. (ImageFolder and WebDataset get theirs from ``datasets``' own builders.) YAML is written as JSON,
    which YAML reads as it is."""
    paths = {
        "parquet": f"{DATA_FOLDER}/{prefix}-*.parquet",
        "webdataset": f"{DATA_FOLDER}/{prefix}-*.tar",
        "imagefolder": f"{DATA_FOLDER}/**",
    }
    return (
        "---\n"
        "configs:\n"
        "- config_name: default\n"
        "  data_files:\n"
        f"  - split: {prefix}\n"
        f'    path: "{paths[output_format]}"\n'
        + (f"dataset_info: {json.dumps({'features': features})}\n" if features else "")
        + "---\n\n"
        f"# Stylised images ({output_format})\n\n"
        "Written by stylebeam's `pipelines.augment`: the images are in `data/`, the inputs that could not be used\n"
        "in `rejected/` (with the reason), the job's settings, counts and sorted class list in `summary.json`.\n"
    )


class WriteDatasetCard(beam.PTransform):
    """Write ``OUT/README.md`` (``dataset_card``); outputs its path once written."""

    def __init__(self, output_dir: str, output_format: str, features: list[dict] | None = None):
        super().__init__()
        self.path = output_path(output_dir, "README.md")
        self.card = dataset_card(output_format, features)

    def expand(self, pbegin):
        path = self.path

        def write(card):
            write_atomically(path, card.encode())
            return path

        return pbegin | "Card" >> beam.Create([self.card]) | "WriteCard" >> beam.Map(write)
