"""Writing the jobs' outputs: Parquet tables with an explicit schema, and ``summary.json``.

File layout of every job: ``OUT/{prefix}-SSSSS-of-NNNNN.parquet`` per table, ``OUT/summary.json``.
Paths are local or any filesystem Beam knows (``gs://``).
"""

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.schemas import rejection_reason


def output_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, name) if "://" in output_dir else f"{output_dir.rstrip('/')}/{name}"


class WriteTable(beam.PTransform):
    """Write dict rows as ``OUT/{prefix}-*.parquet`` with ``schema``.

    ``num_shards=0`` lets the runner choose (one shard per bundle); tests pin it for stable names.
    Row groups are kept small when rows carry image bytes so readers can stream them.
    """

    def __init__(self, output_dir: str, prefix: str, schema: pa.Schema, num_shards: int = 0, row_group_rows: int = 256):
        super().__init__()
        self.output_dir = output_dir
        self.prefix = prefix
        self.schema = schema
        self.num_shards = num_shards
        self.row_group_rows = row_group_rows

    def expand(self, rows):
        return rows | beam.io.WriteToParquet(
            output_path(self.output_dir, self.prefix),
            self.schema,
            file_name_suffix=".parquet",
            num_shards=self.num_shards,
            row_group_buffer_size=64 * 1024 * 1024,
            record_batch_size=self.row_group_rows,
            codec="snappy",
        )


class CountRejected(beam.PTransform):
    """Rejected rows → ``(key, 1)`` pairs for ``WriteSummary``: per stage and per ``stage/reason``."""

    def expand(self, rejected):
        def keys(row):
            yield f"rejected.stage.{row['stage']}"
            yield f"rejected.reason.{row['stage']}/{rejection_reason(row)}"

        return rejected | beam.FlatMap(keys)


class WriteSummary(beam.PTransform):
    """Count named PCollections and write one ``summary.json``.

    ``counted`` maps a summary key to a PCollection: each element adds one to that key, except for a
    PCollection of string keys given under ``"*"`` (such as ``CountRejected`` output), whose elements
    are the keys themselves. Every key in ``counted`` appears in the summary, zero when empty.
    ``extra`` holds static facts (settings, versions) copied into the file.
    """

    def __init__(self, output_dir: str, counted: dict, extra: dict | None = None):
        super().__init__()
        self.output_dir = output_dir
        self.counted = counted
        self.extra = extra or {}

    def expand(self, pbegin):
        named = [
            pcoll | f"Key{name}" >> beam.Map(lambda _, key=name: key)
            for name, pcoll in self.counted.items()
            if name != "*"
        ]
        if "*" in self.counted:
            named.append(self.counted["*"])
        zero_keys = [name for name in self.counted if name != "*"]
        extra = self.extra
        output_dir = self.output_dir
        path = output_path(output_dir, "summary.json")

        def write(counts):
            summary = {"output": output_dir, "counts": {key: 0 for key in zero_keys}}
            summary["counts"].update(dict(sorted(counts)))
            summary.update(extra)
            with FileSystems.create(path, mime_type="application/json") as handle:
                handle.write(json.dumps(summary, indent=2, sort_keys=True).encode())
            return summary

        return (
            tuple(named)
            | "FlattenKeys" >> beam.Flatten(pipeline=pbegin.pipeline)
            | "CountKeys" >> beam.combiners.Count.PerElement()
            | "AllCounts" >> beam.combiners.ToList()
            | "WriteJson" >> beam.Map(write)
        )


def update_summary(output_dir: str, **fields) -> dict:
    """Read ``summary.json``, add ``fields`` (e.g. wall time measured by the launcher), write it back."""
    path = output_path(output_dir, "summary.json")
    with FileSystems.open(path) as handle:
        summary = json.loads(handle.read())
    summary.update(fields)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary
