"""Writing the jobs' outputs: Parquet tables with an explicit schema, ``summary.json``, and what an output folder
holds before a job writes into it.

File layout of every job: ``OUT/{prefix}-SSSSS-of-NNNNN.parquet`` per table, ``OUT/summary.json`` (and augment's
``OUT/preview.png``); while a job runs, Beam writes its shards under ``OUT/beam-temp-{prefix}-{uuid}/`` and renames
them into place at the end. Paths are local or any filesystem Beam knows (``gs://``).
"""

import json
import re
import shutil
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

SHARD = re.compile(r"^(?P<prefix>[a-z_]+)-\d{5}-of-\d{5}\.parquet$")
RUN_FILES = ("summary.json", "preview.png")
TEMP_PREFIX = "beam-temp-"


def output_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, name) if "://" in output_dir else f"{output_dir.rstrip('/')}/{name}"


class WriteTable(beam.PTransform):
    """Write dict rows as ``OUT/{prefix}-*.parquet`` with ``schema``.

    ``num_shards=0`` lets the runner choose (one shard per bundle); tests pin it for stable names.
    Row groups are kept small (about 8 MB; rows are buffered in Arrow batches of ``row_group_rows``) when rows carry
    image bytes: readers stream them a group at a time, and each open writer holds one group in memory. With 64 MB
    (Beam's default) the job's peak RSS grew with the dataset until every writer's buffer was full (836 MB at 1,000
    128² images, 1,274 MB at 20,000); with 8 MB it stays flat.
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
            row_group_buffer_size=8 * 1024 * 1024,
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


@dataclass
class OutputFolder:
    """What an output folder holds from earlier runs: ``tables`` (prefix → shard paths), ``run_files``
    (``summary.json``, ``preview.png``) and ``temp`` (the ``beam-temp-*`` folders a killed run left behind).
    ``summary_job`` is the job named in its ``summary.json``, when there is one that says."""

    path: str
    tables: dict = field(default_factory=dict)
    run_files: list = field(default_factory=list)
    temp: list = field(default_factory=list)
    summary_job: str | None = None

    @property
    def earlier_run(self) -> bool:
        return bool(self.tables or self.run_files)


def inspect_output(output_dir: str) -> OutputFolder:
    """List ``output_dir`` (local or remote; a missing folder is empty) and sort what an earlier run left there."""
    folder = OutputFolder(output_dir)
    root = output_dir.rstrip("/")
    try:
        found = FileSystems.match([f"{root}/**"])[0].metadata_list
    except Exception:  # nothing there yet (a missing local folder or bucket prefix): nothing to keep apart
        return folder
    temp = set()
    for metadata in found:
        relative = metadata.path[len(root) + 1 :] if metadata.path.startswith(root + "/") else metadata.path
        first, _, rest = relative.partition("/")
        shard = SHARD.match(relative)
        if first.startswith(TEMP_PREFIX):
            temp.add(output_path(output_dir, first))
        elif shard:
            folder.tables.setdefault(shard.group("prefix"), []).append(metadata.path)
        elif relative in RUN_FILES:
            folder.run_files.append(metadata.path)
    folder.temp = sorted(temp)
    summary = output_path(output_dir, "summary.json")
    if summary in folder.run_files:
        try:
            with FileSystems.open(summary) as handle:
                folder.summary_job = json.loads(handle.read()).get("job")
        except Exception:  # an unreadable or foreign summary.json names no job
            folder.summary_job = None
    return folder


def clear_earlier_run(folder: OutputFolder, prefixes) -> list[str]:
    """Delete the shards of the tables named in ``prefixes``, the run files and the temporary folders; return what
    was deleted. Anything else in the folder (a user's files, collect's ``_state/``) stays."""
    files = [path for prefix in prefixes for path in folder.tables.get(prefix, [])] + folder.run_files
    temp_files = []
    for temp in folder.temp:
        temp_files += [m.path for m in FileSystems.match([f"{temp}/**"])[0].metadata_list]
    if files or temp_files:
        FileSystems.delete(files + temp_files)
    if "://" not in folder.path:  # local folders stay behind once their files are gone
        for temp in folder.temp:
            shutil.rmtree(temp, ignore_errors=True)
    return files + folder.temp
