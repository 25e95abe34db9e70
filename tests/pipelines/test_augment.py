"""End-to-end runs of ``pipelines.augment`` on generated datasets that include every kind of broken file."""

import glob
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from models.style.checkpoint import save_stylizer
from models.style.registry import resolve
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from pipelines import augment
from pipelines.cli import run_main
from tests.conftest import encode, make_image
from transforms.schemas import AUGMENTED, REJECTED

STYLES = ["dots", "lines", "waves"]
# file name → (stage, reason) for every unusable input planted in the dataset
BROKEN = {
    "cats/empty.jpg": ("decode", "empty_file"),
    "cats/text.jpg": ("decode", "not_an_image"),
    "dogs/truncated.jpg": ("decode", "corrupt_image"),
    "dogs/tiny.png": ("decode", "too_small"),
    "dogs/bomb.png": ("decode", "too_many_pixels"),
    "notes.txt": ("read", "not_an_image_file"),
}


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.125, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
        model.deconv3.conv2d.bias.fill_(120.0)  # outputs mid-grey-ish instead of black: visible in JPEG
    path = tmp_path_factory.mktemp("ckpt") / "three.safetensors"
    save_stylizer(str(path), model, STYLES)
    return str(path)


def exif_rotated_jpeg():
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(make_image(60, 40, seed=7), "JPEG", exif=exif.tobytes())


def animated_gif():
    buffer = io.BytesIO()
    frames = [make_image(48, 48, seed=s).convert("P") for s in (1, 2)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def palette_with_transparency():
    image = make_image(50, 40, seed=3).convert("P")
    return encode(image, "PNG", transparency=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    good = {
        "cats/rgb.jpg": encode(make_image(64, 48, seed=1), "JPEG"),
        "cats/rotated.jpg": exif_rotated_jpeg(),
        "cats/grey_alpha.png": encode(make_image(40, 56, seed=2).convert("LA")),
        "cats/palette.png": palette_with_transparency(),
        "dogs/cmyk.jpg": encode(make_image(52, 52, seed=4).convert("CMYK"), "JPEG"),
        "dogs/deep.png": encode(Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16), "I;16")),
        "dogs/animated.gif": animated_gif(),
        "top.png": encode(make_image(45, 70, seed=5)),
    }
    good_jpeg = encode(make_image(64, 64, seed=6), "JPEG")
    broken = {
        "cats/empty.jpg": b"",
        "cats/text.jpg": b"these are not the pixels you are looking for",
        "dogs/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "dogs/tiny.png": encode(make_image(6, 40)),
        "dogs/bomb.png": encode(Image.new("1", (9000, 9000))),  # 81 MP: over --max-pixels below
        "notes.txt": b"a file that is not an image",
    }
    for name, data in {**good, **broken}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root, sorted(good)


def run_job(dataset_root, output, stylizer, *extra):
    argv = [
        f"--input={dataset_root}",
        f"--output={output}",
        f"--stylizer={stylizer}",
        "--image-size=32",
        "--min-side=16",
        "--max-pixels=50000000",
        "--batch-size=3",
        "--num-shards=1",
        *extra,
    ]
    result = augment.run(argv)
    assert result.state == "DONE"
    return pq.read_table(glob.glob(f"{output}/data/augmented-*.parquet")), pq.read_table(
        glob.glob(f"{output}/rejected/rejected-*.parquet")
    )


