"""Reading a whole file from a local path or any fsspec URL (``gs://``, ``memory://``), with errors that say what
happened: "not found" only when there is no such file; a directory, a permission or a network failure each says so."""

import fsspec

from models.errors import InputUnreadableError, StylebeamError


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
