"""``pipelines.augment --style-images``: a painting collection as the styles (Ghiasi et al.'s arbitrary network)."""

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import augment
from tests.conftest import encode, make_image
from transforms.schemas import AUGMENTED

ASSETS = Path(augment.__file__).resolve().parent / "assets"
PHOTOS = ["astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(ASSETS / "samples" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def paintings(tmp_path_factory):
    """The 4 shipped Miró-like compositions, 2 scikit-image textures, and one broken file."""
    from skimage import data

    folder = tmp_path_factory.mktemp("paintings")
    for path in sorted((ASSETS / "styles").glob("*.png")):
        shutil.copy(path, folder / path.name)
    Image.fromarray(data.brick()).convert("RGB").save(folder / "brick.png")
    Image.fromarray(data.coffee()[::2, ::2]).save(folder / "coffee_beans.jpg")
    (folder / "broken.jpg").write_bytes(encode(make_image(64, 64), "JPEG")[:200])
    return folder


def run(photos, paintings, output, *extra):
    argv = [
        f"--input={photos}",
        f"--output={output}",
        f"--style-images={paintings}",
        "--image-size=64",
        "--num-shards=1",
        *extra,
    ]
    assert augment.run(argv).state == "DONE"
    rows = pq.read_table(glob.glob(f"{output}/data/augmented-*.parquet"))
    rejected = pq.read_table(glob.glob(f"{output}/rejected/rejected-*.parquet")).to_pylist()
    return rows, rejected


def pixels(row, size: tuple[int, int] | None = None) -> np.ndarray:
    import io

    image = Image.open(io.BytesIO(row["image"])).convert("RGB")
    return np.asarray(image.resize(size) if size else image, np.float64)


def photo(folder, name, size=(32, 32)) -> np.ndarray:
    return np.asarray(Image.open(folder / name).convert("RGB").resize(size), np.float64)


def colour_stats(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image.reshape(-1, 3).mean(0), image.reshape(-1, 3).std(0)])


@pytest.fixture
def torch_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def every_painting(photos, paintings, tmp_path_factory):
    """One ``--styles=all`` run (alpha 1) that the tests reading its output share."""
    output = tmp_path_factory.mktemp("all") / "out"
    table, rejected = run(photos, paintings, output, "--styles=all")
    return output, table, rejected


