"""Where image inputs come from: a directory tree, a glob, or Parquet files with an ``image`` column.

One place decides what an input spec means, for the Beam jobs (which read the matched files in
parallel) and for the torch tools (which iterate here, lazily). Paths are local or any filesystem Beam knows (``gs://``).

- a directory: every image file below it, recursively; the first sub-folder under it is the ``label``
  (torchvision ImageFolder style), files directly in it have no label;
- a glob (``data/*/*.jpg``, ``gs://bucket/x/**.png``): the matched files, label as for the directory
  the glob starts in;
- Parquet (``*.parquet`` files, a glob of them, or a directory holding only Parquet): rows with an
  ``image`` binary column; ``id`` and ``label`` columns are carried over when present. The tables of this
  project's jobs (``augmented-*``, ``raw-*``, ``clean-*``, ``embeddings-*`` shards, in the run's ``data/``) are read
  only beside their run's ``summary.json``: without it the run that wrote them was killed or failed
  (``check_finished_runs``).
"""

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from models.common.errors import InputNotFoundError, InputUnreadableError, UsageError
from scraping.records import printable
from transforms.io import run_folder, run_table_prefix
from transforms.schemas import CLEAN_CORPUS, RAW_CORPUS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
GLOB_CHARS = "*?["
# Files looked at to decide whether an input is Parquet or images without listing it all.
KIND_SAMPLE = 1000


@dataclass(frozen=True)
class SourceRecord:
    """One input image before decoding. ``source_id`` is stable across runs (relative path or Parquet id)."""

    source_id: str
    label: str | None
    data: bytes
    # A Parquet row's other columns (``--keep-columns``), carried to the output rows unchanged; never decoded or
    # shown to the model. ``None`` for image files.
    extra: dict | None = None


@dataclass(frozen=True)
class InputPattern:
    """What ``--input`` means, without listing it: ``kind`` ("files" or "parquet"), the ``root`` that labels and
    ids are relative to, and the ``patterns`` to match (Beam ``FileSystems`` syntax, ``**`` recursive): the input
    itself, then one per symlinked folder followed below a local root. ``rejected``: rejected rows for what the
    search found and could not read (a broken link, a link back into folders read already, an unreadable folder)."""

    kind: str
    root: str
    patterns: tuple[str, ...]
    rejected: tuple[dict, ...] = ()

    @property
    def pattern(self) -> str:
        return self.patterns[0]


@dataclass(frozen=True)
class InputSpec:
    """A resolved input: the concrete files."""

    kind: str
    root: str
    paths: tuple[str, ...]


def is_image_path(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _match(pattern: str, limit: int | None = None) -> list[str]:
    """Paths matching ``pattern``; none when nothing is there (a missing folder or bucket). Any other failure (no
    permission, the network, the service) is an ``InputUnreadableError`` that says which."""
    try:
        result = FileSystems.match([pattern], limits=[limit] if limit else None)[0]
    except BeamIOError as exc:
        problems = [failure for failure in _failures(exc) if not _is_not_found(failure)]
        if not problems:
            return []
        raise InputUnreadableError(f"cannot list input {pattern}: {_describe(problems[0])}") from None
    return sorted(m.path for m in result.metadata_list)


def _exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception as exc:  # the back end's own error types: permissions, network, service
        raise InputUnreadableError(f"cannot read input {path}: {_describe(exc)}") from None


def _failures(exc: BaseException) -> list[BaseException]:
    """The underlying errors of a (nested) ``BeamIOError``."""
    details = getattr(exc, "exception_details", None)
    if not details:
        return [exc]
    return [failure for inner in details.values() for failure in _failures(inner)]


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or getattr(exc, "code", None) == 404


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PermissionError) or getattr(exc, "code", None) in (401, 403):
        return f"permission denied ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


def glob_escape(path: str) -> str:
    """``path`` as a Beam pattern that matches itself: ``photos[1]`` → ``photos[\\[]1]`` (Beam's patterns have no
    escape character; a one-character class does it, and ``[\\[]`` rather than ``[[]``, which Python's ``re``
    warns may one day mean a nested set)."""
    return "".join("[\\[]" if ch == "[" else f"[{ch}]" if ch in GLOB_CHARS else ch for ch in path)


