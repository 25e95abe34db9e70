"""``ReadImages``: an input pattern → ``SourceRecord``s, lazily and in parallel; unreadable files → ``rejected``.

Files: ``MatchAll`` over the input's patterns (the input, then each symlinked folder followed below it), then a
``Reshuffle`` so that the reads (and everything fused after them) spread over workers instead of staying on the
one that listed the files. A job's side files (``rejected-*``, ``summary.json``, ``_state/``, ``beam-temp-*``) are
skipped and counted as ``side_files_skipped``.

Parquet: each file is split into its row groups, reshuffled, and read one row group at a time; a row becomes a
record through ``transforms.sources.table_records``, as in ``iter_records``. A file or row group that cannot be
read is one rejected row whose ``records`` says how many input rows it stood for. An ``id`` that several rows
share is kept for the first of them (by file path, then row number: the same on every run) and the later copies
are rejected as ``duplicate_id``: only the ``id`` column goes through the shuffle that finds them.
"""

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, TaggedOutput

from transforms.schemas import rejected_row
from transforms.sources import (
    InputPattern,
    SourceRecord,
    image_column_problem,
    is_image_path,
    is_side_file,
    label_of,
    relative_id,
    table_records,
)

REJECTED = "rejected"
STAGE = "read"


class ReadFileFn(beam.DoFn):
    def __init__(self, root: str, label_depth: int = 1):
        self.root = root
        self.label_depth = label_depth
        self.read_counter = Metrics.counter("stylebeam", "images_read")
        self.side_files = Metrics.counter("stylebeam", "side_files_skipped")

    def process(self, metadata):
        if is_side_file(metadata.path, self.root):
            self.side_files.inc()
            return
        source_id = relative_id(metadata.path, self.root)
        if not is_image_path(metadata.path):
            yield TaggedOutput(REJECTED, rejected_row(source_id, STAGE, "not_an_image_file", metadata.path))
            return
        try:
            with FileSystems.open(metadata.path, compression_type="uncompressed") as handle:
                data = handle.read()
        except Exception as exc:  # permissions, a file deleted after matching, a transient error after retries
            yield TaggedOutput(REJECTED, rejected_row(source_id, STAGE, "unreadable_file", str(exc)))
            return
        self.read_counter.inc()
        yield SourceRecord(source_id, label_of(source_id, self.label_depth), data)


class SplitRowGroupsFn(beam.DoFn):
    """A Parquet file → ``(path, row_group, first_row, rows)`` work items (footer read only)."""

    def __init__(self, root: str):
        self.root = root
        self.side_files = Metrics.counter("stylebeam", "side_files_skipped")

    def process(self, metadata):
        if is_side_file(metadata.path, self.root):
            self.side_files.inc()
            return
        file_id = relative_id(metadata.path, self.root)
        try:
            with FileSystems.open(metadata.path, compression_type="uncompressed") as handle:
                parquet = pq.ParquetFile(handle)
                schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
                groups = [parquet.metadata.row_group(group).num_rows for group in range(parquet.num_row_groups)]
        except Exception as exc:  # not Parquet, a damaged footer, a file gone since matching: its rows are unknown
            yield TaggedOutput(REJECTED, rejected_row(file_id, STAGE, "unreadable_parquet", str(exc)))
            return
        problem = image_column_problem(schema)
        if problem is not None:  # one row that says how many input rows it stands for
            reason, detail = problem
            row = rejected_row(file_id, STAGE, reason, f"{detail} ({num_rows} rows)", records=num_rows)
            yield TaggedOutput(REJECTED, row)
            return
        first_row = 0
        for group, rows in enumerate(groups):
            yield metadata.path, group, first_row, rows
            first_row += rows


def _read_row_group(path: str, group: int, columns: tuple[str, ...]) -> dict:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        parquet = pq.ParquetFile(handle)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        return parquet.read_row_group(group, columns=present).to_pydict()


class RowGroupIdsFn(beam.DoFn):
    """A row group → ``(id, (file, row))`` for every row with an ``id`` (the column alone is read)."""

    def __init__(self, root: str):
        self.root = root

    def process(self, item):
        path, group, first_row, _ = item
        try:
            ids = _read_row_group(path, group, ("id",)).get("id")
        except Exception:  # ReadRowGroupFn reads it again and dead-letters it with the reason
            return
        file_id = relative_id(path, self.root)
        for i, row_id in enumerate(ids or []):
            if row_id is not None:
                yield str(row_id), (file_id, first_row + i)


