"""Writing the jobs' outputs: Parquet tables with an explicit schema, ``summary.json``, and what an output folder
holds before a job writes into it.

File layout of every job: ``OUT/data/{prefix}-SSSSS-of-NNNNN.parquet`` per table, the dead letters in
``OUT/rejected/rejected-SSSSS-of-NNNNN.parquet``, ``OUT/summary.json`` (and augment's ``OUT/preview.png`` and
``OUT/README.md``, a Hugging Face dataset card). The tables sit in ``data/`` under Hugging Face's sharded name
(``data/{split}-00000-of-00004.*``), the one pattern ``datasets`` tries before any other, so
``load_dataset("parquet", data_dir=OUT)`` reads the table alone (split ``{prefix}``), never the rejected rows, the
summary or the preview beside it. Augment's other formats (``transforms.formats``) write ``data/`` too: tar shards
under the same names, or an ImageFolder tree. While a job runs, Beam writes its shards under
``beam-temp-{prefix}-{uuid}/`` (in ``data/``, ``rejected/`` or ``OUT``) and renames them into place at the end.
Paths are local or any filesystem Beam knows (``gs://``). Outputs of earlier versions (tables directly in ``OUT``)
are still recognised as earlier runs and read as inputs.

``summary.json`` is the commit marker: it is written last, once every table is renamed into place and every other
file is written (``WriteSummary``'s ``after``), so a run killed at any moment leaves a folder without it, which
readers (``transforms.sources.input_pattern``) refuse as unfinished and a re-run treats as an earlier run.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsList

from models.common.errors import IncompleteOutputError
from models.common.files import write_atomically

SHARD = re.compile(r"^(?P<prefix>[a-z_]+)-\d{5}-of-\d{5}\.(?:parquet|tar)$")
RUN_FILES = ("summary.json", "preview.png", "README.md")
DATA_FOLDER = "data"  # a job's tables (or augment's ImageFolder tree)
REJECTED_FOLDER = "rejected"  # its dead letters, apart so that readers of data/ never meet them
TEMP_PREFIX = "beam-temp-"
# The tables of this project's Beam jobs (augment, collect, clean, embed; each BeamJob's schemas, checked by a test).
# A shard of one of them is a run's output, finished only beside its summary.json. Other Beam-style shard names
# (Hugging Face's train-00000-of-00001.parquet) are any table, never refused for lack of one.
RUN_TABLES = ("augmented", "raw", "clean", "embeddings")


def run_table_prefix(path: str) -> str | None:
    """The table a file is a shard of (``augmented`` for ``.../augmented-00000-of-00004.parquet``), when it is one
    of ``RUN_TABLES``; else ``None``."""
    shard = SHARD.match(path.rstrip("/").rsplit("/", 1)[-1])
    return shard.group("prefix") if shard and shard.group("prefix") in RUN_TABLES else None


def output_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, name) if "://" in output_dir else f"{output_dir.rstrip('/')}/{name}"


def table_folder(output_dir: str, prefix: str) -> str:
    """Where table ``prefix`` of a job writing ``output_dir`` lives: ``OUT/rejected`` for the dead letters, else
    ``OUT/data``."""
    return output_path(output_dir, REJECTED_FOLDER if prefix == "rejected" else DATA_FOLDER)


def run_folder(shard_path: str) -> str:
    """The output folder of the run that wrote ``shard_path``: the parent of its ``data/`` or ``rejected/``
    folder, or the folder itself for an output of an earlier version (tables directly in it)."""
    folder = shard_path.rstrip("/").rsplit("/", 1)[0] if "/" in shard_path else ""
    parent, _, name = folder.rpartition("/")
    return parent if name in (DATA_FOLDER, REJECTED_FOLDER) else folder


class WriteTable(beam.PTransform):
    """Write dict rows as ``OUT/data/{prefix}-*.parquet`` (``OUT/rejected/`` for ``rejected``) with ``schema``.

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
            output_path(table_folder(self.output_dir, self.prefix), self.prefix),
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