def input_pattern(spec: str, what: str = "input") -> InputPattern:
    """Decide what ``spec`` is from a sample of its files; raise ``InputNotFoundError`` when nothing matches.

    A folder is a folder even when its name holds glob characters (``photos[1]``); only a spec that names no
    folder is a pattern. Below a local folder, symlinked folders are followed once (``local_links``). ``what``
    names the flag in messages (``--style-images``).
    """
    spec = spec.rstrip("/") if len(spec) > 1 else spec
    if any(ch in spec for ch in GLOB_CHARS) and not _match(f"{glob_escape(spec)}/**", 1):
        pattern = spec
        root = spec[: min(spec.index(ch) for ch in GLOB_CHARS if ch in spec)].rsplit("/", 1)[0]
    elif spec.endswith(".parquet") or is_image_path(spec):
        if not _exists(spec):
            raise InputNotFoundError(f"{what} not found: {spec}")
        pattern, root = glob_escape(spec), posixpath.dirname(spec)
    else:
        pattern, root = f"{glob_escape(spec)}/**", spec
    links, rejected = local_links(spec) if pattern.endswith("/**") and os.path.isdir(spec) else ((), ())
    sample = [path for path in _match(pattern, KIND_SAMPLE) if not is_side_file(path, root)]
    for link in links:
        sample += [path for path in _match(link, KIND_SAMPLE) if not is_side_file(path, root)]
    if not sample and not rejected:
        if pattern.endswith("/**") and os.path.isfile(spec):  # local only: a remote check would cost a request
            raise UsageError(
                f"{what} {spec} is a file but not an image or .parquet file; give a folder, a glob, an image or Parquet"
            )
        if os.path.isdir(spec):
            raise InputNotFoundError(f"{what} folder is empty: {spec}")
        raise InputNotFoundError(f"{what} not found or empty: {spec}")
    has_parquet = any(p.endswith(".parquet") for p in sample)
    # A job's contact sheet sits beside its tables: it does not make a table folder a mix of kinds.
    has_images = any(is_image_path(p) and not (has_parquet and relative_id(p, root) == "preview.png") for p in sample)
    if has_parquet and has_images:
        raise UsageError(f"input mixes Parquet and image files: {spec}; point --input at one kind")
    if has_parquet:
        check_finished_runs(sample, what)
        # Beam's ** spans folders: dir/**.parquet is every Parquet file below dir
        patterns = [p + ".parquet" if p.endswith("/**") else p for p in (pattern, *links)]
        return InputPattern("parquet", root, tuple(patterns), tuple(rejected))
    if not has_images and not rejected:
        raise InputNotFoundError(
            f"no image files (or .parquet) found under {spec}" + ("" if what == "input" else f" ({what})")
        )
    return InputPattern("files", root, (pattern, *links), tuple(rejected))


def check_finished_runs(paths: list[str], what: str = "input") -> None:
    """Refuse a job's tables whose folder has no ``summary.json``: the run that wrote them was killed or failed
    before its end (a job writes its summary last, ``transforms.io``), and its tables may lack shards or rows."""
    folders = {}
    for path in paths:
        prefix = run_table_prefix(path)
        if prefix is not None:
            folders.setdefault(run_folder(path), set()).add(prefix)
    for folder, prefixes in sorted(folders.items()):
        if not _exists(f"{folder}/summary.json" if folder else "summary.json"):
            tables = ", ".join(f"{prefix}-*.parquet" for prefix in sorted(prefixes))
            raise InputUnreadableError(
                f"{what} {folder} looks like an unfinished run ({tables} but no summary.json, which a job writes "
                "last): re-run the job that wrote it"
            )


