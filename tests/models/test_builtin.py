"""Built-in stylizers by name: built on first use, cached, verified on read, rebuilt when corrupt."""

import logging
import os
from pathlib import Path

import pytest
import torch

from models import builtin
from models.checkpoint import load_stylizer, load_tensors, save_stylizer
from models.errors import CheckpointError
from models.stylizer import one_hot


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "cache"))
    builtin._verified.clear()
    yield tmp_path / "cache"
    builtin._verified.clear()


def test_built_on_first_use_then_reused(fresh_cache):
    path = builtin.checkpoint_path("magenta26")
    assert path.startswith(str(fresh_cache)) and os.path.getsize(path) > 500_000
    stamp = os.stat(path).st_mtime_ns
    builtin._verified.clear()  # a new process: verifies the file, does not rebuild it
    assert builtin.checkpoint_path("magenta26") == path and os.stat(path).st_mtime_ns == stamp
    assert [p.name for p in fresh_cache.iterdir()] == [os.path.basename(path)]  # no temporary files left


def test_same_bytes_on_every_build(fresh_cache, tmp_path, monkeypatch):
    """Workers build their own copy: it must have the launcher's digest (the ``stylizer`` column)."""
    first = load_tensors(builtin.checkpoint_path("magenta26"))[2]
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "other"))
    assert load_tensors(builtin.checkpoint_path("magenta26"))[2] == first


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_corrupt_cache_is_rebuilt_not_trusted(fresh_cache, damage, caplog):
    path = builtin.checkpoint_path("magenta26")
    good = load_tensors(path)[2]
    data = bytearray(Path(path).read_bytes())
    if damage == "flip":  # a bit in the weights, past the header: still parses as safetensors
        data[-1000] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    else:  # a valid stylebeam checkpoint, but not the built-in's source
        save_stylizer(path, load_stylizer("magenta26")[0].with_extra_styles(1), [f"s{i}" for i in range(27)])
        data = Path(path).read_bytes()
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    builtin._verified.clear()
    with caplog.at_level(logging.WARNING, logger="models.builtin"):
        rebuilt = builtin.checkpoint_path("magenta26")
    assert load_tensors(rebuilt)[2] == good
    if damage != "foreign":
        assert "rebuilding" in caplog.text


def test_flipped_weight_is_a_checkpoint_error_outside_the_cache(tmp_path):
    """Any checkpoint: the tensors' SHA-256 travels in the document and is checked on load."""
    path = tmp_path / "x.safetensors"
    builtin.export("magenta26", str(path))
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_stylizer(str(path))


def test_export_to_a_url_and_use_by_path(tmp_path):
    digest = builtin.export("magenta26", "memory://exported/magenta26.safetensors")
    model, info = load_stylizer("memory://exported/magenta26.safetensors")
    assert info.digest == digest == load_stylizer("magenta26")[1].digest
    images = torch.rand(1, 3, 32, 32)
    assert model.stylize(images, one_hot([4], 26)).shape == images.shape


def test_unknown_builtin():
    with pytest.raises(CheckpointError, match="unknown built-in stylizer 'nope'"):
        builtin.checkpoint_path("nope")