@dataclass(frozen=True)
class Balance:
    """A stage's ledger, checked before ``summary.json`` is written: every element of the ``into`` PCollections must
    come out as exactly one element of the ``out`` PCollections (rows written, rejected rows). ``what`` names the
    elements (plural) and ``where`` the stretch of the job they cross, for the error line."""

    what: str
    where: str
    into: tuple
    out: tuple


def balance_gap(balance: Balance, came_in: int, came_out: int) -> str | None:
    """The one line that says how ``balance`` failed, or ``None`` when as many came out as went in."""
    if came_in == came_out:
        return None
    if came_out < came_in:
        return (
            f"{came_in - came_out} of {came_in} {balance.what} were lost {balance.where}; the output is incomplete "
            "(no summary.json was written: re-run with --overwrite)"
        )
    return (
        f"{came_out - came_in} more {balance.what} came out than went in ({came_out} for {came_in}) {balance.where}; "
        "the output is inconsistent (no summary.json was written: re-run with --overwrite)"
    )


class WriteSummary(beam.PTransform):
    """Count what a job did and write one ``OUT/summary.json``: ``{"output", "counts", **facts}``, the run's commit
    marker.

    ``counted`` maps a summary key to a PCollection; each element adds one to its key, and every key appears, zero
    when its PCollection is empty. ``tallies`` are PCollections of ``(key, amount)`` pairs (``CountRejected``), added
    up per key. ``facts`` (job name, settings, digests) are copied into the file as they are. ``after``: the
    results of the job's other writes (``WriteTable``'s final shard names, the preview's path); they are side
    inputs of the write, so the runner writes the summary only once all of them are complete (Beam's "wait on"
    idiom): a folder with ``summary.json`` holds every file of its run.

    ``balances``: ``Balance`` ledgers; when one does not add up (elements lost, or duplicated, on the way) the job
    fails with an ``IncompleteOutputError`` naming the gap and no ``summary.json`` is written, so the folder reads as
    an unfinished run and is not taken for a complete one.
    """

    def __init__(
        self,
        output_dir: str,
        counted: dict,
        tallies: tuple = (),
        facts: dict | None = None,
        after: tuple = (),
        balances: tuple = (),
    ):
        super().__init__()
        self.output_dir = output_dir
        self.counted = counted
        self.tallies = tuple(tallies)
        self.facts = facts or {}
        self.after = tuple(after)
        self.balances = tuple(balances)

    def expand(self, pbegin):
        ones = [pcoll | f"Count{key}" >> beam.Map(lambda _, key=key: (key, 1)) for key, pcoll in self.counted.items()]
        for i, balance in enumerate(self.balances):
            sides = [("in", pcoll) for pcoll in balance.into] + [("out", pcoll) for pcoll in balance.out]
            for j, (side, pcoll) in enumerate(sides):
                key = (i, side)  # a tuple: never a summary key
                ones.append(pcoll | f"Balance{i}_{j}" >> beam.Map(lambda _, key=key: (key, 1)))
        zero = dict.fromkeys(self.counted, 0)
        facts, output_dir, balances = self.facts, self.output_dir, self.balances
        path = output_path(output_dir, "summary.json")

        def write(counts, *written):
            ledger = {key: amount for key, amount in counts if isinstance(key, tuple)}
            gaps = [balance_gap(b, ledger.get((i, "in"), 0), ledger.get((i, "out"), 0)) for i, b in enumerate(balances)]
            gaps = [gap for gap in gaps if gap]
            if gaps:
                raise IncompleteOutputError("; ".join(gaps))
            counts = [(key, amount) for key, amount in counts if not isinstance(key, tuple)]
            summary = {"output": output_dir, "counts": {**zero, **dict(sorted(counts))}, **facts}
            write_atomically(path, json.dumps(summary, indent=2, sort_keys=True).encode())
            return summary

        return (
            (*ones, *self.tallies)
            | "AllTallies" >> beam.Flatten(pipeline=pbegin.pipeline)
            | "SumPerKey" >> beam.CombinePerKey(sum)
            | "AllCounts" >> beam.combiners.ToList()
            | "WriteJson" >> beam.Map(write, *(AsList(done) for done in self.after))
        )