def search_area(spec: str) -> tuple[str, bool]:
    """Where reading ``spec`` looks: ``(path, below)``. A folder: itself, and every folder below it (``below``); a
    glob: the folder it starts in, and ``below`` when it descends (``**``, or a ``/`` after its first wildcard); a
    file: itself. What ``pipelines.cli.check_apart`` keeps an output away from."""
    spec = spec.rstrip("/") if len(spec) > 1 else spec
    if any(ch in spec for ch in GLOB_CHARS) and not ("://" not in spec and os.path.isdir(spec)):
        start = min(spec.index(ch) for ch in GLOB_CHARS if ch in spec)
        head = spec[:start]
        root = (head.rsplit("/", 1)[0] or "/") if "/" in head else "."
        return root, "**" in spec or "/" in spec[start:]
    is_file = spec.endswith(".parquet") or is_image_path(spec) or ("://" not in spec and os.path.isfile(spec))
    return spec, not is_file


def local_links(root: str) -> tuple[list[str], list[dict]]:
    """Below a local ``root``: patterns for the symlinked folders to follow, and rejected rows for the links
    that are not followed.

    Beam's listing (``os.walk``) neither enters a symlinked folder nor keeps a link that points nowhere, so both
    would be lost silently. Each real folder is read once: a link to a folder outside everything read so far is
    followed (its files get ids under the link's name); a link to a folder read already, or to one that holds
    it (a loop), is a rejected row standing for no records (its files are read under their other path); a
    broken link is a rejected row for one record, and so is a folder that cannot be listed (its contents cannot be
    counted).
    """
    from transforms.schemas import rejected_row

    read = [os.path.realpath(root)]
    patterns, rejected, folders = [], [], [root]

    def overlaps(target: str) -> bool:
        return any(
            target == seen or target.startswith(seen + os.sep) or seen.startswith(target + os.sep) for seen in read
        )

    while folders:
        folder = folders.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            rejected.append(rejected_row(relative_id(folder, root), "read", "unreadable_folder", str(exc)))
            continue
        for entry in entries:
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                continue
            source_id, target = relative_id(entry.path, root), os.path.realpath(entry.path)
            if not os.path.exists(entry.path):
                rejected.append(rejected_row(source_id, "read", "broken_symlink", f"points to {target}"))
            elif os.path.isdir(target) and overlaps(target):
                detail = f"points to {target}, a folder read already under another path"
                rejected.append(rejected_row(source_id, "read", "symlink_to_folder_read", detail, records=0))
            elif os.path.isdir(target):
                read.append(target)
                patterns.append(f"{glob_escape(entry.path)}/**")
                folders.append(entry.path)
    return patterns, rejected


def is_side_file(path: str, root: str) -> bool:
    """A file a job writes beside its tables, never an input: ``rejected-*.parquet`` (in ``rejected/``), a run's
    ``summary.json``, anything in a folder named ``_…`` or ``.…`` (collect's ``_state/`` spool) or ``beam-temp-…``
    (the shards of a running or killed Beam job). Pointing ``--input`` at a job's output folder reads its table only."""
    parts = relative_id(path, root).split("/")
    name = parts[-1]
    if (name.startswith("rejected-") and name.endswith(".parquet")) or parts == ["summary.json"]:
        return True
    return any(part.startswith(("_", ".", "beam-temp-")) for part in parts[:-1])


def resolve_input(spec: str, what: str = "input") -> InputSpec:
    """List every file of ``spec`` (images only, or Parquet tables only). For tools that iterate on one machine."""
    found = input_pattern(spec, what)
    paths = sorted({path for pattern in found.patterns for path in _match(pattern)})
    wanted = (lambda p: p.endswith(".parquet")) if found.kind == "parquet" else is_image_path
    kept = [p for p in paths if wanted(p) and not is_side_file(p, found.root)]
    return InputSpec(found.kind, found.root, tuple(kept))


def count_records(spec: InputSpec) -> int:
    """How many records (images) ``spec`` holds: its image files, or the rows of its Parquet tables (read from
    each file's footer, not its data). Counts of paintings or inputs are of records, never of files: one Parquet
    file can hold a whole collection. A file whose footer cannot be read counts no record (the job's reader makes
    it a rejected row)."""
    if spec.kind != "parquet":
        return len(spec.paths)
    total = 0
    for path in spec.paths:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        except Exception:  # as transforms.read: not Parquet, a damaged footer, a file gone since matching
            continue
    return total


