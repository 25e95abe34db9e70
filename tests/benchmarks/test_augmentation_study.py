"""``python -m benchmarks.augmentation_value.study``: the statistics on known numbers, the manipulation
check's pass rule, the emoji packages' fetch/verify/cache path on a generated fixture (never the network), the
held-out style split, the colour randomisation, the consistency arm's Jensen-Shannon term and pairs, the class probe's
augmentation, and a ``--quick`` run end to end, twice (determinism)."""

import json
import math
import tarfile

import numpy as np
import pytest
import torch

from benchmarks.augmentation_value import emoji, study
from benchmarks.augmentation_value.classifier import (
    ClassicAugment,
    ColourRandomise,
    TrainingSet,
    TrainSettings,
    jensen_shannon,
    train_classifier,
)
from benchmarks.augmentation_value.cue_conflict import LabelledImages
from benchmarks.augmentation_value.manipulation import passes, probe_tasks, rows_from
from benchmarks.augmentation_value.runs import Augmentation
from benchmarks.augmentation_value.stats import (
    compare_arms,
    gap_closed,
    holm,
    mean_interval,
    paired_difference,
    t_cdf,
    t_quantile,
)
from benchmarks.augmentation_value.style_split import split_styles
from models.style.checkpoint import load_stylizer, save_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig, one_hot
from pipelines.cli import run_main

# ---- statistics --------------------------------------------------------------------------------------------------


def test_paired_interval_by_hand():
    # differences 1..5: mean 3, s = sqrt(2.5), se = s / sqrt(5) = 0.7071; t(0.975, 4) = 2.776445 (tables)
    result = paired_difference([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    assert result.mean == 3 and result.df == 4
    assert result.std_error == pytest.approx(math.sqrt(2.5 / 5))
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert (result.low, result.high) == pytest.approx((3 - 2.776445 * 0.707107, 3 + 2.776445 * 0.707107), abs=1e-5)
    assert result.p == pytest.approx(0.013236, abs=1e-6)  # t = 4.2426 on 4 df, two-sided
    # pairing matters: the same values unpaired would vary far more than their differences
    same = paired_difference([0.50, 0.61, 0.72], [0.49, 0.60, 0.71])
    assert same.mean == pytest.approx(0.01) and same.std_error == pytest.approx(0, abs=1e-12)
    assert same.p == 0.0 and same.low == same.high == pytest.approx(0.01)
    with pytest.raises(ValueError, match="2 pairs"):
        paired_difference([1.0], [0.0])


def test_t_distribution_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30):
        for t in (-3.1, -0.4, 0.0, 1.7, 5.0):
            assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)
        for q in (0.025, 0.5, 0.9, 0.975, 0.99):
            assert t_quantile(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), abs=1e-7)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.05, 7), rng.normal(0.58, 0.05, 7)
    assert paired_difference(a, b).p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, abs=1e-10)


