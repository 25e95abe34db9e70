"""pipelines.embed: corpus → embeddings Parquet that pandas reads; re-runs give identical embeddings on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from models.embedding.trainer import images_to_tensor
from pipelines import embed
from tests.conftest import encode, upload
from tests.models.corpus_fixture import corpus_rows, save_untrained_checkpoint, write_corpus
from transforms.embed import decode_and_prepare

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    rows = corpus_rows(30, seed=1, size=40)
    rows[3] = rows[3] | {"image": b"not an image at all"}
    rows[7] = rows[7] | {"image": b""}
    write_corpus(root / "clean", rows, files=2)
    model, _ = save_untrained_checkpoint(root / "model" / "model.safetensors", rows)
    return root, rows, model


def embeddings(output) -> pd.DataFrame:
    return pd.read_parquet(output, engine="pyarrow").sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def embedded(corpus):
    """One finished job over the corpus (its model named by file), for the tests that only read its output."""
    root, _, _ = corpus
    out = root / "out"
    model = root / "model" / "model.safetensors"
    embed.run([f"--input={root / 'clean'}", f"--output={out}", f"--model={model}", "--batch-size=4"])
    return out


def test_embeds_every_good_image_and_rejects_the_rest(corpus, embedded):
    _, rows, model = corpus
    out = embedded

    table = pd.read_parquet(sorted(out.glob("data/embeddings-*.parquet")))
    good = [r for i, r in enumerate(rows) if i not in (3, 7)]
    assert sorted(table["id"]) == sorted(r["id"] for r in good)
    assert {len(e) for e in table["embedding"]} == {model.config.out_dim}
    rejected = pd.read_parquet(sorted(out.glob("rejected/rejected-*.parquet")))
    assert dict(zip(rejected["source_id"], rejected["error"].str.split(":").str[0], strict=True)) == {
        rows[3]["id"]: "not_an_image",
        rows[7]["id"]: "empty_file",
    }
    summary = (out / "summary.json").read_text()
    assert '"embeddings": 28' in summary and '"rejected": 2' in summary

    by_id = {r["id"]: r for r in good}
    ids = list(table["id"])
    images = images_to_tensor([decode_and_prepare(by_id[i]["image"], 32) for i in ids], 32)
    with torch.no_grad():
        expected = model.embed(images).numpy()
    np.testing.assert_allclose(np.stack(table["embedding"]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_rerun_in_another_process_gives_identical_embeddings(corpus, embedded):
    """A fresh `python -m pipelines.embed` writes the same bytes as the run in this process. (One process, not
    --direct_running_mode=multi_processing: two workers importing torch and Beam cost ~50 s on a busy 2-core machine;
    one fresh interpreter ~15 s. The batch size stays 4: with 3, some values move by an ulp or two.)"""
    root, _, _ = corpus
    argv = [f"--input={root / 'clean'}", f"--model={root / 'model'}", f"--output={root / 'b'}", "--batch-size=4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.embed", *argv], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a = embeddings(sorted(embedded.glob("data/embeddings-*.parquet")))
    b = embeddings(sorted((root / "b").glob("data/embeddings-*.parquet")))
    assert list(a["id"]) == list(b["id"]) and len(a) == 28
    assert np.array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))


@pytest.mark.slow
def test_dataflow_dry_run_builds_the_job(corpus, gcs_bucket):
    root, _, _ = corpus
    upload(root / "clean", f"{gcs_bucket}/clean")
    upload(root / "model", f"{gcs_bucket}/model")
    result = embed.run(
        [
            f"--input={gcs_bucket}/clean",
            f"--output={gcs_bucket}/embeddings",
            f"--model={gcs_bucket}/model",
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=stylebeam-demo",
            "--region=us-central1",
            "--temp_location=gs://stylebeam-test/tmp",
            "--no_auth",
            f"--setup_file={REPO / 'setup.py'}",
        ]
    )
    transforms = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for step in ["ReadImages", "EmbedImages", "WriteEmbeddings", "WriteRejected", "WriteSummary"]:
        assert step in transforms


def test_bad_model_is_a_one_line_error(corpus, capsys):
    root, _, _ = corpus
    from pipelines.cli import run_main

    code = run_main(embed.run, [f"--input={root / 'clean'}", f"--output={root / 'x'}", f"--model={root / 'nothing'}"])
    assert code == 2 and capsys.readouterr().err.startswith("error: checkpoint not found")


def test_a_folder_is_embedded_under_relative_ids_and_a_failing_forward_pass_rejects_its_images(
    corpus, tmp_path, monkeypatch
):
    """A folder of images is embedded under ids relative to it. A batch whose forward pass raises is retried image by
    image; what still fails, and an embedding that is not finite, is a rejected row with its reason. (One job serves
    both: a folder job costs ~3 s of Beam set-up.)"""
    from models.embedding.net import EmbeddingNet

    root, rows, _ = corpus
    black = encode(Image.new("RGB", (40, 40), (0, 0, 0)))
    white = encode(Image.new("RGB", (40, 40), (255, 255, 255)))
    (tmp_path / "in" / "cats").mkdir(parents=True)
    files = {
        "cats/a.png": rows[0]["image"],
        "b.png": rows[1]["image"],
        "c.jpg": b"\xff\xd8 truncated jpeg",
        "black.png": black,
        "white.png": white,
    }
    for name, data in files.items():
        (tmp_path / "in" / name).write_bytes(data)
    real_embed = EmbeddingNet.embed

    def flaky_embed(self, images):
        means = images.flatten(1).mean(1)
        if bool((means < 0.01).any()):
            raise RuntimeError("CUDA out of memory (simulated)")
        out = real_embed(self, images)
        return torch.where((means > 0.99)[:, None], torch.full_like(out, float("nan")), out)

    monkeypatch.setattr(EmbeddingNet, "embed", flaky_embed)
    out = tmp_path / "out"
    embed.run([f"--input={tmp_path / 'in'}", f"--output={out}", f"--model={root / 'model'}", "--batch-size=4"])
    assert sorted(embeddings(sorted(out.glob("data/embeddings-*.parquet")))["id"]) == ["b.png", "cats/a.png"]
    rejected = pd.read_parquet(sorted(out.glob("rejected/rejected-*.parquet")))
    assert sorted(zip(rejected["source_id"], rejected["stage"], rejected["reason"], strict=True)) == [
        ("black.png", "embed", "inference_error"),
        ("c.jpg", "embed", "not_an_image"),
        ("white.png", "embed", "non_finite_embedding"),
    ]
