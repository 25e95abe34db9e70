"""``augment`` and ``embed`` over hostile input trees (corrupt, mis-typed, mis-encoded, duplicated and
symlinked files, and a job's side files). Nothing is lost and nothing is doubled: the sources written plus the
records the rejected rows stand for equal the input records; the job exits 0 with no traceback (run in-process:
what it prints and what it logs are both read)."""

import glob
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import augment, embed
from pipelines.cli import run_main
from tests.conftest import encode, make_image
from tests.models.corpus_fixture import corpus_rows, save_untrained_checkpoint


def good(seed: int, fmt: str = "PNG") -> bytes:
    return encode(make_image(40, 36, seed=seed), fmt)


def side_files(root: Path) -> None:
    """What jobs write beside their tables: never input records."""
    (root / "summary.json").write_text("{}")
    for folder in ("_state", "beam-temp-augmented-0a1b"):
        (root / folder).mkdir()
        pq.write_table(pa.table({"id": ["side"], "image": [good(99)]}), root / folder / "0.parquet")
    pq.write_table(
        pa.table({"source_id": ["x"], "stage": ["decode"], "error": ["e"]}), root / "rejected-00000-of-00001.parquet"
    )


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> tuple[Path, int]:
    """A folder of images with every kind of trouble; returns it and how many input records it holds."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "images"
    for folder in ("cats", "dogs"):
        (root / folder).mkdir(parents=True)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "far.png").write_bytes(good(7))
    jpeg = good(2, "JPEG")
    files = {
        "cats/one.png": good(1),
        "cats/two.jpg": jpeg,
        "dogs/three.png": good(3),
        "dogs/copy.png": good(1),  # the same bytes as cats/one.png: a second record, its own id
        "cats/misnamed.jpg": good(4),  # PNG bytes behind a .jpg name: decoded by content
        "cats/truncated.jpg": jpeg[: len(jpeg) // 2],
        "cats/text.png": b"these are not pixels",
        "cats/empty.png": b"",
        "notes.txt": b"not an image at all",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.makedirs(os.fsencode(root / "dogs"), exist_ok=True)
    with open(os.fsencode(root / "dogs") + b"/caf\xe9.png", "wb") as handle:  # a name that is not UTF-8
        handle.write(good(5))
    os.symlink(elsewhere, root / "linked")  # followed: 1 record
    os.symlink(root / "cats", root / "again")  # a folder read already: reported, 0 records
    os.symlink(root / "cats" / "one.png", root / "alias.png")  # a linked file is a file: 1 record
    os.symlink(base / "gone.png", root / "broken.png")  # points nowhere: 1 record, rejected
    side_files(root)
    return root, len(files) + 1 + 1 + 1 + 1  # files, the non-UTF-8 one, far.png, alias.png, broken.png


@pytest.fixture(scope="module")
def parquet_tree(tmp_path_factory) -> tuple[Path, int]:
    """Parquet files with every kind of trouble; returns the folder and how many input rows it holds."""
    root = tmp_path_factory.mktemp("hostile") / "tables"
    root.mkdir()
    pq.write_table(
        pa.table({"id": ["p1", "p2", "dup"], "label": [1, 2, 3], "image": [good(1), good(2), good(3)]}),
        root / "a.parquet",
    )
    pq.write_table(pa.table({"id": ["dup", None], "image": [good(4), b"junk"]}), root / "b.parquet")
    pq.write_table(pa.table({"id": ["s1", "s2"], "image": ["not", "bytes"]}), root / "strings.parquet")
    pq.write_table(pa.table({"id": ["n1", "n2", "n3", "n4"], "caption": list("wxyz")}), root / "noimage.parquet")
    damaged = root / "c.parquet"
    pq.write_table(
        pa.table({"image": [good(5), good(6)]}), damaged, row_group_size=1, compression="none", use_dictionary=False
    )
    data = bytearray(damaged.read_bytes())
    first = pq.ParquetFile(damaged).metadata.row_group(0).column(0).data_page_offset
    data[first : first + 12] = b"\xff" * 12  # the first row group's page header
    damaged.write_bytes(bytes(data))
    (root / "garbage.parquet").write_bytes(b"PAR1 but nothing else")  # rows unknown: stands for 1 record
    side_files(root)
    (root / "preview.png").write_bytes(good(8))  # a contact sheet beside tables: not a mix of kinds
    return root, 3 + 2 + 2 + 4 + 2 + 1


@pytest.fixture(scope="module")
def stylizer(two_style_stylizer):
    return two_style_stylizer


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_untrained_checkpoint(path, corpus_rows(20, seed=3, size=40))
    return str(path)


def accounted(out: Path, table: str, key: str) -> tuple[int, list[dict]]:
    """Distinct sources written to ``table`` and the rejected rows."""
    written = {r[key] for p in glob.glob(f"{out}/data/{table}-*.parquet") for r in pq.read_table(p).to_pylist()}
    rejected = [r for p in glob.glob(f"{out}/rejected/rejected-*.parquet") for r in pq.read_table(p).to_pylist()]
    return len(written), rejected


def run_clean(entry, argv: list[str], capsys, caplog) -> None:
    """Run a job in-process: it exits 0, and nothing it printed or logged holds a traceback."""
    assert run_main(entry, argv) == 0
    said = capsys.readouterr().err + caplog.text
    assert "Traceback" not in said, said


def test_augment_over_a_hostile_folder_of_images(image_tree, stylizer, tmp_path, capsys, caplog):
    root, records = image_tree
    out = tmp_path / "out"
    argv = [f"--input={root}", f"--output={out}", f"--stylizer={stylizer}", "--image-size=32", "--styles=random:1"]
    run_clean(augment.run, argv, capsys, caplog)
    sources, rejected = accounted(out, "augmented", "source_id")
    assert sources + sum(r["records"] for r in rejected) == records
    assert sources == 8 and "dogs/caf\\xe9.png" in {
        r["source_id"] for p in glob.glob(f"{out}/data/augmented-*.parquet") for r in pq.read_table(p).to_pylist()
    }
    assert sorted((r["stage"], r["reason"]) for r in rejected) == [
        ("decode", "corrupt_image"),
        ("decode", "empty_file"),
        ("decode", "not_an_image"),
        ("read", "broken_symlink"),
        ("read", "not_an_image_file"),
        ("read", "symlink_to_folder_read"),
    ]


def test_embed_over_hostile_parquet(parquet_tree, model, tmp_path, capsys, caplog):
    root, records = parquet_tree
    out = tmp_path / "out"
    run_clean(embed.run, [f"--input={root}", f"--output={out}", f"--model={model}"], capsys, caplog)
    sources, rejected = accounted(out, "embeddings", "id")
    assert sources + sum(r["records"] for r in rejected) == records
    assert sorted((r["source_id"], r["reason"], r["records"]) for r in rejected) == [
        ("b.parquet:1", "not_an_image", 1),
        ("c.parquet:rows0+", "unreadable_row_group", 1),
        ("dup", "duplicate_id", 1),
        ("garbage.parquet", "unreadable_parquet", 1),
        ("noimage.parquet", "no_image_column", 4),
        ("strings.parquet", "image_not_binary", 2),
    ]


def test_augment_over_hostile_parquet(parquet_tree, stylizer, tmp_path, capsys, caplog):
    root, records = parquet_tree
    out = tmp_path / "out"
    argv = [f"--input={root}", f"--output={out}", f"--stylizer={stylizer}", "--image-size=32", "--styles=all"]
    run_clean(augment.run, argv, capsys, caplog)
    sources, rejected = accounted(out, "augmented", "source_id")
    assert sources + sum(r["records"] for r in rejected) == records and sources == 4
    rows = [r for p in glob.glob(f"{out}/data/augmented-*.parquet") for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 2 * sources and len({r["id"] for r in rows}) == len(rows)  # ids stay unique


@pytest.mark.slow
def test_embed_over_a_hostile_folder_of_images(image_tree, model, tmp_path, capsys, caplog):
    root, records = image_tree
    out = tmp_path / "out"
    run_clean(embed.run, [f"--input={root}", f"--output={out}", f"--model={model}"], capsys, caplog)
    sources, rejected = accounted(out, "embeddings", "id")
    assert sources + sum(r["records"] for r in rejected) == records and sources == 8
