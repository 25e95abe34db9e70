"""Reading and writing whole files, local or at any fsspec URL (``gs://``, ``memory://``), with errors that say what
happened.

Reading: "not found" only when there is no such file; a directory, a permission or a network failure each says so.
Writing: every file the project writes outside Beam's own sinks goes through ``write_atomically``, so a full disk or
a kill never leaves a 0-byte or truncated file under the real name. Naming files after what a file supplies (a
checkpoint's style names, a painting's stem): ``safe_file_name`` refuses anything that is not one plain component,
and ``path_under`` checks that the path, symlinks resolved, stays inside the output folder.
"""

import contextlib
import errno
import os
import tempfile

import fsspec

from models.common.errors import InputUnreadableError, OutputUnwritableError, StylebeamError, UsageError


def read_file(path: str, what: str, *, missing: type[StylebeamError], unreadable: type[StylebeamError] | None = None):
    """The bytes at ``path``. ``what`` names the file in messages ("checkpoint", "style image"); ``missing`` is
    raised when it does not exist, ``unreadable`` (default ``InputUnreadableError``) for every other failure."""
    unreadable = unreadable or InputUnreadableError
    try:
        with fsspec.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise missing(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise unreadable(f"{what} is a directory, not a file: {path}") from None
    except PermissionError:
        raise unreadable(f"{what} cannot be read, permission denied: {path}") from None
    except Exception as exc:  # fsspec back ends raise their own types for network and service failures
        raise unreadable(f"{what} cannot be read: {path} ({type(exc).__name__}: {exc})") from None


# Storage failures a user fixes outside the program (free space, a quota, permissions, a read-only mount), with
# the words the one-line error uses.
STORAGE_ERRNOS = {
    number: words
    for number, words in (
        (errno.ENOSPC, "no space left on the device"),
        (getattr(errno, "EDQUOT", None), "disk quota exceeded"),  # not on Windows
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
    )
    if number is not None
}


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file under its real name is either the old one or all of ``data``.

    Locally: a temporary file beside it (same folder, so the rename never crosses file systems), fsynced, renamed
    into place, then the folder fsynced where the OS allows, so a crash, a kill or a full disk never leaves a
    0-byte or truncated file under the real name, and concurrent writers never interleave. Any fsspec URL
    (``gs://``, ``memory://``): one upload, which object stores publish only once it is complete. Missing parent
    folders are created. Every failure is one ``OutputUnwritableError`` line naming ``path`` (a full disk, a
    quota, a read-only or forbidden folder, a storage service's network error), never a library's traceback.
    """
    try:
        if "://" in path and not path.startswith("file://"):
            with fsspec.open(path, "wb") as handle:
                handle.write(data)
        else:
            _replace_local(os.path.abspath(path.removeprefix("file://")), data)
    except StylebeamError:
        raise
    except Exception as exc:  # OSError locally; fsspec back ends raise their own types for network failures
        raise unwritable(path, exc) from None


def unwritable(path: str, exc: BaseException) -> OutputUnwritableError:
    """The one-line error for a failed write of ``path``: the storage cause in words (``no space left on the
    device (ENOSPC)``) when there is one, else the exception's type and first line."""
    cause = storage_cause(exc)
    if cause is not None:
        return OutputUnwritableError(f"cannot write {path}: {STORAGE_ERRNOS[cause]} ({errno.errorcode[cause]})")
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return OutputUnwritableError(f"cannot write {path} ({type(exc).__name__}: {detail})")


def storage_cause(exc: BaseException | None) -> int | None:
    """The errno of the first storage failure (``STORAGE_ERRNOS``) in ``exc``'s chain of causes, or ``None``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def _replace_local(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # A bounded prefix: the temporary name must fit the file system's name limit wherever the real one does.
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)[:64]}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # a full disk may only say so here (delayed allocation), never after the rename
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename durable. Not every OS or file system can open or fsync a folder; the file is in place
    either way."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# NAME_MAX of ext4, XFS, APFS and NTFS (in bytes or UTF-16 units): a longer component cannot be created.
MAX_FILE_NAME_BYTES = 255


def file_name_problem(name: object, max_characters: int | None = None) -> str | None:
    """Why ``name`` cannot be one component of a file name (or is longer than ``max_characters``), or ``None``
    when it can: what a file supplies (a checkpoint's style name, a painting's stem) must not reach another folder,
    hide itself or carry terminal escapes into listings."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if not name.isprintable():  # NUL, newline, ESC and every other control or format character
        return "it holds a control character"
    if name.startswith("."):  # ".", ".." and hidden files
        return "it starts with a dot"
    if max_characters is not None and len(name) > max_characters:
        return f"it is longer than {max_characters} characters"
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        return f"it is longer than {MAX_FILE_NAME_BYTES} bytes"
    return None


def shown(value: object, limit: int = 40) -> str:
    """``value`` for a one-line message: its repr (control characters escaped), cut at ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:limit]}… ({size})"


def safe_file_name(name: str, what: str) -> str:
    """``name`` unchanged when it is safe as one file-name component (``file_name_problem``); else a ``UsageError``
    naming ``what`` it is ("style name of x.safetensors", "painting")."""
    problem = file_name_problem(name)
    if problem:
        raise UsageError(f"{what} {shown(name)} cannot name a file: {problem}")
    return name


def path_under(directory: str, name: str, what: str) -> str:
    """``directory/name`` for a ``name`` a file or an input supplied: one safe component (``safe_file_name``)
    whose path, symlinks resolved, stays inside ``directory``; else one error line, nothing written."""
    joined = directory.rstrip("/") + "/" + safe_file_name(name, what)
    if "://" in directory and not directory.startswith("file://"):
        return joined  # object stores have no symlinks, and one safe component cannot climb out
    root = os.path.realpath(directory.removeprefix("file://"))
    target = os.path.realpath(joined.removeprefix("file://"))
    if os.path.commonpath([root, target]) != root:
        raise OutputUnwritableError(
            f"{joined} leads outside {directory} (to {target}, through a symlink); remove the link or choose "
            "another output folder"
        )
    return joined
