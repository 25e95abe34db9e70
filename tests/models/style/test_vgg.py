import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from models.common.errors import CheckpointError, InputNotFoundError, UsageError, WeightsUnavailableError
from models.common.pixels import IMAGENET_MEAN, IMAGENET_STD
from models.style.vgg import IMAGENET_URLS, build_loss_network, layer_names

IMAGENET_FILES = {arch: url.rsplit("/", 1)[1] for arch, url in IMAGENET_URLS.items()}


def images(batch=2, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def vgg_state(arch="vgg19", seed=1, prefix="features.", convs=2):
    """A torchvision-layout state_dict (first ``convs`` convolutions only, plus a classifier key to ignore)."""
    network = build_loss_network(arch, "random", layers=[f"conv1_{convs}" if convs <= 2 else "conv2_1"], seed=seed)
    state = {prefix + key: value.clone() for key, value in network.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state


def test_layer_names_follow_vgg_configurations():
    vgg19, vgg16 = layer_names("vgg19"), layer_names("vgg16")
    assert sum(name.startswith("conv") for name in vgg19) == 16
    assert sum(name.startswith("conv") for name in vgg16) == 13
    assert "relu5_4" in vgg19 and "relu5_4" not in vgg16
    assert vgg19[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]


def test_forward_returns_requested_layers_and_stops_at_the_deepest():
    network = build_loss_network("vgg19", "random", layers=["relu1_1", "relu3_1", "relu2_2"])
    features = network(images())
    assert set(features) == {"relu1_1", "relu2_2", "relu3_1"}
    assert features["relu1_1"].shape == (2, 64, 32, 32)
    assert features["relu2_2"].shape == (2, 128, 16, 16)
    assert features["relu3_1"].shape == (2, 256, 8, 8)
    assert len(network.features) == layer_names("vgg19").index("relu3_1") + 1


def test_imagenet_normalisation_happens_inside():
    network = build_loss_network("vgg16", "random", layers=["conv1_1", "relu1_1"])
    x = images()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    conv = network.features[0]
    expected = F.conv2d((x - mean) / std, conv.weight, conv.bias, padding=1)
    features = network(x)
    torch.testing.assert_close(features["conv1_1"], expected)
    # the conv output is returned as it was, not overwritten by an in-place ReLU
    assert features["conv1_1"].min() < 0
    torch.testing.assert_close(features["relu1_1"], expected.clamp_min(0))


def test_frozen_but_differentiable_with_respect_to_the_input():
    network = build_loss_network("vgg19", "random", layers=["relu2_1"])
    network.train()
    assert not network.training
    assert not any(p.requires_grad for p in network.parameters())
    x = images().requires_grad_(True)
    network(x)["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_weights_are_reproducible_by_seed():
    x = images()
    a = build_loss_network("vgg19", "random", layers=["relu2_1"], seed=3)(x)["relu2_1"]
    b = build_loss_network("vgg19", "random", layers=["relu2_1"], seed=3)(x)["relu2_1"]
    c = build_loss_network("vgg19", "random", layers=["relu2_1"], seed=4)(x)["relu2_1"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_random_weights_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_loss_network("vgg16", "random", layers=["relu1_1"], seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_average_pooling_replaces_max_pooling():
    network = build_loss_network("vgg19", "random", layers=["relu1_2", "pool1"], pooling="avg")
    features = network(images())
    torch.testing.assert_close(features["pool1"], F.avg_pool2d(features["relu1_2"], 2))


def test_imagenet_without_cached_weights_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as error:
        build_loss_network("vgg19", "imagenet", layers=["relu1_1"])
    message = str(error.value)
    assert "ImageNet VGG19 weights are not in the torch hub cache" in message and IMAGENET_URLS["vgg19"] in message
    assert str(tmp_path / "checkpoints" / IMAGENET_FILES["vgg19"]) in message
    assert "--loss-network random" in message


def test_imagenet_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    state = vgg_state("vgg16", seed=5)
    torch.save(state, tmp_path / "checkpoints" / IMAGENET_FILES["vgg16"])
    network = build_loss_network("vgg16", "imagenet", layers=["relu1_2"], seed=0)
    torch.testing.assert_close(network.features[2].weight, state["features.2.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_state_dict_path_with_or_without_the_features_prefix(tmp_path, prefix):
    state = vgg_state(seed=7, prefix=prefix)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    network = build_loss_network("vgg19", str(path), layers=["conv1_2"])
    assert torch.equal(network.features[0].weight, state[prefix + "0.weight"])


def test_safetensors_path(tmp_path):
    state = {key: value.contiguous() for key, value in vgg_state(seed=8).items()}
    path = tmp_path / "vgg.safetensors"
    save_file(state, str(path))
    network = build_loss_network("vgg19", str(path), layers=["relu1_2"])
    assert torch.equal(network.features[2].bias, state["features.2.bias"])


def test_bad_weight_files_raise_project_errors(tmp_path):
    with pytest.raises(InputNotFoundError, match="not found"):
        build_loss_network("vgg19", str(tmp_path / "missing.pth"), layers=["relu1_1"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_loss_network("vgg19", str(garbage), layers=["relu1_1"])
    too_shallow = tmp_path / "shallow.pth"
    torch.save(vgg_state(convs=1), too_shallow)
    with pytest.raises(CheckpointError, match="missing"):
        build_loss_network("vgg19", str(too_shallow), layers=["relu2_1"])


def test_unknown_layer_or_architecture_is_a_usage_error():
    with pytest.raises(UsageError, match="relu5_4"):
        build_loss_network("vgg16", "random", layers=["relu5_4"])
    with pytest.raises(UsageError, match="vgg11"):
        build_loss_network("vgg11", "random", layers=["relu1_1"])
