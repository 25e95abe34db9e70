"""Where image inputs come from: a directory tree, a glob, or Parquet files with an ``image`` column.

One place decides what an input spec means, for the Beam jobs (which read the matched files in
parallel) and for the torch tools (which iterate here, lazily). Paths are local or any fsspec URL.

- a directory: every image file below it, recursively; the first sub-folder under it is the ``label``
  (torchvision ImageFolder style), files directly in it have no label;
- a glob (``data/*/*.jpg``, ``gs://bucket/x/**.png``): the matched files, label as for the directory
  the glob starts in;
- Parquet (``*.parquet`` files, a glob of them, or a directory holding only Parquet): rows with an
  ``image`` binary column; ``id`` and ``label`` columns are carried over when present.
"""

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from models.errors import InputNotFoundError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceRecord:
    """One input image before decoding. ``source_id`` is stable across runs (relative path or Parquet id)."""

    source_id: str
    label: str | None
    data: bytes


@dataclass(frozen=True)
class InputSpec:
    """A resolved input: the concrete files and how to read them."""

    kind: str  # "files" or "parquet"
    root: str  # directory that labels and source ids are relative to
    paths: tuple[str, ...]
    protocol: str

    def full_path(self, path: str) -> str:
        return path if self.protocol in ("file", "local") else f"{self.protocol}://{path}"


def _filesystem(spec: str):
    fs, _ = fsspec.core.url_to_fs(spec)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, protocol


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def resolve_input(spec: str) -> InputSpec:
    """Turn ``--input`` into the list of files to read; raise ``InputNotFoundError`` when nothing matches."""
    fs, protocol = _filesystem(spec)
    path = fs._strip_protocol(spec)
    if any(ch in path for ch in GLOB_CHARS):
        matched = sorted(fs.glob(path))
        root = path[: min(path.index(ch) for ch in GLOB_CHARS if ch in path)].rsplit("/", 1)[0]
    elif fs.isdir(path):
        matched = sorted(fs.find(path))
        root = path.rstrip("/")
    elif fs.exists(path):
        matched, root = [path], posixpath.dirname(path)
    else:
        raise InputNotFoundError(f"input not found: {spec}")
    parquet = [p for p in matched if p.endswith(".parquet")]
    images = [p for p in matched if _is_image(p)]
    if parquet and images:
        raise UsageError(f"input mixes Parquet and image files: {spec}; point --input at one kind")
    if parquet:
        return InputSpec("parquet", root, tuple(parquet), protocol)
    if not images:
        raise InputNotFoundError(f"no image files (or .parquet) found under {spec}")
    return InputSpec("files", root, tuple(images), protocol)


def relative_id(path: str, root: str) -> str:
    rel = path[len(root) :].lstrip("/") if root and path.startswith(root) else posixpath.basename(path)
    return rel


def label_of(source_id: str) -> str | None:
    """ImageFolder rule: the first folder of the relative path, or ``None`` for files at the top."""
    parts = source_id.split("/")
    return parts[0] if len(parts) > 1 else None


def iter_parquet_batches(paths, columns: list[str] | None = None, batch_rows: int = 64, protocol: str = "file"):
    """Stream ``pyarrow.RecordBatch``es of ``columns`` from Parquet files, one row group at a time."""
    for path in paths:
        full = path if protocol in ("file", "local") or "://" in path else f"{protocol}://{path}"
        with fsspec.open(full, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in columns if c in parquet.schema_arrow.names] if columns else None
            yield from parquet.iter_batches(batch_size=batch_rows, columns=present)


def parquet_records(spec: InputSpec, batch_rows: int = 64) -> Iterator[SourceRecord]:
    """Rows of Parquet inputs as records. ``id`` falls back to ``{file}:{row}`` when the column is absent."""
    for path in spec.paths:
        row_number = 0
        file_id = relative_id(path, spec.root)
        for batch in iter_parquet_batches([path], ["id", "label", "image"], batch_rows, spec.protocol):
            if "image" not in batch.schema.names:
                raise UsageError(f"Parquet input {spec.full_path(path)} has no 'image' column")
            columns = batch.to_pydict()
            for i, data in enumerate(columns["image"]):
                source_id = columns["id"][i] if "id" in columns else f"{file_id}:{row_number}"
                label = columns["label"][i] if "label" in columns else None
                row_number += 1
                yield SourceRecord(str(source_id), label, data or b"")


def iter_records(spec: str | InputSpec) -> Iterator[SourceRecord]:
    """Every input image as a ``SourceRecord``, lazily (one file or one Parquet batch in memory at a time)."""
    spec = resolve_input(spec) if isinstance(spec, str) else spec
    if spec.kind == "parquet":
        yield from parquet_records(spec)
        return
    fs, _ = _filesystem(spec.full_path(spec.paths[0]))
    for path in spec.paths:
        source_id = relative_id(path, spec.root)
        with fs.open(path, "rb") as handle:
            yield SourceRecord(source_id, label_of(source_id), handle.read())
