"""``WriteSummary`` on its own: counted PCollections and (key, amount) tallies → one summary.json."""

import json
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.io import CountRejected, WriteSummary, clear_earlier_run, inspect_output, run_folder
from transforms.schemas import rejected_row


def test_counts_tallies_zero_keys_and_facts_land_in_one_file(tmp_path, beam_options):
    rejected_rows = [
        rejected_row("a", "decode", "corrupt_image", "bad"),
        rejected_row("f.parquet", "read", "no_image_column", "no 'image' column (5 rows)", records=5),
    ]
    with TestPipeline(options=beam_options) as pipeline:
        read = pipeline | "Read" >> beam.Create(["a", "b", "c"])
        nothing = pipeline | "Nothing" >> beam.Create([])
        rejected = pipeline | "Rejected" >> beam.Create(rejected_rows)
        extra = pipeline | "Extra" >> beam.Create([("caption.removed.url", 2), ("caption.removed.url", 1)])
        counted = {"images_read": read, "rows_written": nothing, "rejected": rejected}
        tallies = (rejected | CountRejected(), extra)
        summary = pipeline | WriteSummary(str(tmp_path), counted, tallies, {"job": "test", "settings": {"seed": 3}})
        assert_that(summary | beam.Map(lambda s: s["counts"]["images_read"]), equal_to([3]))

    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == {
        "output": str(tmp_path),
        "job": "test",
        "settings": {"seed": 3},
        "counts": {
            "images_read": 3,
            "rows_written": 0,
            "rejected": 2,
            "rejected_records": 6,
            "rejected.stage.decode": 1,
            "rejected.stage.read": 1,
            "rejected.reason.decode/corrupt_image": 1,
            "rejected.reason.read/no_image_column": 1,
            "caption.removed.url": 3,
        },
    }


def test_an_output_folder_is_sorted_into_tables_data_files_run_files_and_temp(tmp_path):
    out = tmp_path / "out"
    files = {
        "data/augmented-00000-of-00002.parquet": "table",
        "data/augmented-00001-of-00002.tar": "table",
        "rejected/rejected-00000-of-00001.parquet": "table",
        "clean-00000-of-00001.parquet": "table",  # an output of an earlier version: tables directly in OUT
        "data/cats/cats%2Fa.png#0.jpg": "data",  # an ImageFolder tree
        "data/beam-temp-augmented-0a1b/x.parquet": "temp",
        "beam-temp-imagefolder-2c3d/y": "temp",
        "summary.json": "run",
        "README.md": "run",
        "notes.txt": "user",
        "_state/spool-0.parquet": "user",
    }
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}" if name == "summary.json" else "x")
    folder = inspect_output(str(out))
    assert {prefix: sorted(Path(p).name for p in paths) for prefix, paths in folder.tables.items()} == {
        "augmented": ["augmented-00000-of-00002.parquet", "augmented-00001-of-00002.tar"],
        "rejected": ["rejected-00000-of-00001.parquet"],
        "clean": ["clean-00000-of-00001.parquet"],
    }
    assert [Path(p).relative_to(out).as_posix() for p in folder.data_files] == ["data/cats/cats%2Fa.png#0.jpg"]
    assert sorted(Path(p).relative_to(out).as_posix() for p in folder.temp) == [
        "beam-temp-imagefolder-2c3d",
        "data/beam-temp-augmented-0a1b",
    ]
    assert folder.earlier_run and not folder.unfinished

    clear_earlier_run(folder, {"augmented", "rejected"})
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == ["_state", "_state/spool-0.parquet", "clean-00000-of-00001.parquet", "data", "notes.txt", "rejected"]


def test_a_shard_belongs_to_the_run_folder_above_data_or_rejected():
    assert run_folder("gs://b/out/data/augmented-00000-of-00001.parquet") == "gs://b/out"
    assert run_folder("/x/out/rejected/rejected-00000-of-00001.parquet") == "/x/out"
    assert run_folder("/x/out/augmented-00000-of-00001.parquet") == "/x/out"  # an earlier version's layout