def test_holm_textbook_example():
    # Holm (1979) as in textbooks: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05: the two smallest are rejected
    result = holm({"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005})
    assert {name: row["rejected"] for name, row in result.items()} == {"H1": True, "H2": False, "H3": False, "H4": True}
    adjusted = {name: row["adjusted_p"] for name, row in result.items()}
    assert adjusted == pytest.approx({"H4": 0.02, "H1": 0.03, "H3": 0.06, "H2": 0.06})
    assert result["H4"]["level"] == pytest.approx(1 - 0.05 / 4)


def test_a_gain_needs_holms_interval_above_zero():
    none = [0.50, 0.52, 0.47, 0.55, 0.51]
    per_seed = {
        "none": none,
        "clear": [v + d for v, d in zip(none, (0.10, 0.12, 0.09, 0.11, 0.10), strict=True)],
        "noise": [v + d for v, d in zip(none, (0.03, -0.02, 0.01, -0.01, 0.02), strict=True)],
        "harm": [v - d for v, d in zip(none, (0.05, 0.06, 0.04, 0.05, 0.07), strict=True)],
    }
    result = compare_arms(per_seed, "none")
    assert result["clear"]["gain"] and not result["clear"]["loss"] and result["clear"]["holm_low"] > 0
    assert not result["noise"]["gain"] and result["noise"]["low"] < 0 < result["noise"]["high"]
    assert result["harm"]["loss"] and not result["harm"]["gain"]
    # Holm's interval is wider than the plain 95% one
    assert result["clear"]["holm_low"] < result["clear"]["low"]
    assert mean_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert gap_closed(0.6, 0.5, 0.9) == pytest.approx(0.25) and gap_closed(0.6, 0.5, 0.45) is None


# ---- the manipulation check --------------------------------------------------------------------------------------


def test_pass_rule_on_known_numbers():
    # chance 0.125: the nuisance may survive up to 0.225; the shape must keep 0.6 of its unstylised 0.74
    assert passes(shape=0.45, nuisance=0.20, shape_unstylised=0.74, nuisance_chance=0.125)
    assert passes(shape=0.444, nuisance=0.225, shape_unstylised=0.74, nuisance_chance=0.125)  # both at the limit
    assert not passes(shape=0.21, nuisance=0.43, shape_unstylised=0.74, nuisance_chance=0.125)  # the old probe
    assert not passes(shape=0.70, nuisance=0.26, shape_unstylised=0.74, nuisance_chance=0.125)  # texture survives
    assert not passes(shape=0.40, nuisance=0.13, shape_unstylised=0.74, nuisance_chance=0.125)  # shape lost
    results = {
        (None, None, "shape"): 0.74,
        (None, None, "nuisance"): 0.95,
        (64, "1", "shape"): 0.50,
        (64, "1", "nuisance"): 0.20,
        (128, "1", "shape"): 0.60,
        (128, "1", "nuisance"): 0.21,
        (128, "0.5", "shape"): 0.72,
        (128, "0.5", "nuisance"): 0.60,
    }
    check = rows_from(results, [(64, "1"), (128, "1"), (128, "0.5")], classes=8, nuisances=8)
    assert [row["passed"] for row in check["rows"]] == [None, True, True, False]
    assert check["chosen"] == {"size": 128, "alpha": "1"}  # the passing setting that keeps the most shape
    results[(64, "1", "nuisance")] = results[(128, "1", "nuisance")] = 0.5
    assert rows_from(results, [(64, "1"), (128, "1"), (128, "0.5")], 8, 8)["chosen"] is None


# ---- emoji packages: fetch, verify, cache ------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A local registry (file://) holding fixture packages for google and twitter, and pinned digests for them."""
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "registry"
    classes = {name: 4 for name in emoji.CLASSES[:3]}
    for vendor in ("google", "twitter"):
        package = emoji.VENDORS[vendor]
        integrity = emoji.fixture_tarball(root / package.tarball, vendor, classes)
        pinned = emoji.NpmPackage(vendor, package.name, package.version, integrity, "x")
        monkeypatch.setitem(emoji.VENDORS, vendor, pinned)
    return f"file://{root}"


def test_fetch_verifies_extracts_and_caches(registry, tmp_path):
    images = emoji.fetch_vendor(emoji.VENDORS["google"], registry)
    cached = tmp_path / "cache" / "npm" / "emoji-datasource-google-16.0.0"
    assert images.folder == cached / "64"
    assert sorted(p.name for p in cached.iterdir()) == ["64", "emoji.json"]  # no sprite sheets, nothing else
    assert len(list(images.folder.glob("*.png"))) == 12 and len(images.catalogue) == 12
    assert images.pixels(images.catalogue[0]["image"], 48).shape == (48, 48, 3)
    assert not [p for p in (tmp_path / "cache" / "npm").iterdir() if p.name.startswith(".")]  # no scratch left
    # cached: a second fetch reads the cache, even with the registry gone
    again = emoji.fetch_vendor(emoji.VENDORS["google"], "http://127.0.0.1:9")
    assert again.catalogue == images.catalogue
    members = emoji.class_members([images, emoji.fetch_vendor(emoji.VENDORS["twitter"], registry)], emoji.CLASSES[:3])
    assert [len(v) for v in members.values()] == [4, 4, 4]


def test_a_tarball_that_does_not_match_its_digest_is_refused(registry, tmp_path, monkeypatch):
    package = emoji.VENDORS["google"]
    wrong = emoji.NpmPackage("google", package.name, package.version, "sha512-" + "A" * 86 + "==", "x")
    with pytest.raises(emoji.EmojiFetchError, match="not the pinned"):
        emoji.fetch_vendor(wrong, registry)
    assert not (tmp_path / "cache" / "npm" / "emoji-datasource-google-16.0.0").exists()  # nothing cached


def test_offline_is_one_clear_line(registry, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["--families=emoji", f"--output={output}", "--npm-registry=http://127.0.0.1:9", "--quick"]
    assert run_main(study.run, argv) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: cannot download emoji-datasource-google 16.0.0 from http://127.0.0.1:9/")
    assert "Traceback" not in "\n".join(lines)


def test_fixture_tarball_has_the_packages_layout(tmp_path):
    emoji.fixture_tarball(tmp_path / "p.tgz", "twitter", {"sport": 2})
    with tarfile.open(tmp_path / "p.tgz") as archive:
        names = archive.getnames()
    assert "package/emoji.json" in names and sum(n.startswith("package/img/twitter/64/") for n in names) == 2


# ---- held-out styles, colour randomisation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=4, width=0.125, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
        model.deconv3.conv2d.bias.fill_(120.0)
    path = tmp_path_factory.mktemp("ckpt") / "four.safetensors"
    save_stylizer(str(path), model, ["dots", "lines", "waves", "blobs"])
    return str(path)


def test_style_split_keeps_each_style_exactly(stylizer, tmp_path):
    split = split_styles(stylizer, tmp_path)
    assert len(split.held_out_styles) == 1 and len(split.train_styles) == 3
    assert sorted(split.train_styles + split.held_out_styles) == ["blobs", "dots", "lines", "waves"]
    full, info = load_stylizer(stylizer)
    images = torch.rand(2, 3, 16, 16)
    for path, names in ((split.train, split.train_styles), (split.held_out, split.held_out_styles)):
        part, part_info = load_stylizer(path)
        assert part_info.style_names == list(names)
        for index, name in enumerate(names):
            whole = full.stylize(images, one_hot([info.style_names.index(name)] * 2, 4))
            torch.testing.assert_close(part.stylize(images, one_hot([index] * 2, len(names))), whole)


def test_colour_randomisation_and_classic_hue():
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    keys = torch.arange(6)
    colour = ColourRandomise(seed=0)
    first = colour(images, keys, 0)
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, colour(images, keys, 0)) and not torch.equal(first, colour(images, keys, 1))
    torch.testing.assert_close(colour(images[3:4], keys[3:4], 0), first[3:4])  # independent of batch-mates
    hues = [colour._draw(k, 0)[0] for k in range(200)]
    assert min(hues) < 0.1 and max(hues) > 0.9  # the whole wheel
    classic_hues = [ClassicAugment(0)._draw(k, 0)[7] for k in range(200)]
    assert max(abs(h) for h in classic_hues) <= 0.02  # a fifth of the 0.1 between class hues


# ---- the consistency arm -------------------------------------------------------------------------------------------


def _kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def test_jensen_shannon_by_hand():
    from scipy.spatial.distance import jensenshannon

    identical = torch.tensor([[1.0, 2.0, 0.5]]).expand(3, 4, 3)
    assert jensen_shannon(identical).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    probabilities = logits.softmax(-1).numpy().astype(np.float64)
    two = np.mean([jensenshannon(p, q) ** 2 for p, q in zip(*probabilities, strict=True)])  # natural log
    assert jensen_shannon(logits).item() == pytest.approx(two, rel=1e-5)
    three = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    p = three.softmax(-1).numpy().astype(np.float64)
    mixture = p.mean(0)
    by_hand = np.mean([np.mean([_kl(p[v, b], mixture[b]) for v in range(3)]) for b in range(5)])
    assert jensen_shannon(three).item() == pytest.approx(by_hand, rel=1e-5)
    confident = torch.eye(3)[:, None, :].expand(3, 2, 3) * 50  # three different one-hot predictions: ln 3
    assert jensen_shannon(confident).item() == pytest.approx(math.log(3), rel=1e-4)


def test_pairs_are_two_distinct_pool_copies_drawn_per_epoch():
    pool = np.arange(4 * 3, dtype=np.uint8).reshape(4, 3, 1, 1, 1).repeat(2, 2).repeat(2, 3).repeat(3, 4)  # copy ids
    originals = torch.zeros(2, 3, 2, 2)
    keys = torch.tensor([1, 3])
    pair = Augmentation("pair", seed=0, pool=pool).build()
    out = pair(originals, keys, epoch=0)
    assert out.shape == (6, 3, 2, 2) and torch.equal(out[:2], originals)
    copies = (out[2:, 0, 0, 0] * 255).round().long().reshape(2, 2)  # (view, image) → pool value = key*3 + copy
    for column, key in enumerate(keys.tolist()):
        first, second = copies[:, column].tolist()
        assert first // 3 == key and second // 3 == key and first != second
    assert torch.equal(out, pair(originals, keys, epoch=0))
    differs = [not torch.equal(pair(originals, keys, epoch=e), out) for e in range(1, 6)]
    assert any(differs)


def test_consistency_training_counts_every_view_in_the_batch():
    pixels = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    data = TrainingSet(pixels, np.arange(12) % 2, np.arange(12), np.zeros(12, bool))
    pool = np.stack([pixels, 255 - pixels, pixels // 2], axis=1)
    seen = []

    def transform(images, keys, epoch):
        seen.append(len(keys))
        return Augmentation("pair", 0, pool).build()(images, keys, epoch)

    settings = TrainSettings(steps=3, batch_size=9, width=4, consistency=12.0, views=3)
    model, _ = train_classifier(data, 2, settings, 0, transform)
    assert seen == [3, 3, 3]  # 9 images per step: 3 originals and their 2 copies each
    again, _ = train_classifier(data, 2, settings, 0, transform)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


# ---- the class probe ---------------------------------------------------------------------------------------------


def test_class_probe_is_augmented_and_nuisance_probe_is_not():
    images = LabelledImages(["a/x.png"] * 4, np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0]), np.zeros((4, 8, 8, 3)))
    shape, nuisance = probe_tasks(("fine", 64, "1"), images, images, 2, 2, steps=5, seed=0)
    assert shape.label[-1] == "shape" and shape.augmentation.kind == "classic"
    assert list(shape.training.labels) == [0, 1, 0, 1]
    assert nuisance.label[-1] == "nuisance" and nuisance.augmentation is None
    assert list(nuisance.training.labels) == [1, 1, 0, 0]


def test_seeded_union_keeps_each_seeds_ids_apart():
    one = LabelledImages(["circle/train-00000.png"], np.array([0]), np.array([0]), np.zeros((1, 4, 4, 3), np.uint8))
    union = study._seeded_union({3: one, 4: one})
    assert union.ids == ["circle/s3-train-00000.png", "circle/s4-train-00000.png"]
    assert len(union.pixels) == 2


# ---- --quick, end to end -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_end_to_end_is_deterministic(registry, stylizer, tmp_path):
    def quick(name, families="fine,emoji"):
        argv = [f"--output={tmp_path / name}", f"--stylizer={stylizer}", f"--families={families}"]
        return study.run([*argv, "--vendors=google,twitter", f"--npm-registry={registry}", "--quick", "--jobs=1"])

    first = quick("a")
    written = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(written["families"]) == {"fine", "emoji"}
    for family in written["families"].values():
        assert family["went_on"] and family["setting"]["forced"]
        assert list(family["arms"]) == list(study.ARMS)
        for arm in study.ARMS:
            assert family["arms"][arm]["seeds"] == [0, 1]
            assert set(family["arms"][arm]["tests"]) == {*family["shifted"], family["clean"], "held_out_styles"}
        assert set(family["comparisons"]) == set(study.ARMS) - {"none"}
        rows = family["manipulation"]["rows"]
        assert rows[0]["size"] is None and [(r["size"], r["alpha"]) for r in rows[1:]] == [(48, "1")]
    assert [d["held_out_vendor"] for d in written["families"]["emoji"]["draws"]] == ["google", "twitter"]
    assert "### Manipulation check" in (tmp_path / "a" / "results.md").read_text()
    assert (tmp_path / "a" / "results.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "a" / "samples-generated.png").read_bytes().startswith(b"\x89PNG")  # no emoji in it
    assert {"style-consistency", "style-paintings", "style-randomize"} <= set(study.ARMS)
    assert set(written["styles"]["paintings"]) >= {"harlequin.png", "blue_night.png"}
    jobs = {path.name for path in (tmp_path / "a" / "work" / "fine").iterdir()}
    assert {"train-styles", "held-out-styles", "paintings", "randomize"} <= jobs  # one job per kind, every seed

    second = quick("b", families="emoji")  # determinism on the real-data family; a second fine run would add ~half
    strip = {"train_s"}

    def runs(document):
        return {
            name: {arm: [{k: v for k, v in r.items() if k not in strip} for r in rs] for arm, rs in f["runs"].items()}
            for name, f in document["families"].items()
        }

    assert runs(first)["emoji"] == runs(second)["emoji"]
    assert first["families"]["emoji"]["manipulation"] == second["families"]["emoji"]["manipulation"]
    assert first["families"]["emoji"]["draws"] == second["families"]["emoji"]["draws"]
