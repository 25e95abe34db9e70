"""For every Beam job: an output folder never holds a mix of runs, bad paths are one line
before anything runs, and the ambiguous inputs (duplicate ids, symlinked folders, glob characters) are settled."""

import glob
import json
import os
import shutil
import subprocess
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


@pytest.fixture(scope="module")
def finished_run(photos, stylizer, tmp_path_factory):
    """One finished augment run (1 shard, with a preview), watched: which tables Beam's finalize renamed into
    place and whether summary.json existed at that moment. Tests that need "an earlier run" copy its folder."""
    from apache_beam.io import filebasedsink

    out = tmp_path_factory.mktemp("finished") / "out"
    seen = []
    finalize = filebasedsink.FileBasedSink.finalize_windowed_write

    def watched(self, *args, **kwargs):
        seen.append((self.file_path_prefix.get().rsplit("/", 1)[-1], (out / "summary.json").exists()))
        yield from finalize(self, *args, **kwargs)

    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST, "--num-shards=1", "--preview"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(filebasedsink.FileBasedSink, "finalize_windowed_write", watched)
        assert run_main(augment.run, argv) == 0
    return out, seen


def copy_of(finished_run, folder: Path) -> Path:
    """A copy of the module's finished run at ``folder`` (what an earlier run left there)."""
    shutil.copytree(finished_run[0], folder)
    return folder


def tables(out, prefix):
    return sorted(Path(p).name for p in glob.glob(f"{out}/*/{prefix}-*.parquet"))


def rows(out, prefix):
    return sum(pq.read_metadata(p).num_rows for p in glob.glob(f"{out}/*/{prefix}-*.parquet"))


def last_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# item 1 -----------------------------------------------------------------------------------------------------------
def test_a_rerun_into_the_same_folder_is_refused_unless_overwrite_which_clears_only_the_jobs_own_tables(
    photos, stylizer, finished_run, tmp_path, capsys
):
    out = copy_of(finished_run, tmp_path / "out")
    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST]
    (out / "notes.txt").write_text("the user's own file")
    before = tables(out, "augmented")
    assert before == ["augmented-00000-of-00001.parquet"]

    assert run_main(augment.run, [*argv, "--num-shards=2"]) == 2
    line = last_line(capsys)
    assert line.startswith("error: ") and "--overwrite" in line and str(out) in line, line
    assert tables(out, "augmented") == before  # nothing touched

    assert run_main(augment.run, [*argv, "--num-shards=2", "--overwrite"]) == 0
    assert tables(out, "augmented") == ["augmented-00000-of-00002.parquet", "augmented-00001-of-00002.parquet"]
    summary = json.loads((out / "summary.json").read_text())
    assert rows(out, "augmented") == summary["counts"]["rows_written"] == 4
    assert (out / "notes.txt").read_text() == "the user's own file"