def update_summary(output_dir: str, **fields) -> dict:
    """Read ``summary.json``, add ``fields`` (e.g. wall time measured by the launcher), write it back whole."""
    path = output_path(output_dir, "summary.json")
    with FileSystems.open(path) as handle:
        summary = json.loads(handle.read())
    summary.update(fields)
    write_atomically(path, json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


@dataclass
class OutputFolder:
    """What an output folder holds from earlier runs: ``tables`` (prefix → shard paths, Parquet or tar),
    ``data_files`` (the other files in ``data/``: an ImageFolder tree), ``run_files`` (``summary.json``,
    ``preview.png``, ``README.md``) and ``temp`` (the ``beam-temp-*`` folders a killed run left behind, empty ones
    included). ``summary_job`` is the job named in its ``summary.json``, when there is one that says."""

    path: str
    tables: dict = field(default_factory=dict)
    data_files: list = field(default_factory=list)
    run_files: list = field(default_factory=list)
    temp: list = field(default_factory=list)
    summary_job: str | None = None

    @property
    def earlier_run(self) -> bool:
        return bool(self.tables or self.data_files or self.run_files)

    @property
    def unfinished(self) -> bool:
        """Data without the ``summary.json`` that a run writes last: a run killed or failed before its end."""
        has_data = bool(self.tables or self.data_files)
        return has_data and not any(path.endswith("/summary.json") for path in self.run_files)


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
        parts = relative.split("/")
        ours = parts[0] in (DATA_FOLDER, REJECTED_FOLDER)
        shard = SHARD.match(parts[-1]) if len(parts) == 1 or (ours and len(parts) == 2) else None
        if parts[0].startswith(TEMP_PREFIX):
            temp.add(output_path(output_dir, parts[0]))
        elif ours and len(parts) > 2 and parts[1].startswith(TEMP_PREFIX):
            temp.add(output_path(output_dir, f"{parts[0]}/{parts[1]}"))
        elif shard:
            folder.tables.setdefault(shard.group("prefix"), []).append(metadata.path)
        elif parts[0] == DATA_FOLDER and len(parts) > 1:
            folder.data_files.append(metadata.path)
        elif relative in RUN_FILES:
            folder.run_files.append(metadata.path)
    if "://" not in output_dir and os.path.isdir(output_dir):  # an empty folder is no file, so no match above
        for sub in ("", DATA_FOLDER, REJECTED_FOLDER):
            here = output_path(output_dir, sub) if sub else output_dir
            if os.path.isdir(here):
                temp |= {output_path(here, e.name) for e in os.scandir(here) if e.name.startswith(TEMP_PREFIX)}
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
    """Delete the shards of the tables named in ``prefixes``, the other files of ``data/`` (an ImageFolder tree),
    the run files and the temporary folders; return what was deleted. ``summary.json`` goes first: a deletion cut
    short leaves an unfinished run, never a folder that looks finished with tables missing. Anything else in the
    folder (a user's files, collect's ``_state/``) stays."""
    marker = [path for path in folder.run_files if path.endswith("/summary.json")]
    if marker:
        FileSystems.delete(marker)
    files = [path for prefix in prefixes for path in folder.tables.get(prefix, [])]
    files += folder.data_files + [path for path in folder.run_files if path not in marker]
    temp_files = []
    for temp in folder.temp:
        temp_files += [m.path for m in FileSystems.match([f"{temp}/**"])[0].metadata_list]
    if files or temp_files:
        FileSystems.delete(files + temp_files)
    if "://" not in folder.path:  # local folders stay behind once their files are gone
        for temp in folder.temp:
            shutil.rmtree(temp, ignore_errors=True)
        remove_empty_folders(output_path(folder.path, DATA_FOLDER))
    return marker + files + folder.temp


def remove_empty_folders(root: str) -> None:
    """Remove the empty folders below a local ``root`` (an ImageFolder tree's class folders once their files are
    gone: torchvision refuses a class folder without images), ``root`` itself kept."""
    if not os.path.isdir(root):
        return
    for here, _, files in os.walk(root, topdown=False):
        if here != root and not files and not os.listdir(here):
            os.rmdir(here)
