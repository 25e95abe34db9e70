"""Writing the jobs' outputs: Parquet tables with an explicit schema, and ``summary.json``.

File layout of every job: ``OUT/{prefix}-SSSSS-of-NNNNN.parquet`` per table, ``OUT/summary.json``.
Paths are local or any filesystem Beam knows (``gs://``).
"""

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems


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
    """Rejected rows → ``(key, amount)`` tallies for ``WriteSummary``: rows per stage and per ``stage/reason``, and
    ``rejected_records``, the input records they stand for (a file that cannot be read stands for all its rows)."""

    def expand(self, rejected):
        def tallies(row):
            yield f"rejected.stage.{row['stage']}", 1
            yield f"rejected.reason.{row['stage']}/{row['reason']}", 1
            yield "rejected_records", row["records"]

        return rejected | beam.FlatMap(tallies)


class WriteSummary(beam.PTransform):
    """Count what a job did and write one ``OUT/summary.json``: ``{"output", "counts", **facts}``.

    ``counted`` maps a summary key to a PCollection; each element adds one to its key, and every key appears, zero
    when its PCollection is empty. ``tallies`` are PCollections of ``(key, amount)`` pairs (``CountRejected``), added
    up per key. ``facts`` (job name, settings, digests) are copied into the file as they are.
    """

    def __init__(self, output_dir: str, counted: dict, tallies: tuple = (), facts: dict | None = None):
        super().__init__()
        self.output_dir = output_dir
        self.counted = counted
        self.tallies = tuple(tallies)
        self.facts = facts or {}

    def expand(self, pbegin):
        ones = [pcoll | f"Count{key}" >> beam.Map(lambda _, key=key: (key, 1)) for key, pcoll in self.counted.items()]
        zero = dict.fromkeys(self.counted, 0)
        facts, output_dir = self.facts, self.output_dir
        path = output_path(output_dir, "summary.json")

        def write(counts):
            summary = {"output": output_dir, "counts": {**zero, **dict(sorted(counts))}, **facts}
            with FileSystems.create(path, mime_type="application/json") as handle:
                handle.write(json.dumps(summary, indent=2, sort_keys=True).encode())
            return summary

        return (
            (*ones, *self.tallies)
            | "AllTallies" >> beam.Flatten(pipeline=pbegin.pipeline)
            | "SumPerKey" >> beam.CombinePerKey(sum)
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