def test_every_painting_for_every_photo_with_provenance(photos, paintings, every_painting):
    output, table, rejected = every_painting
    rows = table.to_pylist()
    names = sorted(p.name for p in paintings.iterdir() if p.name != "broken.jpg")
    assert table.schema.equals(AUGMENTED)
    assert len(rows) == len(PHOTOS) * len(names)
    assert sorted({r["style"] for r in rows}) == names
    for row in rows:
        assert row["style_ids"] == [row["style"]] and row["style_mix"] == [1.0]
        assert row["style_weights"] is None and len(row["style_embedding"]) == 100
    assert [(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in rejected] == [
        ("broken.jpg", "style", "corrupt_image")
    ]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["counts"]["paintings_embedded"] == len(names)

    # Each output takes its own painting's colours: closer in colour statistics to it than to the others.
    refs = {name: colour_stats(np.asarray(Image.open(paintings / name).convert("RGB"), np.float64)) for name in names}
    closest = [
        min(refs, key=lambda name: np.abs(colour_stats(pixels(row)) - refs[name]).sum()) == row["style"] for row in rows
    ]
    assert sum(closest) >= 0.6 * len(rows), f"{sum(closest)} of {len(rows)}"


@pytest.mark.slow
def test_randomize_is_reproducible_across_runners_batches_and_cpu_threads(photos, paintings, tmp_path, torch_threads):
    """The re-run differs in runner (a worker process), batch-mates and --cpu-threads: painting embeddings differed
    by ~1e-6 between 1 and 2 torch threads, so --cpu-threads changed the bytes of the job. randomize fits its
    Gaussian on the painting embeddings and alpha < 1 embeds the photos too, so both embeddings reach every row.
    The 2 threads run in this process: in a worker process on a busy 2-core machine they cost ~20 s more."""
    policy = ["--styles=randomize:3", "--alpha=0.5,1", "--seed=4", "--format=png"]
    first, _ = run(photos, paintings, tmp_path / "a", *policy, "--cpu-threads=2")
    rows = first.to_pylist()
    assert len(rows) == 3 * len(PHOTOS) and {r["style"] for r in rows} == {"random"}
    embeddings = {tuple(r["style_embedding"]) for r in rows}
    assert len(embeddings) == len(rows)  # every sample its own style
    for row in rows:
        assert row["style_ids"] is None and row["style_mix"] is None
        assert np.abs(pixels(row, (32, 32)) - photo(photos, row["source_id"])).mean() > 8  # not the photo
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source_id"], []).append(pixels(row))
    assert all(np.abs(a[0] - a[1]).mean() > 4 for a in by_source.values())  # samples differ from each other

    second, _ = run(
        photos,
        paintings,
        tmp_path / "b",
        *policy,
        "--cpu-threads=1",
        "--direct_running_mode=multi_processing",  # one worker process: a fresh interpreter, not the launcher
        "--direct_num_workers=1",
        "--batch-size=2",
    )
    assert {r["id"]: r for r in rows} == {r["id"]: r for r in second.to_pylist()}


@pytest.mark.slow
def test_alpha_moves_toward_the_photo(photos, paintings, every_painting, tmp_path):
    strong = {r["id"]: r for r in every_painting[1].to_pylist()}
    weak, _ = run(photos, paintings, tmp_path / "w", "--styles=all", "--alpha=0.2")
    weak = {r["id"]: r for r in weak.to_pylist()}
    assert strong.keys() == weak.keys()
    closer = 0
    for key in strong:
        assert strong[key]["style"] == weak[key]["style"]  # the same painting, only alpha differs
        assert strong[key]["style_embedding"] != weak[key]["style_embedding"]
        original = photo(photos, strong[key]["source_id"])
        closer += (
            np.abs(pixels(weak[key], (32, 32)) - original).mean()
            < np.abs(pixels(strong[key], (32, 32)) - original).mean()
        )
    assert closer >= len(strong) - 1


def test_paintings_need_an_arbitrary_stylizer(photos, paintings, tmp_path, capsys):
    from pipelines.cli import run_main

    argv = [f"--input={photos}", f"--output={tmp_path}/o", f"--style-images={paintings}", "--stylizer=magenta26"]
    assert run_main(augment.run, argv) == 2
    assert "--style-images needs an arbitrary-style stylizer" in capsys.readouterr().err
    argv = [f"--input={photos}", f"--output={tmp_path}/o", "--stylizer=magenta_arbitrary"]
    assert run_main(augment.run, argv) == 2
    assert "give it paintings with --style-images" in capsys.readouterr().err
    argv = [f"--input={photos}", f"--output={tmp_path}/o", f"--style-images={paintings}", "--styles=random:9"]
    assert run_main(augment.run, argv) == 2
    assert "more distinct paintings" in capsys.readouterr().err


@pytest.mark.slow
def test_a_one_file_parquet_collection_counts_its_paintings_not_its_files(tmp_path, capsys, monkeypatch):
    """4 paintings in one Parquet file refused random:2 and mix:2 ("than the 1 there are"). mix:2 runs (and
    shows what a mix row holds); random:2 is built, not run: the refusal came before anything ran."""
    from pipelines import beam_job
    from pipelines.cli import run_main

    photos = tmp_path / "photos"
    photos.mkdir()
    make_image(64, 48, seed=1).save(photos / "p.png")
    ids = [f"painting{i}" for i in range(4)]
    images = [encode(make_image(48, 48, seed=10 + i)) for i in range(4)]
    pq.write_table(pa.table({"id": ids, "image": images}), tmp_path / "paintings.parquet")
    collection = tmp_path / "paintings.parquet"
    table, rejected = run(photos, collection, tmp_path / "mix", "--styles=mix:2", "--seed=4")
    rows = table.to_pylist()
    assert len(rows) == 2 and rejected == []
    for row in rows:
        assert set(row["style_ids"]) <= set(ids)
        assert row["style"] == "mix" and len(row["style_ids"]) == 3 and abs(sum(row["style_mix"]) - 1) < 1e-5

    built = []
    monkeypatch.setattr(beam_job, "run_pipeline", lambda pipeline, *args, **kwargs: built.append(pipeline))
    argv = [f"--input={photos}", f"--output={tmp_path}/random", f"--style-images={collection}", "--image-size=64"]
    assert run_main(augment.run, [*argv, "--styles=random:2"]) == 0 and len(built) == 1
    assert run_main(augment.run, [*argv, "--styles=random:5"]) == 2
    assert "more distinct paintings than the 4 there are" in capsys.readouterr().err
