"""Issue 12 items 1, 4 and 6 for every Beam job: an output folder never holds a mix of runs, bad paths are one line
before anything runs, and the ambiguous inputs (duplicate ids, symlinked folders, glob characters) are settled."""

import glob
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import augment, clean, collect, embed
from pipelines.cli import run_main
from tests.conftest import encode, make_image, run_unprivileged

REPO = Path(__file__).resolve().parents[2]
FAST = ["--image-size=32", "--min-side=16", "--styles=random:1"]


@pytest.fixture(scope="module")
def stylizer(two_style_stylizer):
    return two_style_stylizer


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        (root / f"{i}.png").write_bytes(encode(make_image(40, 36, seed=i)))
    return root


def tables(out, prefix):
    return sorted(Path(p).name for p in glob.glob(f"{out}/{prefix}-*.parquet"))


def rows(out, prefix):
    return sum(pq.read_metadata(p).num_rows for p in glob.glob(f"{out}/{prefix}-*.parquet"))


def last_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# item 1 -----------------------------------------------------------------------------------------------------------
def test_a_rerun_into_the_same_folder_is_refused_unless_overwrite_which_clears_only_the_jobs_own_tables(
    photos, stylizer, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST]
    assert run_main(augment.run, [*argv, "--num-shards=3"]) == 0
    (out / "notes.txt").write_text("the user's own file")
    before = tables(out, "augmented")
    assert len(before) == 3

    assert run_main(augment.run, [*argv, "--num-shards=2"]) == 2
    line = last_line(capsys)
    assert line.startswith("error: ") and "--overwrite" in line and str(out) in line, line
    assert tables(out, "augmented") == before  # nothing touched

    assert run_main(augment.run, [*argv, "--num-shards=2", "--overwrite"]) == 0
    assert tables(out, "augmented") == ["augmented-00000-of-00002.parquet", "augmented-00001-of-00002.parquet"]
    summary = json.loads((out / "summary.json").read_text())
    assert rows(out, "augmented") == summary["counts"]["rows_written"] == 4
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_the_no_flag_demo_run_replaces_its_own_earlier_output(photos, stylizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(augment, "SAMPLE_IMAGES", photos)  # the demo's input, small and fast
    options = [f"--stylizer={stylizer}", *FAST]
    assert run_main(augment.run, [*options, "--num-shards=3"]) == 0
    assert run_main(augment.run, [*options, "--num-shards=1"]) == 0
    assert tables(tmp_path / "augment-output", "augmented") == ["augmented-00000-of-00001.parquet"]


@pytest.mark.parametrize("job", ["augment", "clean", "embed", "collect"])
def test_every_beam_job_refuses_a_folder_holding_an_earlier_run(job, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": ["x"]}), out / "raw-00000-of-00001.parquet")
    (out / "summary.json").write_text("{}")
    argv = {
        "augment": (augment.run, [f"--input={tmp_path}", f"--output={out}"]),
        "clean": (clean.run, [f"--input={tmp_path}", f"--output={out}"]),
        "embed": (embed.run, [f"--input={tmp_path}", f"--output={out}", f"--model={tmp_path}"]),
        "collect": (collect.run, [f"--from-dir={tmp_path}", f"--output={out}"]),
    }
    entry, args = argv[job]
    assert run_main(entry, args) == 2
    line = last_line(capsys)
    assert line.startswith("error: ") and "earlier run" in line, line


def test_a_killed_runs_leftovers_are_cleared_and_never_read_as_input(photos, stylizer, tmp_path):
    out = tmp_path / "out"
    temp = out / "beam-temp-augmented-0123abcd"
    temp.mkdir(parents=True)
    image = encode(make_image(40, 40))
    pq.write_table(pa.table({"id": ["leftover"], "image": [image]}), temp / "0a1b2c.parquet")
    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST, "--num-shards=1"]
    assert run_main(augment.run, argv) == 0  # no earlier tables: only the killed run's temp files, cleared
    assert not temp.exists()

    # a later job reading that folder reads its table only, not a killed run's temp files beside it
    temp.mkdir()
    pq.write_table(pa.table({"id": ["leftover"], "image": [image]}), temp / "0a1b2c.parquet")
    again = tmp_path / "again"
    assert run_main(augment.run, [f"--input={out}", f"--output={again}", f"--stylizer={stylizer}", *FAST]) == 0
    assert rows(again, "augmented") == rows(out, "augmented") == 4


# item 4 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("job", ["augment", "clean", "embed", "collect"])
def test_an_output_that_is_a_file_is_one_line_before_anything_runs(job, tmp_path, capsys):
    output = tmp_path / "taken.txt"
    output.write_text("a file")
    entry, args = {
        "augment": (augment.run, [f"--input={tmp_path}/missing"]),
        "clean": (clean.run, [f"--input={tmp_path}/missing"]),
        "embed": (embed.run, [f"--input={tmp_path}/missing", f"--model={tmp_path}/missing"]),
        "collect": (collect.run, [f"--from-dir={tmp_path}"]),
    }[job]
    assert run_main(entry, [*args, f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is a file" in err, err


def test_an_output_folder_without_write_permission_is_one_line(world_tmp):
    from tests.pipelines.test_clean import jpeg, painting, raw_row
    from transforms.schemas import RAW_CORPUS

    raw = world_tmp / "raw"
    raw.mkdir()
    row = raw_row("C1", jpeg(painting(1)), "Constel·lació de Miró, preciosa #joanmiro")
    pq.write_table(pa.Table.from_pylist([row], RAW_CORPUS), raw / "raw-00000-of-00001.parquet")
    for path in (raw, *raw.iterdir()):
        path.chmod(0o755)
    locked = world_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    done = run_unprivileged(
        [sys.executable, "-m", "pipelines.clean", f"--input={raw}", f"--output={locked}/out"], cwd=REPO
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "permission" in done.stderr


def test_a_stylizer_or_model_that_is_a_directory_is_one_line(photos, tmp_path, capsys):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    assert run_main(augment.run, [f"--input={photos}", f"--output={tmp_path}/a", f"--stylizer={folder}"]) == 2
    assert last_line(capsys) == f"error: checkpoint is a directory, not a file: {folder}"
    assert run_main(embed.run, [f"--input={photos}", f"--output={tmp_path}/e", f"--model={folder}"]) == 2
    assert last_line(capsys) == f"error: checkpoint is a directory, not a file: {folder}"


def test_a_directory_whose_name_holds_glob_characters_is_read_as_a_directory(stylizer, tmp_path):
    folder = tmp_path / "photos[1]"
    folder.mkdir()
    (tmp_path / "photos1").mkdir()  # what the name means as a pattern: must not be read instead
    (tmp_path / "photos1" / "decoy.png").write_bytes(encode(make_image(40, 40, seed=9)))
    for i in range(2):
        (folder / f"{i}.png").write_bytes(encode(make_image(40, 40, seed=i)))
    out = tmp_path / "out"
    assert run_main(augment.run, [f"--input={folder}", f"--output={out}", f"--stylizer={stylizer}", *FAST]) == 0
    ids = sorted(pq.read_table(glob.glob(f"{out}/augmented-*.parquet")).column("source_id").to_pylist())
    assert ids == ["0.png", "1.png"]


# item 6 -----------------------------------------------------------------------------------------------------------
def test_negative_num_shards_is_refused(photos, stylizer, tmp_path, capsys):
    argv = [f"--input={photos}", f"--output={tmp_path}/o", f"--stylizer={stylizer}", "--num-shards=-3"]
    assert run_main(augment.run, argv) == 2
    assert last_line(capsys).startswith("error: argument --num-shards")


def test_duplicate_parquet_ids_keep_the_first_copy_and_reject_the_later_ones(stylizer, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images = [encode(make_image(40, 40, seed=s)) for s in range(4)]
    pq.write_table(pa.table({"id": ["dup", "solo", "dup"], "image": images[:3]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["dup"], "image": images[3:]}), folder / "b.parquet")
    out = tmp_path / "out"
    assert run_main(augment.run, [f"--input={folder}", f"--output={out}", f"--stylizer={stylizer}", *FAST]) == 0
    augmented = pq.read_table(glob.glob(f"{out}/augmented-*.parquet")).to_pylist()
    assert sorted(r["id"] for r in augmented) == ["dup#0", "solo#0"]  # ids stay unique
    rejected = pq.read_table(glob.glob(f"{out}/rejected-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["reason"], r["error"].split(": ", 1)[1]) for r in rejected) == [
        ("dup", "duplicate_id", "a.parquet:2 repeats the id of a.parquet:0, which was kept"),
        ("dup", "duplicate_id", "b.parquet:0 repeats the id of a.parquet:0, which was kept"),
    ]


def test_a_symlinked_folder_is_followed_once_and_a_loop_is_reported(stylizer, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "far.png").write_bytes(encode(make_image(40, 40, seed=1)))
    root = tmp_path / "in"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "near.png").write_bytes(encode(make_image(40, 40, seed=2)))
    os.symlink(elsewhere, root / "linked")  # another folder: followed
    os.symlink(root / "cats", root / "again")  # a folder read already: reported, not read twice
    os.symlink(root, root / "cats" / "loop")  # a loop: reported
    os.symlink(tmp_path / "gone.png", root / "broken.png")  # points nowhere: reported
    out = tmp_path / "out"
    assert run_main(augment.run, [f"--input={root}", f"--output={out}", f"--stylizer={stylizer}", *FAST]) == 0
    augmented = pq.read_table(glob.glob(f"{out}/augmented-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["label"]) for r in augmented) == [
        ("cats/near.png", "cats"),
        ("linked/far.png", "linked"),
    ]
    rejected = pq.read_table(glob.glob(f"{out}/rejected-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["reason"], r["records"]) for r in rejected) == [
        ("again", "symlink_to_folder_read", 0),
        ("broken.png", "broken_symlink", 1),
        ("cats/loop", "symlink_to_folder_read", 0),
    ]


def test_overwrite_deletes_nothing_until_the_job_is_built_and_never_its_own_input(photos, stylizer, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [f"--input={photos}", f"--output={out}", *FAST, "--num-shards=1"]
    assert run_main(augment.run, [*argv, f"--stylizer={stylizer}"]) == 0
    before = tables(out, "augmented")
    assert run_main(augment.run, [*argv, f"--stylizer={tmp_path}/missing.safetensors", "--overwrite"]) == 2
    assert tables(out, "augmented") == before  # the bad checkpoint failed the build: the earlier run is still there
    capsys.readouterr()
    assert run_main(augment.run, [f"--input={out}", f"--output={out}", f"--stylizer={stylizer}", "--overwrite"]) == 2
    assert "is where the input is read from" in last_line(capsys) and tables(out, "augmented") == before
