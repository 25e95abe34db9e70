"""``python -m benchmarks.augmentation_value``: a tiny version end to end, plus its parts."""

import glob
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from benchmarks.augmentation_value import __main__ as cli
from benchmarks.augmentation_value import experiment
from benchmarks.augmentation_value.augment_job import AugmentRequest, ExperimentError, read_augmented
from benchmarks.augmentation_value.classifier import ClassicAugment, shape_bias
from benchmarks.augmentation_value.cue_conflict import CueConflictSpec, make_cue_conflict, write_image_folder
from models.style.checkpoint import load_tensors, save_stylizer
from models.style.policy import record_seed
from models.style.registry import resolve
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from pipelines.cli import run_main
from transforms.images import decode_image, pil_to_uint8, resize_short_side

# The experiment trains small CNNs on real augment jobs: seconds each, the slowest tests here.
pytestmark = pytest.mark.slow


TINY = ["--classes=3", "--image-size=32", "--stylise-size=48", "--train-per-class=6", "--test-per-class=4"]
TINY += ["--steps=3", "--batch-size=8"]
STYLE_ARMS = ("style-random", "style-mix", "style-only", "classic+style", "painting-random", "painting-randomize")


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.125, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
        model.deconv3.conv2d.bias.fill_(120.0)
    path = tmp_path_factory.mktemp("ckpt") / "three.safetensors"
    save_stylizer(str(path), model, ["dots", "lines", "waves"])
    return str(path)


def tiny_run(output, stylizer, *extra, capture=None, monkeypatch=None):
    """The CLI in-process; with ``capture``, every run's training set is recorded by arm label."""
    if capture is not None:
        original = experiment.run_one

        def recording(variant, seed, training, *args):
            capture.setdefault(variant.label, training)
            return original(variant, seed, training, *args)

        monkeypatch.setattr(experiment, "run_one", recording)
    return cli.run([f"--output={output}", f"--stylizer={stylizer}", "--seeds=2", "--jobs=1", *TINY, *extra])