class FirstAndCount(beam.CombineFn):
    """Per id: the first position it was seen at (file, row) and how many rows hold it."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, accumulator, position):
        first, count = accumulator
        return (position if first is None else min(first, position)), count + 1

    def merge_accumulators(self, accumulators):
        firsts = [first for first, _ in accumulators if first is not None]
        return (min(firsts) if firsts else None), sum(count for _, count in accumulators)

    def extract_output(self, accumulator):
        return accumulator


class ReadRowGroupFn(beam.DoFn):
    """A row group → records; a row whose id an earlier row holds (side input ``repeated``: id → kept position)
    is rejected as ``duplicate_id``. ``extra_columns``: the columns carried to the output rows (``--keep-columns``)."""

    def __init__(self, root: str, extra_columns: tuple[str, ...] = ()):
        self.root = root
        self.extra_columns = tuple(extra_columns)
        self.read_counter = Metrics.counter("stylebeam", "images_read")
        self.duplicates = Metrics.counter("stylebeam", "duplicate_ids")

    def process(self, item, repeated):
        path, group, first_row, num_rows = item
        file_id = relative_id(path, self.root)
        try:
            table = _read_row_group(path, group, ("id", "label", "image", *self.extra_columns))
        except Exception as exc:  # a corrupt row group costs its rows (dead-lettered), not the job
            rows = f"{file_id}:rows{first_row}+"
            row = rejected_row(rows, STAGE, "unreadable_row_group", f"{exc} ({num_rows} rows)", records=num_rows)
            yield TaggedOutput(REJECTED, row)
            return
        extra_columns = tuple(name for name in self.extra_columns if name in table)
        for i, record in enumerate(table_records(table, file_id, first_row, extra_columns)):
            kept = repeated.get(record.source_id)
            if kept is not None and kept != (file_id, first_row + i):
                self.duplicates.inc()
                detail = f"{file_id}:{first_row + i} repeats the id of {kept[0]}:{kept[1]}, which was kept"
                yield TaggedOutput(REJECTED, rejected_row(record.source_id, STAGE, "duplicate_id", detail))
                continue
            self.read_counter.inc()
            yield record


class ReadImages(beam.PTransform):
    """PBegin → ``{"records": SourceRecord, "rejected": rejected rows}``. ``label_depth``: which folder level
    labels an image file (``transforms.sources.label_of``); ``extra_columns``: the Parquet columns each record
    carries in ``extra``."""

    def __init__(self, source: InputPattern, label_depth: int = 1, extra_columns: tuple[str, ...] = ()):
        super().__init__()
        self.source = source
        self.label_depth = label_depth
        self.extra_columns = tuple(extra_columns)

    def expand(self, pbegin):
        source = self.source
        found = (
            pbegin
            | "Patterns" >> beam.Create(source.patterns)
            | "Match" >> fileio.MatchAll()
            | "Spread" >> beam.Reshuffle()
        )
        search_rejected = pbegin | "SearchRejected" >> beam.Create(list(source.rejected))
        if source.kind == "parquet":
            split = found | "SplitRowGroups" >> beam.ParDo(SplitRowGroupsFn(source.root)).with_outputs(
                REJECTED, main="groups"
            )
            repeated = (
                split.groups
                | "RowGroupIds" >> beam.ParDo(RowGroupIdsFn(source.root))
                | "FirstCopyPerId" >> beam.CombinePerKey(FirstAndCount())
                | "Repeated" >> beam.Filter(lambda item: item[1][1] > 1)
                | "KeptCopy" >> beam.Map(lambda item: (item[0], item[1][0]))
            )
            read = (
                split.groups
                | "SpreadGroups" >> beam.Reshuffle()
                | "ReadRowGroups"
                >> beam.ParDo(ReadRowGroupFn(source.root, self.extra_columns), AsDict(repeated)).with_outputs(
                    REJECTED, main="records"
                )
            )
            rejected = (search_rejected, split[REJECTED], read[REJECTED]) | "ParquetRejected" >> beam.Flatten()
            return {"records": read.records, "rejected": rejected}
        read_files = ReadFileFn(source.root, self.label_depth)
        read = found | "ReadFiles" >> beam.ParDo(read_files).with_outputs(REJECTED, main="records")
        rejected = (search_rejected, read[REJECTED]) | "FilesRejected" >> beam.Flatten()
        return {"records": read.records, "rejected": rejected}
