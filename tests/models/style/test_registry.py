"""Built-in stylizers by name: built on first use, cached, verified on read, rebuilt when corrupt."""

import logging
import os
from pathlib import Path

import pytest
import torch

from models.common.errors import CheckpointError
from models.style import registry as builtin
from models.style.checkpoint import load_stylizer, load_tensors, save_stylizer
from models.style.stylizer import one_hot


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
        save_stylizer(
            path, load_stylizer(builtin.resolve("magenta26"))[0].with_extra_styles(1), [f"s{i}" for i in range(27)]
        )
        data = Path(path).read_bytes()
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    builtin._verified.clear()
    with caplog.at_level(logging.WARNING, logger="models.style.registry"):
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
    assert info.digest == digest == load_stylizer(builtin.resolve("magenta26"))[1].digest
    images = torch.rand(1, 3, 32, 32)
    assert model.stylize(images, one_hot([4], 26)).shape == images.shape


def test_unknown_builtin():
    with pytest.raises(CheckpointError, match="unknown built-in stylizer 'nope'"):
        builtin.checkpoint_path("nope")


def test_a_self_consistent_cache_with_other_weights_is_rebuilt(fresh_cache, caplog):
    """The cache is authenticated by the weights' digest pinned in code, not only by the checksum written beside
    them: a checkpoint that claims the built-in's source file but holds other weights was used as magenta26."""
    path = builtin.checkpoint_path("magenta26")
    model, info = load_stylizer(path)
    with torch.no_grad():
        model.in1.weight[3] += 0.5  # one style changed; the file stays a consistent, valid checkpoint
    save_stylizer(path, model, info.style_names, source=info.source)
    assert load_tensors(path)[1]["source"] == info.source  # claims the right source file
    builtin._verified.clear()
    with caplog.at_level(logging.WARNING, logger="models.style.registry"):
        rebuilt = builtin.checkpoint_path("magenta26")
    assert "pinned" in caplog.text and load_tensors(rebuilt)[2] == info.digest


def test_a_build_that_does_not_give_the_pinned_weights_is_refused(fresh_cache, monkeypatch):
    import dataclasses

    entry = builtin.BUILTINS["magenta26"]
    monkeypatch.setitem(builtin.BUILTINS, "magenta26", dataclasses.replace(entry, tensors_sha256="0" * 64))
    with pytest.raises(CheckpointError, match="could not be rebuilt as pinned .*reinstall stylebeam"):
        builtin.checkpoint_path("magenta26")
    assert not any(fresh_cache.iterdir())  # the unauthenticated build is not left to be found


def test_an_unwritable_cache_falls_back_to_a_folder_of_this_user_only(tmp_path, monkeypatch):
    """A shared $TMPDIR/stylebeam-cache made by another user (here: a file of that name) blocked the job."""
    import tempfile

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "file" / "cache"))  # cannot be created
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "stylebeam-cache").write_text("someone else's")
    builtin._verified.clear()
    path = builtin.checkpoint_path("magenta26")
    assert os.path.dirname(path) == str(tmp_path / "tmp" / f"stylebeam-cache-{os.getuid()}")
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0  # private

    # that name taken by another user: a fresh private folder, never theirs
    other = os.getuid() + 1
    (tmp_path / "tmp" / f"stylebeam-cache-{other}").mkdir()  # owned by this user, so foreign to uid `other`
    monkeypatch.setattr(os, "getuid", lambda: other)
    builtin._verified.clear()
    path = builtin.checkpoint_path("magenta26")
    folder = os.path.dirname(path)
    assert folder.startswith(str(tmp_path / "tmp" / "stylebeam-cache-")) and not folder.endswith(f"-{other}")
    assert load_tensors(path)[1]["tensors_sha256"] == builtin.BUILTINS["magenta26"].tensors_sha256


def test_a_cache_url_is_refused_instead_of_making_a_local_folder(tmp_path, monkeypatch):
    """STYLEBEAM_CACHE=gs://… made a local folder ./gs:/…"""
    from models.common.errors import UsageError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYLEBEAM_CACHE", "gs://bucket/cache")
    builtin._verified.clear()
    with pytest.raises(UsageError, match=r"^STYLEBEAM_CACHE=gs://bucket/cache: the built-in cache is a local folder"):
        builtin.checkpoint_path("magenta26")
    assert not os.listdir(tmp_path)


def test_names_are_resolved_by_the_registry_not_by_the_checkpoint_loaders(tmp_path, monkeypatch):
    """The checkpoint code sits below the registry: it reads files, and a built-in name is a file only via
    ``resolve``; a path passes through ``resolve`` as given."""
    monkeypatch.chdir(tmp_path)  # no file named magenta26 here
    with pytest.raises(CheckpointError, match="magenta26"):
        load_stylizer("magenta26")
    assert builtin.resolve("some/where.safetensors") == "some/where.safetensors"
    assert builtin.resolve("magenta26") == builtin.checkpoint_path("magenta26")
    assert builtin.CONFIGS["magenta26"] == load_stylizer(builtin.resolve("magenta26"))[1].config