def table_paths(spec: str, prefix: str) -> list[str]:
    """Parquet files of ``--input``; in a job's output folder only its ``{prefix}-*`` table."""
    found = resolve_input(spec)
    if found.kind != "parquet":
        raise UsageError(f"{spec} holds image files; expected {prefix}-*.parquet files")
    named = [path for path in found.paths if path.rsplit("/", 1)[-1].startswith(f"{prefix}-")]
    return named or list(found.paths)


def relative_id(path: str, root: str) -> str:
    """A file's id: its path relative to the input root (``cats/1.png``), as valid UTF-8 text. The bytes of a file
    name that is not UTF-8 (which reach Python as lone surrogates, PEP 383) are written as escapes
    (``caf\\xe9.png``): unlike a replacement character, escapes keep two such names two ids."""
    if root and path.startswith(root.rstrip("/") + "/"):
        relative = path[len(root.rstrip("/")) + 1 :]
    else:
        relative = posixpath.basename(path)
    try:
        return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (not from the file system)
        return printable(relative)


def label_of(source_id: str, label_depth: int = 1) -> str | None:
    """ImageFolder rule: the ``label_depth``-th folder of the relative path (1: the first sub-folder under the
    input, ``data/<class>/x.jpg``; 2: the second, ``data/<split>/<class>/x.jpg``; 0: no label), or ``None`` for a
    file with fewer folders above it."""
    folders = source_id.split("/")[:-1]
    return folders[label_depth - 1] if 0 < label_depth <= len(folders) else None


def list_classes(spec: "str | InputSpec", label_depth: int = 1) -> list[str]:
    """The job's sorted class list: the label folders of a folder input (at ``label_depth``), or the distinct
    non-null values of a Parquet input's ``label`` column (as strings, as the rows carry them). Read on the launcher:
    file names only, or the ``label`` column alone."""
    spec = resolve_input(spec) if isinstance(spec, str) else spec
    if spec.kind != "parquet":
        labels = {label_of(relative_id(path, spec.root), label_depth) for path in spec.paths}
    else:
        labels = set()
        for path in spec.paths:
            try:
                with FileSystems.open(path, compression_type="uncompressed") as handle:
                    parquet = pq.ParquetFile(handle)
                    if "label" in parquet.schema_arrow.names and image_column_problem(parquet.schema_arrow) is None:
                        labels.update(parquet.read(columns=["label"]).column("label").unique().to_pylist())
            except Exception:  # as count_records: the job's reader makes it a rejected row
                continue
        labels = {None if label is None else str(label) for label in labels}
    return sorted(label for label in labels if label is not None)


def parquet_schema(spec: "InputSpec", ignore: tuple[str, ...] = ("id", "label", "image")) -> pa.Schema:
    """The union of the columns (but ``ignore``) of ``spec``'s Parquet files that hold images (footers only): a
    column some files lack is null in their rows. A ``UsageError`` naming the column and two files where one column
    has two types, since their rows could not share one output table. The ``ignore``d columns may differ (an ``id``
    of nulls, a file without labels): the reader maps them."""
    fields, seen_in = {}, {}
    for path in spec.paths:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                schema = pq.ParquetFile(handle).schema_arrow
        except Exception:  # as count_records: the job's reader makes it a rejected row
            continue
        if image_column_problem(schema) is not None:  # rejected whole by the reader: its columns go nowhere
            continue
        for field in schema.remove_metadata():
            if field.name in ignore:
                continue
            if field.name not in fields:
                fields[field.name], seen_in[field.name] = field, path
            elif not field.type.equals(fields[field.name].type):
                raise UsageError(
                    f"Parquet input column {field.name} is {fields[field.name].type} in {seen_in[field.name]} but "
                    f"{field.type} in {path}; give it one type, or leave it out with --keep-columns"
                )
    return pa.schema(list(fields.values()))


def read_file(path: str) -> bytes:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return handle.read()


