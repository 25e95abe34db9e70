"""The augment job's rows: carried input columns, the geometry from source to output pixels, originals, labels."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.common.errors import UsageError
from pipelines import augment
from tests.conftest import encode, make_image
from tests.pipelines.test_augment import run_job, stylizer  # noqa: F401 (fixture)


def write_parquet(folder, table):
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")


@pytest.mark.slow
def test_input_columns_arrive_unchanged_and_labels_index_into_their_sorted_distinct_values(
    tmp_path,
    stylizer,  # noqa: F811
):
    struct = pa.struct([("x", pa.float64()), ("tag", pa.string())])
    table = pa.table(
        {
            "id": ["p1", "p2"],
            "image": [encode(make_image(40, 40, seed=1)), encode(make_image(48, 36, seed=2), "JPEG")],
            "caption": ["a cat", "ünïcode dog"],
            "bbox": pa.array([[1, 2, 3, 4], []], pa.list_(pa.int64())),
            "meta": pa.array([{"x": 0.5, "tag": "t"}, None], struct),
            "split": pa.array([None, "val"], pa.string()),
            "label": ["b", None],  # mapped (label, label_index), not carried
        }
    )
    write_parquet(tmp_path / "in", table)
    fewer = pa.table(
        {"id": ["q1"], "image": [encode(make_image(40, 40, seed=3))], "caption": ["only a caption"], "label": ["a"]}
    )
    pq.write_table(fewer, tmp_path / "in" / "part-1.parquet")  # the columns it lacks are null in its rows
    augmented, _ = run_job(tmp_path / "in", tmp_path / "out", stylizer, "--styles=random:2")
    assert augmented.schema.field("bbox").type == pa.list_(pa.int64())
    assert augmented.schema.field("meta").type == struct
    expected = {row["id"]: row for row in table.drop(["image", "label"]).to_pylist()}
    expected["q1"] = {"caption": "only a caption", "bbox": None, "meta": None, "split": None}
    rows = augmented.to_pylist()
    assert len(rows) == 6
    for row in rows:
        want = expected[row["source_id"]]
        assert {name: row[name] for name in ("caption", "bbox", "meta", "split")} == {
            name: want[name] for name in ("caption", "bbox", "meta", "split")
        }
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["carried_columns"] == ["caption", "bbox", "meta", "split"]
    labels = {row["source_id"]: (row["label"], row["label_index"]) for row in rows}
    assert labels == {"p1": ("b", 1), "p2": (None, None), "q1": ("a", 0)}
    assert augment.kept_columns("all", pa.schema([("image", pa.binary())])) == ()

    augmented, _ = run_job(tmp_path / "in", tmp_path / "out2", stylizer, "--keep-columns=caption", "--styles=all")
    assert "caption" in augmented.schema.names and "bbox" not in augmented.schema.names


@pytest.mark.slow
def test_a_column_that_clashes_with_ours_is_refused_in_one_line(tmp_path, stylizer):  # noqa: F811
    table = pa.table({"image": [encode(make_image(40, 40))], "style": ["baroque"], "label": ["a"]})
    write_parquet(tmp_path / "in", table)
    with pytest.raises(UsageError, match="input column style clashes"):
        run_job(tmp_path / "in", tmp_path / "out", stylizer, "--styles=all", "--keep-columns=style")
    with pytest.raises(UsageError, match="no column nope"):
        run_job(tmp_path / "in", tmp_path / "out", stylizer, "--keep-columns=nope", "--styles=all")
    pq.write_table(pa.table({"image": [encode(make_image(40, 40))], "style": [3]}), tmp_path / "in" / "part-1.parquet")
    with pytest.raises(UsageError, match="column style is string in .* but int64 in "):
        run_job(tmp_path / "in", tmp_path / "out", stylizer, "--keep-columns=all", "--styles=all")
    augmented, _ = run_job(tmp_path / "in", tmp_path / "out", stylizer, "--keep-columns=none", "--styles=all")
    assert "style" in augmented.schema.names and augmented.column("style").to_pylist()[0] != "baroque"


def test_a_box_mapped_with_the_recorded_geometry_lands_on_the_same_content(tmp_path, stylizer):  # noqa: F811
    # 150x96 at --image-size 64 is resized to 100x64, padded to the 8 px grid (104x64) and cut back: 100x64 (the old
    # code cropped it to 96x64, 2 px off each side, and recorded no geometry).
    pixels = np.full((96, 150, 3), 20, np.uint8)
    x0, y0, x1, y1 = 40, 30, 100, 70
    pixels[y0:y1, x0:x1] = 235
    (tmp_path / "in" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "in" / "a" / "box.png")
    augmented, _ = run_job(
        tmp_path / "in", tmp_path / "out", stylizer, "--include-originals", "--image-size=64", "--styles=all"
    )
    rows = augmented.to_pylist()
    assert sorted(row["style"] == "none" for row in rows) == [False] * 3 + [True]
    original = next(row for row in rows if row["style"] == "none")
    assert original["id"] == "a/box.png#none" and original["alpha"] == 0 and original["style_weights"] is None
    assert all(row["crop_box"] == original["crop_box"] and row["scale"] == original["scale"] for row in rows)
    out = np.asarray(Image.open(io.BytesIO(original["image"])).convert("L"), np.float32)
    assert out.shape == (original["height"], original["width"]) == (64, 100)
    cx0, cy0, _, _ = original["crop_box"]
    scale = original["scale"]
    assert original["crop_box"] == [0.0, 0.0, 150.0, 96.0] and scale == 64 / 96
    stylised = next(row for row in rows if row["style"] != "none")
    assert Image.open(io.BytesIO(stylised["image"])).size == (100, 64)
    mx0, my0, mx1, my1 = ((x0 - cx0) * scale, (y0 - cy0) * scale, (x1 - cx0) * scale, (y1 - cy0) * scale)
    inside = out[round(my0) + 2 : round(my1) - 2, round(mx0) + 2 : round(mx1) - 2]
    mask = np.ones_like(out, bool)
    mask[max(0, round(my0) - 2) : round(my1) + 2, max(0, round(mx0) - 2) : round(mx1) + 2] = False
    assert inside.min() > 200 and out[mask].max() < 60


def folders(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(make_image(40, 40, seed=len(name))))


@pytest.mark.slow
def test_label_depth_the_single_label_warning_and_progress(tmp_path, stylizer, capsys):  # noqa: F811
    """Also the progress line: it ends with the count of images, and --no-progress prints none (the same runs serve
    both, each job run costs seconds)."""
    folders(tmp_path / "data", ["train/cat/1.png", "train/dog/2.png", "train/dog/3.png"])
    augmented, _ = run_job(tmp_path / "data", tmp_path / "out", stylizer, "--styles=random:1")
    assert set(augmented.column("label").to_pylist()) == {"train"}
    assert set(augmented.column("label_index").to_pylist()) == {0}
    err = capsys.readouterr().err
    assert "warning: every image is labelled 'train'" in err and "--label-depth 2" in err
    lines = [line for line in err.splitlines() if line.startswith("augment: ")]
    assert lines and lines[-1].startswith("augment: 3/3 images, "), lines
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == ["train"] and summary["single_label"] is True

    argv = ["--styles=random:1", "--label-depth=2", "--no-progress"]
    augmented, _ = run_job(tmp_path / "data", tmp_path / "out2", stylizer, *argv)
    rows = {row["source_id"]: (row["label"], row["label_index"]) for row in augmented.to_pylist()}
    assert rows == {"train/cat/1.png": ("cat", 0), "train/dog/2.png": ("dog", 1), "train/dog/3.png": ("dog", 1)}
    err = capsys.readouterr().err
    assert "every image is labelled" not in err
    assert not [line for line in err.splitlines() if line.startswith("augment: ")]
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["classes"] == ["cat", "dog"] and summary["single_label"] is False

    augmented, _ = run_job(tmp_path / "data", tmp_path / "out3", stylizer, "--styles=random:1", "--label-depth=0")
    assert set(augmented.column("label").to_pylist()) == {None}
    assert set(augmented.column("label_index").to_pylist()) == {None}
