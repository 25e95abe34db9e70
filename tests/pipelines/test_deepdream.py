"""pipelines.deepdream: dreams a person can look at, with the objective's history beside them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import deepdream
from pipelines.cli import run_main
from tests.conftest import encode, make_image
from tests.models.corpus_fixture import corpus_rows, save_untrained_checkpoint

FAST = ["--image-size=64", "--octaves=2", "--iterations=4", "--jitter=4", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "a.png").write_bytes(encode(make_image(96, 80, seed=1)))
    (root / "in" / "sub" / "b.jpg").write_bytes(encode(make_image(80, 96, seed=2), "JPEG"))
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save_untrained_checkpoint(root / "model.safetensors", corpus_rows(40, seed=4, size=16))
    return root


def test_layer_dream_on_a_folder(inputs, tmp_path):
    report = deepdream.main(
        [f"--input={inputs / 'in'}", f"--output={tmp_path}", f"--model={inputs / 'model.safetensors'}", *FAST]
    )
    assert sorted(report["images"]) == ["a.png", "sub/b.jpg"] and list(report["rejected"]) == ["broken.png"]
    assert report["objective"]["layer"] == "layer3"
    for source_id, result in report["images"].items():
        assert result["after"] > result["before"], source_id
        dreamed = Image.open(tmp_path / result["output"])
        assert dreamed.mode == "RGB" and min(dreamed.size) == 64
        assert np.asarray(dreamed, dtype=np.float32).std() > 5  # a picture, not a flat field
    original = Image.open(inputs / "in" / "a.png").convert("RGB").resize((77, 64))
    assert Image.open(tmp_path / "a.png").size == original.size
    strip = Image.open(tmp_path / "sub__b-strip.png")
    assert strip.height == 160 + 22 and strip.width > 4 * 100  # input + 2 frames per octave, side by side
    saved = json.loads((tmp_path / "deepdream.json").read_text())
    assert len(saved["images"]["a.png"]["history"]) == 2 * 4


def test_the_report_records_the_checkpoint_used_and_no_torchvision_defaults(inputs, tmp_path):
    from models.embedding.net import load_embedding_model

    checkpoint = str(inputs / "model.safetensors")
    deepdream.main([f"--input={inputs / 'in' / 'a.png'}", f"--output={tmp_path}", f"--model={checkpoint}", *FAST])
    saved = json.loads((tmp_path / "deepdream.json").read_text())
    digest = load_embedding_model(checkpoint)[2].digest
    assert saved["objective"] == {"model": {"path": checkpoint, "digest": digest}, "layer": "layer3"}
    assert not {"model", "torchvision", "weights", "layer", "text"} & set(saved["config"])
    assert "googlenet" not in json.dumps(saved) and "imagenet" not in json.dumps(saved)


def test_text_guided_dream(inputs, tmp_path):
    report = deepdream.main(
        [
            f"--input={inputs / 'in' / 'a.png'}",
            f"--output={tmp_path}",
            f"--model={inputs / 'model.safetensors'}",
            "--text=red circle",
            "--step=0.05",
            *FAST,
        ]
    )
    result = report["images"]["a.png"]
    assert report["objective"]["text"] == "red circle" and result["after"] > result["before"]


def test_torchvision_network_by_name(inputs, tmp_path):
    torch.manual_seed(0)
    report = deepdream.main(
        [
            f"--input={inputs / 'in' / 'a.png'}",
            f"--output={tmp_path}",
            "--torchvision=resnet18",
            "--weights=random",
            "--layer=layer2",
            *FAST,
        ]
    )
    assert report["images"]["a.png"]["after"] > report["images"]["a.png"]["before"]
    saved = json.loads((tmp_path / "deepdream.json").read_text())
    assert saved["objective"] == {"torchvision": "resnet18", "weights": "random", "layer": "layer2"}


def test_errors_are_one_line(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-cache"))
    assert run_main(deepdream.main, [f"--input={inputs / 'in'}", f"--output={tmp_path}", *FAST]) == 2
    assert "ImageNet googlenet weights are not in the torch hub cache" in capsys.readouterr().err
    argv = [f"--input={inputs / 'in'}", f"--output={tmp_path}", f"--model={inputs / 'model.safetensors'}"]
    assert run_main(deepdream.main, [*argv, "--text=zzzz qqqq", *FAST]) == 2
    assert "no word of 'zzzz qqqq' is in the model's text vocabulary" in capsys.readouterr().err
    assert run_main(deepdream.main, [*argv, "--layer=inception4c", *FAST]) == 2
    assert "top-level layers: conv1" in capsys.readouterr().err
    assert run_main(deepdream.main, [*argv, "--torchvision=resnet18", *FAST]) == 2
    assert "give --model or --torchvision, not both" in capsys.readouterr().err
    assert run_main(deepdream.main, [*argv, "--weights=random", *FAST]) == 2
    assert "--weights is for --torchvision" in capsys.readouterr().err


def test_parquet_ids_that_cannot_name_a_file_are_skipped_not_written_elsewhere(inputs, tmp_path):
    """A Parquet input supplies the ids the outputs are named after: a newline or a leading dot would land in a
    file name; each such record is reported as rejected and the run goes on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = encode(make_image(96, 80, seed=1))
    ids = ["fine", "new\nline", "..", "back\\slash", "x" * 300]
    pq.write_table(pa.table({"id": ids, "image": [image] * len(ids)}), tmp_path / "posts.parquet")
    output = tmp_path / "out"
    report = deepdream.main(
        [f"--input={tmp_path / 'posts.parquet'}", f"--output={output}", f"--model={inputs / 'model.safetensors'}"]
        + [*FAST, "--iterations=1", "--octaves=1"]
    )
    assert list(report["images"]) == ["fine"] and sorted(report["rejected"]) == sorted(ids[1:])
    assert sorted(p.name for p in output.iterdir()) == ["deepdream.json", "fine-strip.png", "fine.png"]
