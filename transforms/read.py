"""``ReadImages``: an input pattern → ``SourceRecord``s, lazily and in parallel; unreadable files → ``rejected``.

Files: ``MatchFiles`` then a ``Reshuffle`` so that the reads (and everything fused after them) spread
over workers instead of staying on the one that listed the files. Parquet: each file is split into its
row groups, reshuffled, and read one row group at a time; a row becomes a record through
``transforms.sources.table_records``, as in ``iter_records``. A file or row group that cannot be read is one
rejected row whose ``records`` says how many input rows it stood for.
"""

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

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
    def __init__(self, root: str):
        self.root = root
        self.read_counter = Metrics.counter("stylebeam", "images_read")

    def process(self, metadata):
        source_id = relative_id(metadata.path, self.root)
        if not is_image_path(metadata.path):
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(source_id, STAGE, "not_an_image_file", metadata.path))
            return
        try:
            with FileSystems.open(metadata.path, compression_type="uncompressed") as handle:
                data = handle.read()
        except Exception as exc:  # permissions, a file deleted after matching, a transient error after retries
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(source_id, STAGE, "unreadable_file", str(exc)))
            return
        self.read_counter.inc()
        yield SourceRecord(source_id, label_of(source_id), data)


class SplitRowGroupsFn(beam.DoFn):
    """A Parquet file → ``(path, row_group, first_row)`` work items (footer read only). A job's side files
    (``rejected-*``, ``_state/``) are not inputs and are skipped, counted as ``parquet_side_files_skipped``."""

    def __init__(self, root: str):
        self.root = root
        self.side_files = Metrics.counter("stylebeam", "parquet_side_files_skipped")

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
        except Exception as exc:  # not Parquet, a damaged footer, a file gone since matching: its row count is unknown
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(file_id, STAGE, "unreadable_parquet", str(exc)))
            return
        problem = image_column_problem(schema)
        if problem is not None:  # one row that says how many input rows it stands for
            reason, detail = problem
            row = rejected_row(file_id, STAGE, reason, f"{detail} ({num_rows} rows)", records=num_rows)
            yield beam.pvalue.TaggedOutput(REJECTED, row)
            return
        first_row = 0
        for group, rows in enumerate(groups):
            yield metadata.path, group, first_row, rows
            first_row += rows


class ReadRowGroupFn(beam.DoFn):
    def __init__(self, root: str):
        self.root = root
        self.read_counter = Metrics.counter("stylebeam", "images_read")

    def process(self, item):
        path, group, first_row, num_rows = item
        file_id = relative_id(path, self.root)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                parquet = pq.ParquetFile(handle)
                columns = [c for c in ("id", "label", "image") if c in parquet.schema_arrow.names]
                table = parquet.read_row_group(group, columns=columns).to_pydict()
        except Exception as exc:  # a corrupt row group costs its rows (dead-lettered), not the job
            rows = f"{file_id}:rows{first_row}+"
            row = rejected_row(rows, STAGE, "unreadable_row_group", f"{exc} ({num_rows} rows)", records=num_rows)
            yield beam.pvalue.TaggedOutput(REJECTED, row)
            return
        for record in table_records(table, file_id, first_row):
            self.read_counter.inc()
            yield record


class ReadImages(beam.PTransform):
    """PBegin → ``{"records": SourceRecord, "rejected": rejected rows}``."""

    def __init__(self, source: InputPattern):
        super().__init__()
        self.source = source

    def expand(self, pbegin):
        matched = pbegin | "Match" >> fileio.MatchFiles(self.source.pattern) | "Spread" >> beam.Reshuffle()
        if self.source.kind == "parquet":
            groups = matched | "SplitRowGroups" >> beam.ParDo(SplitRowGroupsFn(self.source.root)).with_outputs(
                REJECTED, main="groups"
            )
            read = (
                groups.groups
                | "SpreadGroups" >> beam.Reshuffle()
                | "ReadRowGroups" >> beam.ParDo(ReadRowGroupFn(self.source.root)).with_outputs(REJECTED, main="records")
            )
            rejected = (groups[REJECTED], read[REJECTED]) | "ParquetRejected" >> beam.Flatten()
            return {"records": read.records, "rejected": rejected}
        read = matched | "ReadFiles" >> beam.ParDo(ReadFileFn(self.source.root)).with_outputs(REJECTED, main="records")
        return {"records": read.records, "rejected": read[REJECTED]}