def test_every_usable_image_stylised_every_broken_one_rejected(dataset, stylizer, tmp_path):
    root, good = dataset
    out = tmp_path / "out"
    augmented, rejected = run_job(root, out, stylizer, "--styles=all", "--preview")

    assert augmented.schema.equals(AUGMENTED) and rejected.schema.equals(REJECTED)
    rows = augmented.to_pylist()
    assert len(rows) == len(good) * len(STYLES)
    assert sorted({r["source_id"] for r in rows}) == good
    assert len({r["id"] for r in rows}) == len(rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["cats/rgb.jpg#1"]["style"] == "lines" and by_id["cats/rgb.jpg#1"]["style_weights"] == [0, 1, 0]
    assert by_id["cats/rgb.jpg#0"]["label"] == "cats" and by_id["top.png#0"]["label"] is None
    rotated = Image.open(io.BytesIO(by_id["cats/rotated.jpg#0"]["image"]))
    assert rotated.format == "JPEG" and rotated.size == (32, 48)  # stored 60x40 + EXIF "rotate 90" → upright
    assert all((r["width"], r["height"]) == Image.open(io.BytesIO(r["image"])).size for r in rows)
    assert {r["stylizer"] for r in rows} == {json.loads((out / "summary.json").read_text())["stylizer"]["digest"]}

    assert sorted((r["source_id"], r["stage"], r["error"].split(":")[0]) for r in rejected.to_pylist()) == sorted(
        (name, stage, reason) for name, (stage, reason) in BROKEN.items()
    )
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["images_decoded"] == len(good) and counts["rows_written"] == len(rows)
    assert counts["rejected"] == len(BROKEN) and counts["rejected.reason.decode/corrupt_image"] == 1
    assert summary["elapsed_s"] > 0

    preview = Image.open(out / "preview.png")
    assert preview.format == "PNG" and preview.width > 3 * 100 and preview.height > 6 * 100
    frame = pd.concat(pd.read_parquet(path) for path in sorted(glob.glob(f"{out}/data/augmented-*.parquet")))
    assert len(frame) == len(rows) and frame["image"].map(len).min() > 100
    assert list(frame.columns) == AUGMENTED.names


@pytest.mark.slow
def test_same_bytes_across_reruns_and_runners(dataset, stylizer, tmp_path):
    """A re-run on multi-process workers (other bundles, other batch-mates) writes identical images."""
    root, good = dataset
    policy = ["--styles=random:2", "--alpha=0.3,0.9", "--seed=11"]
    first, _ = run_job(root, tmp_path / "a", stylizer, *policy)
    second, rejected = run_job(
        root,
        tmp_path / "b",
        stylizer,
        *policy,
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        "--cpu-threads=1",  # one torch thread a worker, as here: two workers of two threads on two cores crawl
        "--batch-size=2",
    )
    assert len(first) == len(good) * 2 and len(rejected) == len(BROKEN)
    a = {r["id"]: r for r in first.to_pylist()}
    b = {r["id"]: r for r in second.to_pylist()}
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    alphas = [r["alpha"] for r in a.values()]
    assert min(alphas) >= 0.3 and max(alphas) <= 0.9 and len(set(alphas)) > 1
    assert all(r["style"] in STYLES for r in a.values())


def test_parquet_input_carries_ids_and_labels_and_mix_policy(tmp_path, stylizer):
    """Also: a string ``image`` column (another file of the input) is one rejected row for the file, not a crash (it
    used to end the job with a TypeError)."""
    table = pa.table(
        {
            "id": ["p1", "p2", "p3"],
            "label": ["a", "b", None],
            "image": [encode(make_image(40, 40, seed=1)), b"broken", encode(make_image(48, 36, seed=2), "JPEG")],
            "extra": [1, 2, 3],
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "part-0.parquet", row_group_size=2)
    pq.write_table(pa.table({"id": ["s1", "s2"], "image": ["not", "bytes"]}), tmp_path / "in" / "strings.parquet")
    augmented, rejected = run_job(tmp_path / "in", tmp_path / "out", stylizer, "--styles=mix:2", "--alpha=0.5")
    rows = augmented.to_pylist()
    assert sorted(r["id"] for r in rows) == ["p1#0", "p1#1", "p3#0", "p3#1"]
    assert {r["source_id"]: r["label"] for r in rows} == {"p1": "a", "p3": None}
    assert all(r["style"] == "mix" and abs(sum(r["style_weights"]) - 1) < 1e-5 and r["alpha"] == 0.5 for r in rows)
    by_source = {r["source_id"]: r for r in rejected.to_pylist()}
    error = by_source["p2"]["error"]
    assert by_source == {
        "p2": {"source_id": "p2", "stage": "decode", "error": error, "reason": "not_an_image", "records": 1},
        "strings.parquet": {
            "source_id": "strings.parquet",
            "stage": "read",
            "error": by_source["strings.parquet"]["error"],
            "reason": "image_not_binary",
            "records": 2,
        },
    }
    assert error.startswith("not_an_image") and len(rejected) == 2


def test_cli_errors_are_one_line(tmp_path, stylizer, dataset, capsys):
    root, _ = dataset
    cases = [
        ([f"--input={tmp_path}/missing", f"--stylizer={stylizer}"], "input not found"),
        ([f"--input={root}", f"--stylizer={tmp_path}/none.safetensors"], "checkpoint not found"),
        ([f"--input={root}", f"--stylizer={stylizer}", "--styles=random:4"], "more distinct styles"),
        ([f"--input={root}", f"--stylizer={stylizer}", "--alpha=2"], "--alpha"),
        ([f"--input={root}", f"--stylizer={stylizer}", "--batch-size=0"], "--batch-size"),
    ]
    for args, message in cases:
        assert run_main(augment.run, [*args, f"--output={tmp_path}/out"]) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("error: ") and message in err, err
    with pytest.raises(SystemExit) as exited:
        augment.run(["--help"])
    assert exited.value.code == 0
    helped = capsys.readouterr().out
    assert "--styles" in helped and "DataflowRunner" in helped


@pytest.mark.slow
def test_module_entry_point_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.augment", f"--input={tmp_path}/missing", f"--output={tmp_path}/o"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip() == f"error: input not found or empty: {tmp_path}/missing"


def test_what_a_worker_would_fail_on_is_refused_before_the_job_runs(tmp_path, capsys, monkeypatch):
    """Weights that are not numbers, or --device cuda on a local runner without a GPU, used to pass the launcher and
    fail in every worker's setup: exit 1 behind a wall of Beam tracebacks (the NaN checkpoint, before any check: exit 0
    and black images). Now one line, exit 2, and no output folder."""
    from pipelines.cli import run_main

    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1))
    with torch.no_grad():
        model.conv1.conv2d.weight[0, 0, 0, 0] = float("nan")
    save_stylizer(str(tmp_path / "nan.safetensors"), model, ["a", "b"])
    assert run_main(augment.run, [f"--stylizer={tmp_path}/nan.safetensors", f"--output={tmp_path}/o1"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {tmp_path}/nan.safetensors: tensor conv1.conv2d.weight holds 1 non-finite values (NaN or Inf)\n"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main(augment.run, ["--device=cuda", f"--output={tmp_path}/o2"]) == 2
    assert capsys.readouterr().err == "error: --device cuda was asked for but no CUDA GPU is visible to torch\n"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_job_output_folders_null_ids_and_corrupt_row_groups(tmp_path, stylizer):
    """A folder another job wrote: its table is read, its side files are not; null ids fall back to row ids;
    a corrupt row group is dead-lettered and the rest of the file still read."""
    folder = tmp_path / "in"
    (folder / "_state").mkdir(parents=True)
    images = [encode(make_image(40, 40, seed=s)) for s in range(4)]
    pq.write_table(pa.table({"id": [None, None], "image": images[:2]}), folder / "table-00000-of-00002.parquet")
    pq.write_table(
        pa.table({"image": images[2:]}),
        folder / "table-00001-of-00002.parquet",
        row_group_size=1,
        compression="none",
        use_dictionary=False,
    )
    broken = folder / "table-00001-of-00002.parquet"
    data = bytearray(broken.read_bytes())
    first = pq.ParquetFile(broken).metadata.row_group(0).column(0).data_page_offset
    data[first : first + 12] = b"\xff" * 12  # the first row group's page header
    broken.write_bytes(bytes(data))
    pq.write_table(
        pa.table({"source_id": ["x"], "stage": ["decode"], "error": ["e"]}), folder / "rejected-00000-of-00001.parquet"
    )
    pq.write_table(pa.table({"image": [images[0]]}), folder / "_state" / "spool-0.parquet")

    augmented, rejected = run_job(folder, tmp_path / "out", stylizer, "--styles=random:1")
    assert sorted(augmented.column("source_id").to_pylist()) == [
        "table-00000-of-00002.parquet:0",
        "table-00000-of-00002.parquet:1",
        "table-00001-of-00002.parquet:1",
    ]
    assert [(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in rejected.to_pylist()] == [
        ("table-00001-of-00002.parquet:rows0+", "read", "unreadable_row_group")
    ]


@pytest.mark.slow
def test_no_flag_run_uses_the_built_in_26_style_network(tmp_path, monkeypatch):
    """A fresh clone's ``python -m pipelines.augment --preview``: the sample photos, magenta26, 4 random styles."""
    from models.style.checkpoint import load_stylizer

    monkeypatch.chdir(tmp_path)
    result = augment.run(["--preview"])
    assert result.state == "DONE"
    out = tmp_path / "augment-output"
    rows = pq.read_table(glob.glob(f"{out}/data/augmented-*.parquet")).to_pylist()
    samples = sorted(p.name for p in augment.SAMPLE_IMAGES.iterdir())
    assert len(rows) == 4 * len(samples) and sorted({r["source_id"] for r in rows}) == samples
    assert all(r["style"].startswith("magenta_") and len(r["style_weights"]) == 26 for r in rows)
    assert {r["stylizer"] for r in rows} == {load_stylizer(resolve("magenta26"))[1].digest}
    assert not pq.read_table(glob.glob(f"{out}/rejected/rejected-*.parquet")).num_rows
    assert Image.open(out / "preview.png").width > 500
    # the README's quick start reads exactly these rows (however many shards the machine's workers wrote)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(quick_start, namespace)
    assert sorted(namespace["rows"]["id"]) == sorted(r["id"] for r in rows)
    # and its "Training on the result" snippet gives one (image tensor, label index) pair per row
    training = readme.split("### Training on the result", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(training, namespace)
    assert (
        len(namespace["data"]) == len(rows)
        and namespace["classes"] == json.loads((out / "summary.json").read_text())["classes"]
    )
    assert all(image.shape == (3, 224, 224) and image.dtype == torch.float32 for image, _ in namespace["data"])


@pytest.mark.slow
def test_non_finite_outputs_are_rejected_not_encoded(dataset, tmp_path):
    """Finite weights that overflow for one style: that style's outputs are rejected rows, the rest are written."""
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.125, num_residual=1))
    with torch.no_grad():
        model.in5.weight[1] = 3e38
    path = tmp_path / "overflow.safetensors"
    save_stylizer(str(path), model, STYLES)
    root, good = dataset
    augmented, rejected = run_job(root, tmp_path / "out", str(path), "--styles=all")
    assert sorted({r["style"] for r in augmented.to_pylist()}) == ["dots", "waves"]
    stylize_rejects = [r for r in rejected.to_pylist() if r["stage"] == "stylize"]
    assert len(stylize_rejects) == len(good)
    assert all(r["error"].startswith("non_finite_output") for r in stylize_rejects)


def test_every_size_a_flag_sets_is_bounded_before_the_job_starts(tmp_path, stylizer, dataset, capsys):
    """--image-size 20000 on a 96x64 photo crashed in decode (MemoryError, 349 lines),
    --styles mix:100000000 asked for 19.4 GiB (547 lines)."""
    root, _ = dataset
    base = [f"--input={root}", f"--stylizer={stylizer}", f"--output={tmp_path}/out", "--styles=random:1"]
    cases = [
        (["--image-size=20000"], "--image-size: must be from 0 to 8192"),
        (["--image-size=8100"], "--image-size 8100 makes every image at least 8100x8100 = 65610000 pixels, above"),
        (["--image-size=256", "--max-pixels=50000"], "above --max-pixels 50000: every image would be rejected"),
        (["--image-size=0", "--min-side=300", "--max-pixels=50000"], "--min-side 300 makes every image at least"),
        (["--styles=mix:100000000"], "K is the number of outputs per image, from 1 to 1024"),
        (["--styles=randomize:5000"], "from 1 to 1024"),
        (["--batch-size=100000"], "--batch-size: must be from 1 to 1024"),
        (["--max-pixels=200000000"], "--max-pixels: must be from 1 to 178956970"),
    ]
    for extra, message in cases:
        assert run_main(augment.run, [*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()