@pytest.mark.slow
def test_every_arm_trains_and_evaluates_on_the_jobs_parquet(tmp_path, stylizer, monkeypatch):
    captured = {}
    results = tiny_run(
        tmp_path / "out", stylizer, "--ratio=2", "--alpha=0.5,1", capture=captured, monkeypatch=monkeypatch
    )

    assert [arm["arm"] for arm in results["arms"].values()] == list(experiment.ARM_NAMES)
    originals = 3 * 6
    for label, arm in results["arms"].items():
        assert [run["seed"] for run in arm["runs"]] == [0, 1]
        for run in arm["runs"]:
            assert set(run["accuracy"]) == {"in_distribution", "cue_conflict", "unseen_textures"}
            assert all(0 <= value <= 1 for value in run["accuracy"].values())
            assert run["shape_bias"] is None or 0 <= run["shape_bias"] <= 1
        assert set(arm["mean"]) >= {"in_distribution", "cue_conflict", "unseen_textures"}
        stylised = 2 * originals if arm["arm"] in STYLE_ARMS else 0
        kept = 0 if arm["arm"] == "style-only" else originals  # style-only: the job's rows alone
        assert (arm["training_images"], arm["stylised_images"]) == (kept + stylised, stylised)
        assert len(captured[label]) == arm["training_images"]

    digests = {False: load_tensors(stylizer)[2], True: load_tensors(resolve("magenta_arbitrary"))[2]}
    train_ids = sorted(glob.glob(str(tmp_path / "out/work/data/train/*/*.png")))
    assert len(train_ids) == originals
    for label in [label for label, arm in results["arms"].items() if arm["arm"] in STYLE_ARMS]:
        (job,) = results["arms"][label]["augment_jobs"]
        table = pq.read_table(glob.glob(f"{job['output']}/data/augmented-*.parquet")).to_pylist()
        # ratio 2: two copies of every training image, each row traceable to its source, label, seed and stylizer
        assert len(table) == job["rows"] == 2 * originals
        assert sorted({row["source_id"] for row in table}) == sorted(p.split("/train/", 1)[1] for p in train_ids)
        paintings = results["arms"][label]["arm"].startswith("painting")
        for row in table:
            assert row["label"] == row["source_id"].split("/")[0]
            assert row["stylizer"] == digests[paintings]
            assert (row["style_embedding"] is not None) == paintings
            assert row["seed"] == record_seed(0, row["source_id"])
            assert 0.5 <= row["alpha"] <= 1
        # the arm trained on exactly the job's pixels, after its originals
        training = captured[label]
        from_parquet = {  # stylised at 48 px (--stylise-size), trained at 32
            pil_to_uint8(resize_short_side(decode_image(row["image"], min_side=1), 32)).tobytes() for row in table
        }
        stylised_rows = training.pixels[training.stylised]
        assert len(stylised_rows) == 2 * originals
        assert all(pixels.tobytes() in from_parquet for pixels in stylised_rows)
        assert (
            training.stylised.all()
            if results["arms"][label]["arm"] == "style-only"
            else training.stylised.sum() == 2 * originals
        )

    written = json.loads((tmp_path / "out/results.json").read_text())
    assert written["arms"].keys() == results["arms"].keys()
    assert "| none |" in (tmp_path / "out/results.md").read_text()
    assert (tmp_path / "out/results.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_results_reproducible_for_a_fixed_seed(tmp_path, stylizer):
    arms = "--arms=none,style-random,classic,online-style"
    first = tiny_run(tmp_path / "a", stylizer, arms, "--alpha=0.3,1")
    second = tiny_run(tmp_path / "b", stylizer, arms, "--alpha=0.3,1")
    tiny_run(tmp_path / "c", stylizer, arms, "--alpha=0.3,1", "--seed=5")
    strip = ("train_s", "transform_s")

    def runs(results):
        return {
            label: [{k: v for k, v in run.items() if k not in strip} for run in arm["runs"]]
            for label, arm in results["arms"].items()
        }

    assert runs(first) == runs(second)
    images = [
        pq.read_table(glob.glob(f"{root}/work/jobs/*/data/augmented-*.parquet")).column("image").to_pylist()
        for root in (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    ]
    assert images[0] == images[1]
    assert images[0] != images[2]


def test_read_back_refuses_a_table_that_does_not_account_for_the_input(tmp_path, stylizer):
    from pipelines import augment

    data = make_cue_conflict(CueConflictSpec(classes=2, image_size=32, train_per_class=3, test_per_class=1))
    write_image_folder(data.train, tmp_path / "in")
    request = AugmentRequest("random", 2, "1", stylizer=stylizer)
    out = tmp_path / "out"
    argv = [f"--input={tmp_path / 'in'}", f"--output={out}", "--styles=random:2", "--image-size=32"]
    augment.run([*argv, f"--stylizer={stylizer}", "--format=png", "--num-shards=1", "--cpu-threads=1"])
    sources = {image_id: image_id.split("/")[0] for image_id in data.train.ids}
    rows = read_augmented(request, str(out), sources, 32, seed=0)
    assert len(rows.ids) == 12 and rows.pixels.shape == (12, 32, 32, 3)

    with pytest.raises(ExperimentError, match=r"12 rows for 7 images × 2 copies = 14"):
        read_augmented(request, str(out), {**sources, "circle/extra.png": "circle"}, 32, seed=0)
    with pytest.raises(ExperimentError, match="label"):
        read_augmented(request, str(out), {k: "square" for k in sources}, 32, seed=0)
    with pytest.raises(ExperimentError, match="seed"):
        read_augmented(request, str(out), sources, 32, seed=1)
    with pytest.raises(ExperimentError, match="alpha"):
        read_augmented(AugmentRequest("random", 2, "0.2,0.5", stylizer=stylizer), str(out), sources, 32, seed=0)
    with pytest.raises(ExperimentError, match="mix"):
        read_augmented(AugmentRequest("mix", 2, "1", stylizer=stylizer), str(out), sources, 32, seed=0)
    # a table with one row dropped is refused, whatever else is right
    table = pq.read_table(glob.glob(f"{out}/data/augmented-*.parquet"))
    shutil.rmtree(out / "truncated", ignore_errors=True)
    (out / "truncated" / "data").mkdir(parents=True)
    (out / "truncated" / "rejected").mkdir()
    pq.write_table(table.slice(1), out / "truncated/data/augmented-00000-of-00001.parquet")
    rejected = pq.read_table(glob.glob(f"{out}/rejected/rejected-*.parquet"))
    pq.write_table(rejected, out / "truncated/rejected/rejected-00000-of-00001.parquet")
    shutil.copy(out / "summary.json", out / "truncated/summary.json")
    with pytest.raises(ExperimentError, match="11 rows"):
        read_augmented(request, str(out / "truncated"), sources, 32, seed=0)


def test_cue_conflict_sets():
    spec = CueConflictSpec(classes=4, image_size=32, train_per_class=50, test_per_class=10, texture_correlation=0.8)
    data = make_cue_conflict(spec)
    assert data.class_names == ["circle", "square", "triangle", "star"]
    train, tests = data.train, data.tests
    assert train.pixels.shape == (200, 32, 32, 3) and np.bincount(train.labels).tolist() == [50] * 4
    assert 0.7 < (train.texture_labels == train.labels).mean() < 0.9  # the shortcut, not a certainty
    assert (tests["in_distribution"].texture_labels >= 0).all()
    conflict = tests["cue_conflict"]
    assert (conflict.texture_labels != conflict.labels).all() and (conflict.texture_labels >= 0).all()
    assert (tests["unseen_textures"].texture_labels == -1).all()
    # every image from its own seed: a smaller set is a prefix of a larger one, and a re-run is identical
    smaller = make_cue_conflict(CueConflictSpec(**{**spec.__dict__, "train_per_class": 10}))
    assert np.array_equal(smaller.train.pixels, train.pixels[:40])
    assert not np.array_equal(train.pixels[0], train.pixels[4])  # same class, another pose and texture draw


def test_shape_bias_counts_only_shape_or_texture_decisions():
    shapes, textures = np.array([0, 0, 1, 1, 2]), np.array([1, 2, 0, 2, 0])
    assert shape_bias(np.array([0, 2, 1, 0, 1]), shapes, textures) == 2 / 3  # the last two follow neither cue
    assert shape_bias(np.array([2, 1, 2, 0, 1]), shapes, textures) is None


def test_select_rows_takes_ratio_copies_per_source():
    rows = experiment.StylisedRows(
        ids=[f"s{i}#{n}" for i in range(10) for n in range(4)],
        source_ids=[f"s{i}" for i in range(10) for _ in range(4)],
        labels=["a"] * 40,
        styles=["x"] * 40,
        pixels=np.zeros((40, 1, 1, 3), np.uint8),
        elapsed_s=0.0,
        output="",
    )
    for ratio, per_source in ((0.5, {0, 1}), (1, {1}), (2.5, {2, 3}), (4, {4})):
        chosen = experiment.select_rows(rows, ratio, seed=0)
        counts = np.bincount([int(rows.source_ids[i][1:]) for i in chosen], minlength=10)
        assert len(chosen) == round(ratio * 10) and set(counts.tolist()) <= per_source
    picked = [int(rows.ids[i][-1]) for i in experiment.select_rows(rows, 1, seed=0)]
    assert len(set(picked)) > 1  # not always each source's first copy
    with pytest.raises(ExperimentError, match="copies"):
        experiment.select_rows(rows, 5, seed=0)


def test_classic_augment_draws_per_sample_and_epoch():
    augment = ClassicAugment(seed=0)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    keys = torch.arange(4)
    first = augment(images, keys, 0)
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, augment(images, keys, 0))
    assert not torch.equal(first, augment(images, keys, 1))
    # a sample's result does not depend on its batch-mates
    torch.testing.assert_close(augment(images[2:3], keys[2:3], 0), first[2:3])


def test_image_folders_and_one_line_errors(tmp_path, stylizer, capsys):
    data = make_cue_conflict(CueConflictSpec(classes=2, image_size=32, train_per_class=4, test_per_class=2))
    write_image_folder(data.train, tmp_path / "train")
    write_image_folder(data.tests["unseen_textures"], tmp_path / "photos")
    (tmp_path / "train/circle/broken.png").write_bytes(b"not an image")
    folders = [f"--train={tmp_path / 'train'}", f"--test={tmp_path / 'photos'}"]
    flags = [
        "--arms=none,style-random",
        "--ratio=1",
        "--alpha=1",
        "--seeds=1",
        "--jobs=1",
        "--image-size=32",
        "--stylise-size=32",
        "--steps=2",
    ]
    results = cli.run([f"--output={tmp_path / 'out'}", f"--stylizer={stylizer}", *flags, *folders])
    arm = results["arms"]["style-random ratio 1 alpha 1"]
    assert list(arm["mean"]) == ["photos"] and arm["training_images"] == 16
    # the broken file is reported, not lost, and the job's rejected row for it does not stop the experiment
    assert [s["path"].endswith("broken.png") for s in results["settings"]["data"]["skipped"]] == [True]

    assert run_main(cli.run, ["--arms=none,bogus", f"--output={tmp_path / 'x'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: unknown arm(s) bogus; arms: {', '.join(experiment.ARM_NAMES)}"
    )
    assert run_main(cli.run, ["--alpha=2", f"--output={tmp_path / 'x'}"]) == 2
    assert "error: --alpha" in capsys.readouterr().err