def iter_parquet_batches(paths, columns: list[str] | None = None, batch_rows: int = 64):
    """Stream ``pyarrow.RecordBatch``es of ``columns`` (those present) from Parquet files, a batch at a time."""
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in columns if c in parquet.schema_arrow.names] if columns else None
            yield from parquet.iter_batches(batch_size=batch_rows, columns=present)


def image_column_problem(schema: pa.Schema) -> tuple[str, str] | None:
    """Why no row of a Parquet file with ``schema`` can be an image, as ``(reason, detail)``; ``None`` if they can."""
    if "image" not in schema.names:
        return "no_image_column", "no 'image' column"
    kind = schema.field("image").type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return "image_not_binary", f"the 'image' column holds {kind}, not encoded image bytes"
    return None


def table_records(
    columns: dict[str, list], file_id: str, first_row: int, extra_columns: tuple[str, ...] = ()
) -> Iterator[SourceRecord]:
    """Rows of one Parquet batch (``RecordBatch.to_pydict()`` of ``id``, ``label``, ``image`` and
    ``extra_columns``) as records.

    ``id`` falls back to ``{file}:{row}`` when the column is absent or the value null; ``label`` is a string (a
    numeric class becomes ``"3"``) or ``None``; a null ``image`` is empty bytes (rejected as ``empty_file``); the
    ``extra_columns`` values go to ``extra`` as they are (``None`` when there are none).
    The one reading of a row, for the Beam reader and for ``iter_records`` alike.
    """
    ids, labels = columns.get("id"), columns.get("label")
    for i, data in enumerate(columns["image"]):
        row_id = None if ids is None else ids[i]
        label = None if labels is None else labels[i]
        source_id = f"{file_id}:{first_row + i}" if row_id is None else str(row_id)
        extra = {name: columns[name][i] for name in extra_columns} if extra_columns else None
        yield SourceRecord(source_id, None if label is None else str(label), data or b"", extra)


def parquet_records(spec: InputSpec, batch_rows: int = 64) -> Iterator[SourceRecord]:
    """Rows of Parquet inputs as records (``table_records``), one batch in memory at a time."""
    for path in spec.paths:
        row_number = 0
        file_id = relative_id(path, spec.root)
        for batch in iter_parquet_batches([path], ["id", "label", "image"], batch_rows):
            problem = image_column_problem(batch.schema)
            if problem is not None:
                raise UsageError(f"Parquet input {path}: {problem[1]}")
            yield from table_records(batch.to_pydict(), file_id, row_number)
            row_number += batch.num_rows


def iter_records(spec: str | InputSpec) -> Iterator[SourceRecord]:
    """Every input image as a ``SourceRecord``, lazily (one file or one Parquet batch in memory at a time)."""
    spec = resolve_input(spec) if isinstance(spec, str) else spec
    if spec.kind == "parquet":
        yield from parquet_records(spec)
        return
    for path in spec.paths:
        source_id = relative_id(path, spec.root)
        yield SourceRecord(source_id, label_of(source_id), read_file(path))


# What makes a table a clean corpus: the columns pipelines.clean adds to the raw corpus (the cleaned caption ``text``
# and the ``phash`` it deduplicated on), and the ``id`` and ``image`` every post needs.
CLEAN_COLUMNS = ("id", "image", *(name for name in CLEAN_CORPUS.names if name not in RAW_CORPUS.names))


def clean_corpus_paths(spec: str) -> list[str]:
    """The clean-*.parquet files of ``--input``; a ``UsageError`` when a table lacks the clean corpus's columns (a raw
    corpus from pipelines.collect would otherwise train on uncleaned captions)."""
    paths = table_paths(spec, "clean")
    for path in paths:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                names = pq.ParquetFile(handle).schema_arrow.names
        except (OSError, pa.ArrowException) as exc:
            raise InputUnreadableError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
        missing = [name for name in CLEAN_COLUMNS if name not in names]
        if missing:
            columns = f"{', '.join(missing)} column{'s' if len(missing) > 1 else ''}"
            raise UsageError(
                f"{spec} is not a clean corpus ({posixpath.basename(path)} has no {columns}); "
                f"clean it first: python -m pipelines.clean --input {spec} --output CLEAN, then pass --input CLEAN"
            )
    return paths
