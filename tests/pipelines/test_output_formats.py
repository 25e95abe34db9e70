"""Augment's output layout and formats, each read back by its own library: Hugging Face ``datasets`` (Parquet, as
written), ``torchvision.datasets.ImageFolder``, ``webdataset``; the re-run rules hold for every format."""

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.common.errors import UsageError
from pipelines import augment
from tests.conftest import encode, make_image
from tests.pipelines.test_augment import stylizer  # noqa: F401 (fixture)

CLASSES = ["cats", "dogs", "rocket"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Hugging Face ``datasets`` caches what it loads in the test's folder, not in the home directory."""
    try:
        import datasets
    except ImportError:
        return
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """7 usable images in 3 classes (one id with dots and a space, one file that is no image: a rejected row."""
    root = tmp_path_factory.mktemp("photos")
    names = ["cats/a.png", "cats/b.v2.png", "dogs/c.png", "dogs/d e.png", "rocket/rocket_000.jpg", "rocket/r1.png"]
    for seed, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        (root / name).write_bytes(encode(make_image(40 + seed, 36, seed=seed), fmt))
    (root / "dogs" / "broken.png").write_bytes(b"not an image")
    return root, names


def run_job(photos_root, output, checkpoint, *extra):
    argv = [
        f"--input={photos_root}",
        f"--output={output}",
        f"--stylizer={checkpoint}",
        "--image-size=32",
        "--min-side=16",
        "--batch-size=4",
        "--num-shards=1",
        "--styles=random:2",
        "--no-progress",
        "--runner=FnApiRunner",
        *extra,
    ]
    assert augment.run(argv).state == "DONE"
    return json.loads((output / "summary.json").read_text())


@pytest.fixture(scope="module")
def parquet_run(photos, stylizer, tmp_path_factory):  # noqa: F811
    """One default (Parquet) run, read by the tests that only read it: ``(output folder, summary)``. Tests that
    change the folder copy it first."""
    out = tmp_path_factory.mktemp("parquet-run") / "out"
    return out, run_job(photos[0], out, stylizer)


@pytest.fixture(scope="module")
def imagefolder_run(photos, stylizer, tmp_path_factory):  # noqa: F811
    """One ImageFolder run, read by its test and copied by the re-run rules' test: ``(output folder, summary)``."""
    out = tmp_path_factory.mktemp("imagefolder-run") / "out"
    return out, run_job(photos[0], out, stylizer, "--output-format=imagefolder")


@pytest.fixture(scope="module")
def webdataset_run(photos, stylizer, tmp_path_factory):  # noqa: F811
    """One WebDataset run (5 samples a shard), read by its test and copied by the re-run rules' test."""
    out = tmp_path_factory.mktemp("webdataset-run") / "out"
    return out, run_job(photos[0], out, stylizer, "--output-format=webdataset", "--shard-size=5")


def files_below(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_parquet_layout_loads_in_hugging_face_as_it_is(photos, parquet_run):
    datasets = pytest.importorskip("datasets")
    _, names = photos
    out, summary = parquet_run
    assert summary["classes"] == CLASSES
    assert files_below(out) == [
        "README.md",
        "data/augmented-00000-of-00001.parquet",
        "rejected/rejected-00000-of-00001.parquet",
        "summary.json",
    ]
    table = pq.read_table(out / "data" / "augmented-00000-of-00001.parquet")
    rows = datasets.load_dataset("parquet", data_dir=str(out), split="augmented")  # the table alone, as written
    assert rows.num_rows == table.num_rows == 2 * len(names) and rows.column_names == table.schema.names
    loaded = datasets.load_dataset(str(out), split="augmented")  # with the card's features
    assert loaded.num_rows == 2 * len(names) and loaded.column_names == table.schema.names
    assert loaded.features["label"].names == CLASSES
    assert type(loaded.features["image"]).__name__ == "Image"
    assert loaded.features["crop_box"] == rows.features["crop_box"] and loaded.features["alpha"].dtype == "float32"
    for row in loaded:  # label loads as the class index, the same as label_index; the id's class folder is its name
        assert row["label"] == row["label_index"] == CLASSES.index(row["source_id"].split("/")[0])
    first = loaded[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (first["width"], first["height"])
    assert list(datasets.load_dataset("parquet", data_dir=str(out))) == ["augmented"]  # rejected rows: no split


def test_the_output_read_back_as_input_skips_the_rejected_rows(photos, stylizer, parquet_run, tmp_path):  # noqa: F811
    _, names = photos
    out, again = tmp_path / "out", tmp_path / "again"
    shutil.copytree(parquet_run[0], out)  # a copy: its summary.json is deleted below
    summary = run_job(out, again, stylizer, "--styles=random:1")
    assert summary["counts"]["images_read"] == 2 * len(names) and summary["counts"]["rejected"] == 0
    (out / "summary.json").unlink()  # a run that never finished is refused as an input
    with pytest.raises(Exception, match="unfinished run"):
        run_job(out, tmp_path / "third", stylizer)


def test_imagefolder_loads_in_torchvision_with_the_job_classes(photos, imagefolder_run):
    from torchvision.datasets import ImageFolder

    root, names = photos
    out, summary = imagefolder_run
    folder = ImageFolder(str(out / "data"))
    assert folder.classes == summary["classes"] == CLASSES
    assert len(folder) == 2 * len(names)
    for path, index in folder.samples:
        name = path.rsplit("/", 1)[-1]
        assert name.startswith(path.split("/")[-2] + "%2F"), name  # <label>/<id with / escaped>.jpg
        assert index == CLASSES.index(path.split("/")[-2])
    for name in names:  # two styles of every photo, under its class, named by its escaped id
        label, rest = name.split("/")
        assert len(list((out / "data" / label).glob(f"{label}%2F{rest}#*.jpg"))) == 2, name
    image, _ = folder[0]
    assert image.size[0] >= 32 and image.size[1] >= 32
    rejected = pq.read_table(out / "rejected" / "rejected-00000-of-00001.parquet").to_pylist()
    assert [row["source_id"] for row in rejected] == ["dogs/broken.png"]
    assert not [p for p in out.rglob("*") if p.name.startswith(("beam-temp-", ".temp"))]

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(out), split="augmented")
    assert loaded.num_rows == 2 * len(names) and loaded.features["label"].names == CLASSES


@pytest.mark.slow
def test_webdataset_shards_load_in_webdataset_and_hugging_face(photos, stylizer, webdataset_run, tmp_path):  # noqa: F811
    webdataset = pytest.importorskip("webdataset")
    root, names = photos
    out = webdataset_run[0]
    shards = sorted(str(p) for p in (out / "data").glob("augmented-*.tar"))
    assert [s.rsplit("/", 1)[-1] for s in shards] == [f"augmented-0000{i}-of-00003.tar" for i in range(3)]
    with tarfile.open(shards[0]) as tar:
        members = tar.getmembers()
    keys = [m.name.split(".", 1)[0] for m in members]
    assert keys == sorted(keys) and keys[0] == "000000000" and all(key.isdigit() for key in keys)
    assert sorted(m.name for m in members[:3]) == ["000000000.cls", "000000000.jpg", "000000000.json"]
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}

    samples = list(webdataset.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json"))
    assert len(samples) == 2 * len(names)
    ids = [meta["id"] for _, _, meta in samples]
    assert ids == sorted(ids)  # keys are the ranks of the sorted ids
    for image, index, meta in samples:
        assert index == meta["label_index"] == CLASSES.index(meta["label"])
        assert image.size == (meta["width"], meta["height"])
        assert "image" not in meta and meta["source_id"].split("/")[0] == meta["label"]

    datasets = pytest.importorskip("datasets")
    for loaded in (
        datasets.load_dataset("webdataset", data_files=shards, split="train"),
        datasets.load_dataset(str(out), split="augmented"),
    ):
        assert loaded.num_rows == 2 * len(names)
        assert [row["cls"] for row in loaded] == [row["json"]["label_index"] for row in loaded]

    again = tmp_path / "again"  # the same rows give the same bytes
    run_job(root, again, stylizer, "--output-format=webdataset", "--shard-size=5")
    for shard in shards:
        twin = again / "data" / shard.rsplit("/", 1)[-1]
        assert hashlib.sha256(Path(shard).read_bytes()).digest() == hashlib.sha256(twin.read_bytes()).digest()


@pytest.mark.parametrize("output_format", ["imagefolder", "webdataset"])
def test_every_format_keeps_the_rerun_rules(photos, stylizer, tmp_path, output_format, request):  # noqa: F811
    """The earlier run is a copy of the module's run in that format; one job runs here (the --overwrite)."""
    root, names = photos
    out = tmp_path / "out"
    shutil.copytree(request.getfixturevalue(f"{output_format}_run")[0], out)
    with pytest.raises(UsageError, match="holds an earlier run"):
        run_job(root, out, stylizer, "--output-format=parquet")
    (out / "summary.json").unlink()
    with pytest.raises(UsageError, match="holds an unfinished run"):
        run_job(root, out, stylizer, f"--output-format={output_format}")
    user_file = out / "notes.txt"
    user_file.write_text("mine")
    run_job(root, out, stylizer, "--output-format=parquet", "--overwrite")
    assert files_below(out) == [
        "README.md",
        "data/augmented-00000-of-00001.parquet",
        "notes.txt",
        "rejected/rejected-00000-of-00001.parquet",
        "summary.json",
    ]
    assert not [p for p in (out / "data").iterdir() if p.is_dir()]  # no class folder of the old tree left


def test_shard_size_is_for_webdataset_only(photos, stylizer, tmp_path):  # noqa: F811
    root, _ = photos
    with pytest.raises(UsageError, match="--shard-size is for --output-format webdataset"):
        run_job(root, tmp_path / "out", stylizer, "--shard-size=5")


def test_card_features_are_what_datasets_writes_for_every_carried_type():
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa

    from transforms.schemas import AUGMENTED, huggingface_features

    carried = [
        ("caption", pa.string()),
        ("bbox", pa.list_(pa.int64())),
        ("meta", pa.struct([("x", pa.float64()), ("tags", pa.list_(pa.string()))])),
        ("boxes", pa.list_(pa.struct([("x", pa.float32())]))),
        ("rgb", pa.list_(pa.uint8(), 3)),
        ("nested", pa.list_(pa.list_(pa.int32()))),
        ("ok", pa.bool_()),
        ("taken", pa.timestamp("us")),
        ("half", pa.float16()),
    ]
    schema = pa.schema([*AUGMENTED, *carried])
    expected = datasets.Features.from_arrow_schema(schema)
    expected["image"], expected["label"] = datasets.Image(), datasets.ClassLabel(names=["a", "b"])
    assert huggingface_features(schema, ["a", "b"]) == expected._to_yaml_list()


def test_an_image_file_name_is_one_safe_component():
    from transforms.formats import file_stem, image_file_path

    assert file_stem("rocket/rocket_000.jpg#1") == "rocket%2Frocket_000.jpg#1"
    assert file_stem("../x") == "%2E.%2Fx"
    assert file_stem("a/b") != file_stem("a_b") != file_stem("a%2Fb")
    assert file_stem("фото/café 1.jpg#0") == "фото%2Fcafé 1.jpg#0"  # letters of any script stay
    long_ids = ["é" * 200 + "/a.jpg#0", "é" * 200 + "/a.jpg#1"]
    stems = [file_stem(long_id) for long_id in long_ids]
    assert stems[0] != stems[1] and all(len(stem.encode()) <= 247 and "~" in stem for stem in stems)
    assert image_file_path({"label": None, "id": "x.png#0", "image_format": "png"}) == "_unlabelled/x.png#0.png"
    assert image_file_path({"label": "", "id": "x.png#0", "image_format": "jpeg"}) == "_unlabelled/x.png#0.jpg"
    assert image_file_path({"label": "a/b", "id": "a/b/c.jpg#2", "image_format": "jpeg"}) == "a%2Fb/a%2Fb%2Fc.jpg#2.jpg"
