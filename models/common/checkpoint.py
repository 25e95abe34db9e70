"""Checkpoint file I/O shared by every domain: one safetensors file that loads without executing code.

A checkpoint is tensors plus a JSON document in the safetensors header (``__metadata__["stylebeam"]``):
its ``kind``, architecture ``config``, ``training`` settings and ``source`` (where imported weights came from), and
the SHA-256 of the tensors' bytes, checked on every load: a flipped bit in the weights is a ``CheckpointError``,
never a silently different model. The digest of a checkpoint is the SHA-256 of its bytes. Paths may be local or any
fsspec URL (``gs://…``).

Nothing a file says is trusted: ``validate_document`` checks every document on load (a JSON object; a known kind;
required keys with their types) and then the kind's architecture check, which the module defining the network
registers in ``ARCHITECTURE_CHECKS`` (``models.style.checkpoint`` for stylizers), so this module never imports a
domain. Every loader goes through ``load_tensors``.
"""

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from models.common.errors import CheckpointError, StylebeamError
from models.common.files import read_file, shown, write_atomically

FORMAT_VERSION = 1
# Kinds name what a file holds, "stylebeam.<network>"; the layout's version is the document's format_version, and a
# trainer's resume state is "<kind>.resume" (models.common.resume). Kinds written by earlier versions map to today's.
STYLIZER_KIND = "stylebeam.stylizer"
EMBEDDING_KIND = "stylebeam.embedding"
ARBITRARY_KIND = "stylebeam.arbitrary"  # a style predictor and an embedding-conditioned stylizer
LEGACY_KINDS = {"stylebeam.embedding/1": EMBEDDING_KIND}
KINDS = (STYLIZER_KIND, EMBEDDING_KIND, ARBITRARY_KIND)
# What each kind's document must hold, and as what JSON type; optional parts (training, source) are objects too.
REQUIRED_KEYS = {
    STYLIZER_KIND: {"config": dict, "style_names": list},
    ARBITRARY_KIND: {"config": dict},
    EMBEDDING_KIND: {"config": dict, "text": dict},
}
OPTIONAL_OBJECTS = ("training", "source")


# kind → check(document, tensors, path) of the architecture: registered by the module that defines the network.
ARCHITECTURE_CHECKS: dict[str, Callable[[dict, dict[str, torch.Tensor], str], None]] = {}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return hasher.hexdigest()


def save_tensors(path: str, tensors: dict[str, torch.Tensor], document: dict) -> str:
    """Write ``tensors`` and the JSON ``document`` to ``path``; return the file's digest.

    Same tensors and document → same bytes (safetensors orders keys; the JSON is sorted). Local files are
    written beside and renamed into place, so a crash never leaves a truncated checkpoint under the real name
    (object stores such as GCS make each upload atomic already).
    """
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    document = {"format_version": FORMAT_VERSION, **document, "tensors_sha256": tensors_sha256(cpu)}
    data = save_safetensors_bytes(cpu, metadata={"stylebeam": json.dumps(document, sort_keys=True)})
    write_atomically(path, data)
    return digest_of(data)