@pytest.mark.slow
def test_the_no_flag_demo_run_replaces_its_own_earlier_output(photos, stylizer, finished_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(augment, "SAMPLE_IMAGES", photos)  # the demo's input, small and fast
    copy_of(finished_run, tmp_path / "augment-output")  # the earlier demo run: 1 shard
    assert run_main(augment.run, [f"--stylizer={stylizer}", *FAST, "--num-shards=2"]) == 0
    assert tables(tmp_path / "augment-output", "augmented") == [
        "augmented-00000-of-00002.parquet",
        "augmented-00001-of-00002.parquet",
    ]


@pytest.mark.parametrize("job", ["augment", "clean", "embed", "collect"])
def test_every_beam_job_refuses_a_folder_holding_an_earlier_run(job, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": ["x"]}), out / "raw-00000-of-00001.parquet")
    (out / "summary.json").write_text("{}")
    source = tmp_path / "in"
    source.mkdir()
    argv = {
        "augment": (augment.run, [f"--input={source}", f"--output={out}"]),
        "clean": (clean.run, [f"--input={source}", f"--output={out}"]),
        "embed": (embed.run, [f"--input={source}", f"--output={out}", f"--model={tmp_path}"]),
        "collect": (collect.run, [f"--from-dir={source}", f"--output={out}"]),
    }
    entry, args = argv[job]
    assert run_main(entry, args) == 2
    line = last_line(capsys)
    assert line.startswith("error: ") and "earlier run" in line, line


@pytest.mark.slow
def test_a_killed_runs_leftovers_are_cleared_and_never_read_as_input(photos, stylizer, tmp_path):
    out = tmp_path / "out"
    temp = out / "beam-temp-augmented-0123abcd"
    temp.mkdir(parents=True)
    image = encode(make_image(40, 40))
    pq.write_table(pa.table({"id": ["leftover"], "image": [image]}), temp / "0a1b2c.parquet")
    empty = [out / "beam-temp-augmented-0a1b", out / "beam-temp-rejected-2c3d"]  # empty ones are cleared too
    for folder in empty:
        folder.mkdir()
    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST, "--num-shards=1"]
    assert run_main(augment.run, argv) == 0  # no earlier tables: only the killed run's temp files, cleared
    assert not temp.exists() and not any(folder.exists() for folder in empty)
    assert not glob.glob(f"{out}/beam-temp-*")

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


@pytest.mark.slow
def test_an_output_folder_without_write_permission_is_one_line(world_tmp):
    from tests.pipelines.test_clean import jpeg, painting, raw_row
    from transforms.schemas import RAW_CORPUS

    raw = world_tmp / "raw"
    raw.mkdir()
    row = raw_row("C1", jpeg(painting(1)), "Constel·lació de Miró, preciosa #joanmiro")
    pq.write_table(pa.Table.from_pylist([row], RAW_CORPUS), raw / "raw-00000-of-00001.parquet")
    (raw / "summary.json").write_text('{"job": "collect"}')
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
    ids = sorted(pq.read_table(glob.glob(f"{out}/data/augmented-*.parquet")).column("source_id").to_pylist())
    assert ids == ["0.png", "1.png"]


# item 6 -----------------------------------------------------------------------------------------------------------
def test_negative_num_shards_is_refused(photos, stylizer, tmp_path, capsys):
    argv = [f"--input={photos}", f"--output={tmp_path}/o", f"--stylizer={stylizer}", "--num-shards=-3"]
    assert run_main(augment.run, argv) == 2
    assert last_line(capsys).startswith("error: argument --num-shards")


@pytest.mark.slow
def test_duplicate_parquet_ids_keep_the_first_copy_and_reject_the_later_ones(stylizer, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images = [encode(make_image(40, 40, seed=s)) for s in range(4)]
    pq.write_table(pa.table({"id": ["dup", "solo", "dup"], "image": images[:3]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["dup"], "image": images[3:]}), folder / "b.parquet")
    out = tmp_path / "out"
    assert run_main(augment.run, [f"--input={folder}", f"--output={out}", f"--stylizer={stylizer}", *FAST]) == 0
    augmented = pq.read_table(glob.glob(f"{out}/data/augmented-*.parquet")).to_pylist()
    assert sorted(r["id"] for r in augmented) == ["dup#0", "solo#0"]  # ids stay unique
    rejected = pq.read_table(glob.glob(f"{out}/rejected/rejected-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["reason"], r["error"].split(": ", 1)[1]) for r in rejected) == [
        ("dup", "duplicate_id", "a.parquet:2 repeats the id of a.parquet:0, which was kept"),
        ("dup", "duplicate_id", "b.parquet:0 repeats the id of a.parquet:0, which was kept"),
    ]


@pytest.mark.slow
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
    augmented = pq.read_table(glob.glob(f"{out}/data/augmented-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["label"]) for r in augmented) == [
        ("cats/near.png", "cats"),
        ("linked/far.png", "linked"),
    ]
    rejected = pq.read_table(glob.glob(f"{out}/rejected/rejected-*.parquet")).to_pylist()
    assert sorted((r["source_id"], r["reason"], r["records"]) for r in rejected) == [
        ("again", "symlink_to_folder_read", 0),
        ("broken.png", "broken_symlink", 1),
        ("cats/loop", "symlink_to_folder_read", 0),
    ]


def test_overwrite_deletes_nothing_until_the_job_is_built_and_never_its_own_input(
    photos, stylizer, finished_run, tmp_path, capsys
):
    out = copy_of(finished_run, tmp_path / "out")
    argv = [f"--input={photos}", f"--output={out}", *FAST, "--num-shards=1"]
    before = tables(out, "augmented")
    assert run_main(augment.run, [*argv, f"--stylizer={tmp_path}/missing.safetensors", "--overwrite"]) == 2
    assert tables(out, "augmented") == before  # the bad checkpoint failed the build: the earlier run is still there
    capsys.readouterr()
    assert run_main(augment.run, [f"--input={out}", f"--output={out}", f"--stylizer={stylizer}", "--overwrite"]) == 2
    assert f"is where --input {out} is read from" in last_line(capsys) and tables(out, "augmented") == before


# A run is finished only when summary.json exists ----------------------------------------------------
def test_summary_json_is_written_only_after_every_table_is_final(finished_run):
    """The commit marker comes last: when any table's shards are renamed into place (Beam's finalize), there is no
    summary.json yet, so a run killed at any moment never looks finished."""
    out, seen = finished_run
    assert sorted(seen) == [("augmented", False), ("rejected", False)]
    assert (out / "summary.json").exists() and (out / "preview.png").exists()
    assert not glob.glob(f"{out}/beam-temp-*")


@pytest.mark.slow
def test_a_run_killed_between_its_tables_and_its_summary_is_unfinished(
    photos, stylizer, finished_run, tmp_path, capsys
):
    """A kill after the shards are in place but before summary.json: readers refuse the folder in one line, a
    re-run says it is unfinished and needs --overwrite, which clears its shards."""
    out = copy_of(finished_run, tmp_path / "out")
    (out / "summary.json").unlink()  # what kill -9 between the tables and the summary leaves

    again = tmp_path / "again"
    assert run_main(augment.run, [f"--input={out}", f"--output={again}", f"--stylizer={stylizer}", *FAST]) == 2
    assert last_line(capsys) == (
        f"error: input {out} looks like an unfinished run (augmented-*.parquet but no summary.json, which a job "
        "writes last): re-run the job that wrote it"
    )
    assert not again.exists()

    argv = [f"--input={photos}", f"--output={out}", f"--stylizer={stylizer}", *FAST, "--num-shards=2"]
    assert run_main(augment.run, argv) == 2
    line = last_line(capsys)
    assert (
        "unfinished run (README.md, augmented-*.parquet, preview.png, rejected-*.parquet but no summary.json)" in line
    ), line
    assert "--overwrite" in line

    assert run_main(augment.run, [*argv, "--overwrite"]) == 0
    assert tables(out, "augmented") == ["augmented-00000-of-00002.parquet", "augmented-00001-of-00002.parquet"]
    assert rows(out, "augmented") == json.loads((out / "summary.json").read_text())["counts"]["rows_written"] == 4
    assert not (out / "preview.png").exists()  # the earlier run's, cleared with its shards


def test_an_interrupted_overwrite_never_leaves_a_folder_that_looks_finished(tmp_path):
    """--overwrite deletes the old summary.json before the old tables: cut short, the folder is unfinished."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.io import clear_earlier_run, inspect_output

    out = tmp_path / "out"
    out.mkdir()
    for name in ("augmented-00000-of-00002.parquet", "augmented-00001-of-00002.parquet", "summary.json"):
        (out / name).write_bytes(b"x")
    deleted = []
    real_delete = FileSystems.delete

    def delete(paths):
        deleted.append([path.rsplit("/", 1)[-1] for path in paths])
        real_delete(paths)

    FileSystems.delete, saved = delete, FileSystems.delete
    try:
        clear_earlier_run(inspect_output(str(out)), {"augmented", "rejected"})
    finally:
        FileSystems.delete = saved
    assert deleted[0] == ["summary.json"]
    assert os.listdir(out) == []


# Storage errors in Beam jobs are one line ---------------------------------------------------------
# Loaded by every Python process of the job (the launcher and, in multi_processing, each worker): Beam's Parquet
# sink finds the disk full when it creates a shard.
FULL_DISK = """
import errno
from apache_beam.io import parquetio

def full(self, temp_path):
    raise OSError(errno.ENOSPC, "No space left on device", temp_path)

parquetio._ParquetSink.open = full
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_threading", "multi_processing"])
def test_a_full_disk_in_a_beam_job_is_one_line(mode, stylizer, tmp_path):
    """augment on a full disk printed 291 lines of Beam tracebacks; now one line, exit 2. In multi_processing the
    worker's OSError reaches the launcher only as text, and the worker process prints its own traceback before it
    reports (Beam's sdk_worker, in a process the launcher cannot quieten): there the error is the last line.
    One photo and one worker: each worker process imports torch and Beam, and one is another process already."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FULL_DISK)
    photo = tmp_path / "photo"
    photo.mkdir()
    (photo / "0.png").write_bytes(encode(make_image(40, 36)))
    out = tmp_path / "out"
    argv = [f"--input={photo}", f"--output={out}", f"--stylizer={stylizer}", *FAST, "--num-shards=1"]
    argv += ["--runner=FnApiRunner", f"--direct_running_mode={mode}", "--direct_num_workers=1", "--cpu-threads=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(inject), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.augment", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    error = f"error: cannot write {out}: no space left on the device (ENOSPC)"
    assert done.stderr.splitlines()[-1] == error, done.stderr[-3000:]
    if mode == "multi_threading":  # the project's own progress lines, then the error: nothing of Beam's
        assert [line for line in done.stderr.splitlines() if " INFO " not in line] == [error], done.stderr[-3000:]
    assert not (out / "summary.json").exists() and not tables(out, "augmented")


def test_output_failure_reads_the_errno_behind_beams_wrapping(tmp_path):
    import errno

    from models.common.errors import OutputUnwritableError
    from pipelines.beam_job import output_failure

    out = str(tmp_path / "out")
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", f"{out}/beam-temp-x/1.parquet")
        except OSError as exc:
            raise RuntimeError("OSError: ... [while running 'WriteAugmented']") from exc
    except RuntimeError as wrapped:
        assert str(output_failure(wrapped, out)) == f"cannot write {out}: disk quota exceeded (EDQUOT)"
    text = RuntimeError(f"Traceback ...\nPermissionError: [Errno 13] Permission denied: '{out}/x.parquet'\n")
    assert str(output_failure(text, out)) == f"cannot write {out}: permission denied (EACCES)"
    # a permission error on a file the job reads is no output failure: its traceback stays
    elsewhere = RuntimeError("PermissionError: [Errno 13] Permission denied: '/models/ckpt.safetensors'")
    assert output_failure(elsewhere, out) is None
    ours = RuntimeError(
        "models.common.errors.OutputUnwritableError: cannot write gs://b/o/summary.json (x) [while running 'W']"
    )
    assert str(output_failure(ours, out)) == "cannot write gs://b/o/summary.json (x)"
    assert isinstance(output_failure(OSError(errno.ENOSPC, "full"), out), OutputUnwritableError)
    assert output_failure(ValueError("a bug"), out) is None


# Containment both ways, after resolving symlinks --------------------------------------------------
def test_an_output_inside_a_parquet_input_is_refused(stylizer, finished_run, tmp_path, capsys):
    """The second run re-augmented the first run's output (8 rows for 4, ids r0#0#0)."""
    table = copy_of(finished_run, tmp_path / "table")
    inside = table / "more"
    assert run_main(augment.run, [f"--input={table}", f"--output={inside}", f"--stylizer={stylizer}", *FAST]) == 2
    assert last_line(capsys) == (
        f"error: --output {inside} is inside --input {table}: a later run would read this output as its input; "
        "write outside it"
    )
    assert not inside.exists()


@pytest.mark.parametrize("job", ["augment", "clean", "embed"])
def test_an_output_inside_an_image_folder_input_is_refused(job, photos, tmp_path, capsys):
    inside = photos / "styled"
    entry, args = {
        "augment": (augment.run, []),
        "clean": (clean.run, []),
        "embed": (embed.run, [f"--model={tmp_path}/missing"]),
    }[job]
    assert run_main(entry, [f"--input={photos}", f"--output={inside}", *args]) == 2
    line = last_line(capsys)
    assert line.startswith(f"error: --output {inside} is inside --input {photos}"), line
    assert not inside.exists()


def test_containment_is_checked_after_resolving_symlinks(photos, stylizer, tmp_path, capsys):
    alias = tmp_path / "alias"
    os.symlink(photos, alias)
    sneaky = alias / "out"  # photos/out, spelled through a link
    assert run_main(augment.run, [f"--input={photos}", f"--output={sneaky}", f"--stylizer={stylizer}"]) == 2
    assert last_line(capsys).startswith(f"error: --output {sneaky} is inside --input {photos}")

    out = tmp_path / "out"
    out.mkdir()
    (out / "in").mkdir()
    (out / "in" / "0.png").write_bytes(encode(make_image(40, 36)))
    link = tmp_path / "link-to-in"
    os.symlink(out / "in", link)  # an input that is really inside the output
    assert run_main(augment.run, [f"--input={link}", f"--output={out}", f"--stylizer={stylizer}"]) == 2
    assert last_line(capsys) == f"error: --output {out} is where --input {link} is read from; write to another folder"


def test_containment_in_the_torch_commands(tmp_path, capsys):
    from pipelines import deepdream, train_embeddings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for main in (train_embeddings.main, deepdream.main):
        assert run_main(main, [f"--input={corpus}", f"--output={corpus}/run"]) == 2
        assert last_line(capsys).startswith(f"error: --output {corpus}/run is inside --input {corpus}")


def test_a_glob_input_keeps_outputs_apart_only_where_it_reads(tmp_path):
    from models.common.errors import UsageError
    from pipelines.cli import check_apart

    check_apart(str(tmp_path / "data" / "styled"), input=f"{tmp_path}/data/*.png")  # * does not descend
    with pytest.raises(UsageError, match="is inside --input"):
        check_apart(str(tmp_path / "data" / "styled"), input=f"{tmp_path}/data/**/*.png")
    with pytest.raises(UsageError, match="is where --input"):
        check_apart(str(tmp_path / "data"), input=f"{tmp_path}/data/*.png")
    check_apart("gs://b/out", input="gs://b/in", style_images=["gs://b/paintings"])
    with pytest.raises(UsageError, match="--output gs://b/in/out is inside --input gs://b/in"):
        check_apart("gs://b/in/out", input="gs://b/in")


def test_the_summary_write_waits_on_every_other_write_in_the_graph(photos, stylizer, tmp_path, monkeypatch):
    """On any runner (Dataflow runs stages in parallel), not just in the order FnApiRunner happens to pick: the
    summary's write takes the final shard names of every table and the preview's path as side inputs."""
    from pipelines import beam_job

    built = []
    monkeypatch.setattr(beam_job, "run_pipeline", lambda pipeline, *args, **kwargs: built.append(pipeline))
    argv = [f"--input={photos}", f"--output={tmp_path / 'out'}", f"--stylizer={stylizer}", *FAST, "--preview"]
    augment.run(argv)

    def applied(node):
        yield node
        for part in node.parts:
            yield from applied(part)

    steps = {node.full_label: node for node in applied(built[0].transforms_stack[0])}
    waits_on = sorted(side.pvalue.producer.full_label for side in steps["WriteSummary/WriteJson"].side_inputs)
    assert waits_on == [
        "WriteAugmented/WriteToParquet/Write/WriteImpl/FinalizeWrite",
        "WriteDatasetCard/WriteCard",
        "WritePreview/DrawSheet",
        "WriteRejected/WriteToParquet/Write/WriteImpl/FinalizeWrite",
    ]
