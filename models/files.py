"""Files from a local path or any fsspec URL (``gs://``, ``memory://``).

Reading a whole file, with errors that say what happened: "not found" only when there is no such file; a directory,
a permission or a network failure each says so. Naming files after what a file supplies (a checkpoint's style
names, a painting's stem): ``safe_file_name`` refuses anything that is not one plain component, and ``path_under``
checks that the path, symlinks resolved, stays inside the output folder.
"""

import os

import fsspec

from models.errors import InputUnreadableError, OutputUnwritableError, StylebeamError, UsageError


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