def load_tensors(path: str, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint (a local path or fsspec URL): ``(tensors, document, digest)``. Raises
    ``CheckpointError`` with the path when the file is missing, foreign, corrupt (its tensors no longer match
    the SHA-256 written with them), of another kind than ``kind``, or its document fails ``validate_document``."""
    data = read_file(path, "checkpoint", missing=CheckpointError, unreadable=CheckpointError)
    try:
        tensors = load_safetensors_bytes(data)
        document = json.loads(read_safetensors_metadata(data)["stylebeam"])
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"not a stylebeam checkpoint: {path} ({type(exc).__name__}: {detail})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: its stylebeam document is {json_type(document)}, not an object")
    expected = document.get("tensors_sha256")  # absent in checkpoints written before it was added
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} is corrupt: its weights do not match the checksum written with them")
    validate_document(document, tensors, path, kind)
    return tensors, document, digest_of(data)


def validate_document(document: object, tensors: dict[str, torch.Tensor], path: str, kind: str | None = None) -> dict:
    """Check a checkpoint's document against its tensors; return it with a legacy ``kind`` renamed. One
    ``CheckpointError`` line says what is wrong: a document that is not an object, a kind other than ``kind`` (or,
    when ``kind`` is ``None``, one stylebeam does not read), a missing key or one of the wrong type, and for the
    kinds with an architecture check (``ARCHITECTURE_CHECKS``) what that check refuses."""
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: its stylebeam document is {json_type(document)}, not an object")
    version = document.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {shown(version)}; this stylebeam reads {FORMAT_VERSION}")
    found = document.get("kind")
    if isinstance(found, str):
        found = document["kind"] = LEGACY_KINDS.get(found, found)
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} is a {shown(found)} checkpoint, not a {kind!r} one")
    if kind is None and found not in KINDS:
        raise CheckpointError(f"{path} is a {shown(found)} checkpoint; stylebeam reads {', '.join(KINDS)}")
    for key, expected in REQUIRED_KEYS.get(found, {}).items():
        if key not in document:
            raise CheckpointError(f"{path}: the {found} checkpoint's document has no {key!r}")
        if not isinstance(document[key], expected):
            raise CheckpointError(f"{path}: {key} is {json_type(document[key])}, not {json_type(expected())}")
    for key in OPTIONAL_OBJECTS:
        if key in document and not isinstance(document[key], dict):
            raise CheckpointError(f"{path}: {key} is {json_type(document[key])}, not an object")
    check = ARCHITECTURE_CHECKS.get(found)
    if check is None and found in (STYLIZER_KIND, ARBITRARY_KIND):  # registered by models.style.checkpoint
        raise CheckpointError(f"{path}: a {found} checkpoint needs models.style.checkpoint to check its weights")
    if check is not None:
        check(document, tensors, path)
    return document


def config_from(cls: type, mapping: object, path: str, what: str = "config"):
    """``cls(**mapping)`` for the dataclass config a checkpoint stores; an unknown key, a value of the wrong JSON
    type or one the class refuses is one ``CheckpointError`` line naming it."""
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{path}: {what} is {json_type(mapping)}, not an object")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in mapping.items():
        if key not in hints:
            raise CheckpointError(f"{path}: unknown {what} key {shown(key)}; this stylebeam knows {', '.join(known)}")
        if not _has_type(value, hints[key]):
            raise CheckpointError(f"{path}: {what} {key} is {shown(value)}, not {_type_name(hints[key])}")
    try:
        return cls(**mapping)
    except (TypeError, ValueError, StylebeamError) as exc:  # a missing field; a value the class refuses
        raise CheckpointError(f"{path}: {what} cannot be used ({exc})") from None


def check_fits(build, tensors: dict[str, torch.Tensor], path: str, prefix: str = "") -> None:
    """Refuse ``tensors`` that are not exactly the parameters and buffers of the network ``build()`` makes (named
    ``prefix`` + name in the file). The network is built on the meta device: a config claiming a huge network
    allocates nothing."""
    try:
        with torch.device("meta"):
            network = build()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config does not describe a network ({exc})") from None
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    problem = None
    if missing := sorted(expected.keys() - found.keys()):
        problem = f"no tensor {prefix}{missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    elif unexpected := sorted(found.keys() - expected.keys()):
        problem = f"an unexpected tensor {shown(prefix + unexpected[0])}"
    elif wrong := next((name for name in sorted(expected) if expected[name] != found[name]), None):
        problem = f"tensor {prefix}{wrong} is {list(found[wrong])}, the architecture needs {list(expected[wrong])}"
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({problem})")


def _has_type(value: object, hint) -> bool:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, argument) for argument in arguments)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_has_type(item, arguments[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def check_finite(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Refuse weights holding NaN or ±Inf: they would write black images with exit 0."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {bad} non-finite values (NaN or Inf)")


def read_safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header: 8-byte little-endian length, then JSON."""
    header_length = int.from_bytes(data[:8], "little")
    if header_length <= 0 or header_length > len(data) - 8:
        raise ValueError("bad safetensors header length")
    return json.loads(data[8 : 8 + header_length]).get("__metadata__", {})
