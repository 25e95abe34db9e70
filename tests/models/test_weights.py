"""models.weights: the one reader of foreign state_dicts (torch or safetensors) and of the torch hub cache."""

import os

import pytest
import torch
from safetensors.torch import save_file

from models.errors import CheckpointError, InputNotFoundError, WeightsUnavailableError
from models.weights import hub_cache_file, load_state_dict


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


def test_the_hub_cache_is_looked_up_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=r"looked for .*checkpoints/x\.pth.*; pass PATH"):
        hub_cache_file("x.pth", "ImageNet X", "pass PATH")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "x.pth").write_bytes(b"")
    assert hub_cache_file("x.pth", "ImageNet X", "pass PATH") == str(tmp_path / "checkpoints" / "x.pth")


def test_only_a_missing_file_is_not_found(tmp_path):
    from models.errors import InputUnreadableError
    from models.files import read_file

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
