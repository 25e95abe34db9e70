"""models.common.files: the one atomic writer of every file the project writes, and the rule that names a file supplies
become file names only as one plain component inside the output folder.

A full disk, a quota or a read-only folder is one ``OutputUnwritableError`` line; the file under its real name is the
old one or the whole new one, never 0 bytes or truncated, and no temporary file is left beside it."""

import errno
import os

import pytest

from models.common.errors import OutputUnwritableError, UsageError
from models.common.files import file_name_problem, path_under, safe_file_name, storage_cause, write_atomically


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".partial"))


def test_a_write_lands_whole_and_replaces_the_old_file(tmp_path):
    target = tmp_path / "deep" / "er" / "x.json"
    write_atomically(str(target), b"old")
    write_atomically(str(target), b"new contents")
    assert target.read_bytes() == b"new contents"
    assert leftovers(target.parent) == [] and oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_leaves_no_file_and_keeps_the_old_one(existing, tmp_path, full_disk):
    target = tmp_path / "p0__magenta_01.png"
    if existing:
        target.write_bytes(b"the earlier run's image")
    full_disk(tmp_path)
    with pytest.raises(OutputUnwritableError) as raised:
        write_atomically(str(target), b"\x89PNG" + b"x" * 1000)
    assert str(raised.value) == f"cannot write {target}: no space left on the device (ENOSPC)"
    assert "\n" not in str(raised.value)
    if existing:
        assert target.read_bytes() == b"the earlier run's image"
    else:
        assert not target.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_failed_fsync_is_a_failed_write(number, tmp_path, monkeypatch):
    """On delayed-allocation file systems a full disk or a quota may only show at fsync: the rename never happens."""
    import models.common.files

    def failing_fsync(descriptor):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(models.common.files.os, "fsync", failing_fsync)
    target = tmp_path / "samples.png"
    with pytest.raises(OutputUnwritableError, match=r"^cannot write .*samples\.png[: ]"):
        write_atomically(str(target), b"data")
    assert not target.exists() and leftovers(tmp_path) == []


def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    import models.common.files

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(models.common.files.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputUnwritableError, match=r"^cannot write .*/x\.json: read-only file system \(EROFS\)$"):
        write_atomically(str(tmp_path / "x.json"), b"{}")


def test_a_name_at_the_file_system_limit_still_gets_a_temporary_name(tmp_path):
    target = tmp_path / ("n" * 250 + ".png")
    write_atomically(str(target), b"data")
    assert target.read_bytes() == b"data"


def test_a_url_is_one_upload(tmp_path):
    import fsspec

    write_atomically("memory://stylebeam-test/out/summary.json", b"{}")
    with fsspec.open("memory://stylebeam-test/out/summary.json", "rb") as handle:
        assert handle.read() == b"{}"


def test_storage_cause_is_found_behind_wrapping_exceptions():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("a bundle failed") from inner
    except RuntimeError as outer:
        assert storage_cause(outer) == errno.EDQUOT
    assert storage_cause(ValueError("no")) is None


def test_a_real_full_tmpfs(small_tmpfs):
    """A real 64 KiB disk: the second, larger write does not fit. The first file is still whole."""
    first = small_tmpfs / "summary.json"
    write_atomically(str(first), b"a" * 20_000)
    with pytest.raises(OutputUnwritableError, match=r"no space left on the device \(ENOSPC\)$"):
        write_atomically(str(first), b"b" * 80_000)
    assert first.read_bytes() == b"a" * 20_000
    with pytest.raises(OutputUnwritableError, match=r"no space left on the device \(ENOSPC\)$"):
        write_atomically(str(small_tmpfs / "samples.png"), b"c" * 80_000)
    assert sorted(os.listdir(small_tmpfs)) == ["summary.json"]


@pytest.mark.parametrize(
    "name, problem",
    [
        ("/" + "../" * 20 + "any/where/x", "path separator"),
        ("../../x", "path separator"),
        ("..\\..\\x", "path separator"),
        ("..", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("", "empty"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("\x1b[31mred", "control character"),
        ("é" * 200, "longer than 255 bytes"),
        (7, "not a string"),
    ],
)
def test_unsafe_names_are_refused_in_one_line(name, problem):
    assert problem in file_name_problem(name)
    with pytest.raises(UsageError) as error:
        safe_file_name(name, "style name")
    assert problem in str(error.value) and "\n" not in str(error.value) and "\x1b" not in str(error.value)


def test_plain_names_pass_unchanged(tmp_path):
    for name in ("magenta_01", "la muse", "starry+night", "a..b", "日本画"):
        assert safe_file_name(name, "style name") == name
    assert path_under(str(tmp_path), "p__la muse.png", "output") == f"{tmp_path}/p__la muse.png"
    assert path_under("gs://bucket/out/", "p__x.png", "output") == "gs://bucket/out/p__x.png"


def test_a_symlink_in_the_output_folder_cannot_lead_outside(tmp_path):
    outside, output = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    output.mkdir()
    os.symlink(outside / "victim.png", output / "p__x.png")
    with pytest.raises(OutputUnwritableError, match="leads outside"):
        path_under(str(output), "p__x.png", "output name")
    # the output folder itself may be a link: what counts is where its files land
    os.symlink(outside, tmp_path / "linked")
    assert path_under(str(tmp_path / "linked"), "p__y.png", "output") == f"{tmp_path}/linked/p__y.png"
