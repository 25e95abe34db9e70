import pytest
import torch

from models.common.errors import CheckpointError, UsageError, WeightsUnavailableError
from models.embedding.net import (
    EmbeddingNet,
    EmbeddingNetConfig,
    TinyResNet,
    build_backbone,
    load_embedding_model,
    save_embedding_model,
)
from models.embedding.text_targets import TextTargetConfig, TextTargets


@pytest.fixture(scope="module")
def text():
    tokens = [["red", "circle"], ["blue", "square"], ["red", "square"], ["blue", "circle"]] * 4
    return TextTargets.fit(tokens, TextTargetConfig("lda", 3, min_count=1, max_doc_fraction=0.9, passes=2))


@pytest.mark.parametrize("backbone", ["resnet-tiny", "resnet18", "googlenet"])
def test_projects_images_into_the_text_space(backbone):
    model = EmbeddingNet(EmbeddingNetConfig(backbone, 7, "sigmoid")).eval()
    images = torch.rand(2, 3, 40, 40)
    assert model(images).shape == (2, 7)
    embedded = model.embed(images)
    assert embedded.dtype == torch.float32 and ((embedded > 0) & (embedded < 1)).all()


def test_imagenet_weights_come_only_from_the_cache_or_a_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded.*--weights PATH or random"):
        build_backbone("resnet18", "imagenet")
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights exist for resnet-tiny"):
        build_backbone("resnet-tiny", "imagenet")
    with pytest.raises(UsageError, match="unknown backbone"):
        EmbeddingNetConfig("vgg11")
    source = TinyResNet()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded, _ = build_backbone("resnet-tiny", str(tmp_path / "w.pth"))
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="does not hold resnet18 weights"):
        build_backbone("resnet18", str(tmp_path / "w.pth"))


def test_checkpoint_round_trip_is_exact(tmp_path, text):
    torch.manual_seed(1)
    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim, "sigmoid")).eval()
    path = str(tmp_path / "run" / "model.safetensors")
    digest = save_embedding_model(path, model, text, {"epochs_done": 3})
    loaded, loaded_text, info = load_embedding_model(str(tmp_path / "run"))
    assert info.digest == digest and info.training == {"epochs_done": 3} and info.config == model.config
    images = torch.rand(3, 3, 32, 32)
    assert torch.equal(model.embed(images), loaded.embed(images))
    tokens = [["red", "circle"], ["blue"]]
    assert (text.encode(tokens)[0] == loaded_text.encode(tokens)[0]).all()


def test_bad_checkpoints_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_embedding_model(str(tmp_path / "missing.safetensors"))
    (tmp_path / "summary.json").write_text("{}")  # a file of the training folder, not its checkpoint
    with pytest.raises(CheckpointError, match=r"summary\.json is not a checkpoint: give a \.safetensors file or its"):
        load_embedding_model(str(tmp_path / "summary.json"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" * 64)
    with pytest.raises(CheckpointError, match="not a stylebeam checkpoint"):
        load_embedding_model(str(tmp_path / "junk.safetensors"))


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, text):
    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim)).eval()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    path = str(tmp_path / "nan.safetensors")
    save_embedding_model(path, model, text)
    with pytest.raises(CheckpointError, match=r"tensor model\.head\.weight holds 1 non-finite"):
        load_embedding_model(path)


def test_checkpoints_written_under_the_old_kind_name_still_load(tmp_path, text):
    from models.common.checkpoint import load_tensors, save_tensors

    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim)).eval()
    new = str(tmp_path / "new.safetensors")
    save_embedding_model(new, model, text)
    tensors, document, _ = load_tensors(new)
    assert document["kind"] == "stylebeam.embedding"
    old = str(tmp_path / "old.safetensors")
    save_tensors(old, tensors, {**document, "kind": "stylebeam.embedding/1"})  # the kind before the one naming
    loaded, _, _ = load_embedding_model(old)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.embed(images), model.embed(images))


def test_every_bad_document_is_one_checkpoint_error_line(tmp_path, text):
    """What deepdream, embed, evaluate_embeddings and train_embeddings --resume load: nothing in the document is
    trusted (each case was a KeyError, TypeError or AttributeError traceback, or an allocation the file's
    tensors never backed)."""
    from models.common.checkpoint import load_tensors, save_tensors

    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim)).eval()
    good = str(tmp_path / "good.safetensors")
    save_embedding_model(good, model, text)
    tensors, document, _ = load_tensors(good)
    document.pop("tensors_sha256")
    drop = object()
    cases = {
        "no text": ({"text": drop}, "has no 'text'"),
        "no config": ({"config": drop}, "has no 'config'"),
        "text a list": ({"text": []}, "text is a list, not an object"),
        "unknown backbone": ({"config": document["config"] | {"backbone": "vgg99"}}, "unknown backbone 'vgg99'"),
        "unknown key": ({"config": document["config"] | {"depth": 3}}, "unknown config key 'depth'"),
        "a huge head": (
            {"config": document["config"] | {"out_dim": 10**9}},
            r"tensor model\.head\.bias is \[3\], the architecture needs \[1000000000\]",
        ),
        "no vocabulary": ({"text": {"config": document["text"]["config"]}}, "the text model has no vocabulary"),
        "vocabulary a string": ({"text": document["text"] | {"vocab": "red"}}, "vocabulary is not a list of words"),
        "text config null": ({"text": document["text"] | {"config": None}}, "text config is null, not an object"),
        "other text size": (
            {"text": document["text"] | {"config": document["text"]["config"] | {"dim": 5}}},
            r"text array lda_sstats is float32 \[3, \d+\], not float \[5, \d+\]",
        ),
    }
    for case, (changes, message) in cases.items():
        changed = {key: value for key, value in (document | changes).items() if value is not drop}
        path = str(tmp_path / "bad.safetensors")
        save_tensors(path, tensors, changed)
        with pytest.raises(CheckpointError, match=message) as error:
            load_embedding_model(path)
        assert "\n" not in str(error.value) and path in str(error.value), case
    missing_array = {name: t for name, t in tensors.items() if name != "text.lda_eta"}
    save_tensors(path, missing_array, document)
    with pytest.raises(CheckpointError, match="the lda text model has no lda_eta array"):
        load_embedding_model(path)
