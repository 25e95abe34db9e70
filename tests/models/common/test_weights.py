"""models.common.weights: the one reader of foreign state_dicts (torch or safetensors) and of the torch hub cache."""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import models.common.weights
from models.common.errors import CheckpointError, InputNotFoundError, WeightsUnavailableError
from models.common.weights import imagenet_file, load_state_dict

REAL_FETCH = models.common.weights.fetch  # before the autouse fixture replaces it


def test_torch_safetensors_and_wrapped_state_dicts_load_alike(tmp_path):
    state = {"conv.weight": torch.arange(6.0).view(2, 3), "conv.bias": torch.zeros(2)}
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("plain.pth", "wrapped.pth", "w.safetensors"):
        loaded = load_state_dict(str(tmp_path / name))
        assert loaded.keys() == state.keys() and torch.equal(loaded["conv.weight"], state["conv.weight"]), name


def test_missing_directories_pickles_and_non_tensors_are_one_line_errors(tmp_path):
    with pytest.raises(InputNotFoundError, match="not found"):
        load_state_dict(str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="is a directory"):
        load_state_dict(str(tmp_path))
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # needs code to unpickle: refused
    with pytest.raises(CheckpointError, match="cannot read .* as a state_dict"):
        load_state_dict(str(tmp_path / "module.pth"))
    torch.save({"lr": 0.1}, tmp_path / "numbers.pth")
    with pytest.raises(CheckpointError, match="plain state_dict of tensors"):
        load_state_dict(str(tmp_path / "numbers.pth"))


URL = "https://download.pytorch.org/models/x-0123abcd.pth"


def test_imagenet_weights_offline_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as error:
        imagenet_file(URL, "ImageNet X", "pass PATH")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and str(tmp_path / "checkpoints" / "x-0123abcd.pth") in message
    assert URL in message and "tests never touch the network" in message and message.endswith("or pass PATH")


def test_imagenet_weights_cache_hit_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "x-0123abcd.pth").write_bytes(b"")
    assert imagenet_file(URL, "ImageNet X", "pass PATH") == str(tmp_path / "checkpoints" / "x-0123abcd.pth")


def test_imagenet_weights_download_the_torch_hub_way(tmp_path, monkeypatch):
    """Where the network allows: torch.hub's downloader, into the hub cache, the hash prefix of the name checked."""
    import models.common.weights

    calls = []

    def download(url, path, hash_prefix=None, progress=True):
        calls.append((url, path, hash_prefix, progress))
        with open(path, "wb") as handle:
            handle.write(b"weights")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(models.common.weights, "fetch", REAL_FETCH)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    path = imagenet_file(URL, "ImageNet X", "pass PATH")
    assert calls == [(URL, str(tmp_path / "hub" / "checkpoints" / "x-0123abcd.pth"), "0123abcd", True)]
    assert Path(path).read_bytes() == b"weights"


def test_only_a_missing_file_is_not_found(tmp_path):
    from models.common.errors import InputUnreadableError
    from models.common.files import read_file

    with pytest.raises(InputNotFoundError, match="image not found"):
        read_file(str(tmp_path / "none.png"), "image", missing=InputNotFoundError)
    with pytest.raises(InputUnreadableError, match="image is a directory, not a file"):
        read_file(str(tmp_path), "image", missing=InputNotFoundError)
    with pytest.raises(InputUnreadableError, match="cannot be read: nosuchproto://x"):
        read_file("nosuchproto://x", "image", missing=InputNotFoundError)  # a failure of the storage itself
    locked = tmp_path / "locked.png"
    locked.write_bytes(b"x")
    locked.chmod(0)
    try:
        if os.geteuid() != 0:  # root reads any file
            with pytest.raises(InputUnreadableError, match="permission denied"):
                read_file(str(locked), "image", missing=InputNotFoundError)
    finally:
        locked.chmod(0o600)
