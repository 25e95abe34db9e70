"""Checkpoint I/O: one safetensors file that loads without executing code.

A checkpoint is tensors plus a JSON document in the safetensors header (``__metadata__["stylebeam"]``):
its ``kind``, architecture ``config``, ``style_names`` and ``training`` settings. The digest of a checkpoint
is the SHA-256 of its bytes, so the ``stylizer`` column of augmented rows names exactly the weights used.
Paths may be local or any fsspec URL (``gs://…``).
"""

import hashlib
import json
import os
from dataclasses import dataclass, field

import fsspec
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from models.errors import CheckpointError
from models.stylizer import MultiStyleTransformer, StylizerConfig

FORMAT_VERSION = 1
# Kinds name what a file holds, "stylebeam.<network>"; the layout's version is the document's format_version, and a
# trainer's resume state is "<kind>.resume" (models.resume). Kinds written by earlier versions map to today's.
STYLIZER_KIND = "stylebeam.stylizer"
EMBEDDING_KIND = "stylebeam.embedding"
LEGACY_KINDS = {"stylebeam.embedding/1": EMBEDDING_KIND}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def save_tensors(path: str, tensors: dict[str, torch.Tensor], document: dict) -> str:
    """Write ``tensors`` and the JSON ``document`` to ``path``; return the file's digest.

    Same tensors and document → same bytes (safetensors orders keys; the JSON is sorted). Local files are
    written beside and renamed into place, so a crash never leaves a truncated checkpoint under the real name
    (object stores such as GCS make each upload atomic already).
    """
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    metadata = {"stylebeam": json.dumps({"format_version": FORMAT_VERSION, **document}, sort_keys=True)}
    data = save_safetensors_bytes(cpu, metadata=metadata)
    write_atomically(path, data)
    return digest_of(data)


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to a local path (beside, then renamed into place) or any fsspec URL (uploads are atomic)."""
    if "://" in path and not path.startswith("file://"):
        with fsspec.open(path, "wb") as handle:
            handle.write(data)
        return
    local = path.removeprefix("file://")
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    with open(f"{local}.partial", "wb") as handle:
        handle.write(data)
    os.replace(f"{local}.partial", local)


def load_tensors(path: str, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint: ``(tensors, document, digest)``. Raises ``CheckpointError`` with the path, also when
    ``kind`` is given and the checkpoint is of another kind."""
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    try:
        tensors = load_safetensors_bytes(data)
        document = json.loads(read_safetensors_metadata(data)["stylebeam"])
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"not a stylebeam checkpoint: {path} ({type(exc).__name__}: {exc})") from None
    document["kind"] = LEGACY_KINDS.get(document.get("kind"), document.get("kind"))
    if kind is not None and document["kind"] != kind:
        raise CheckpointError(f"{path} is a {document.get('kind')!r} checkpoint, not a {kind!r} one")
    return tensors, document, digest_of(data)


def read_safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header: 8-byte little-endian length, then JSON."""
    header_length = int.from_bytes(data[:8], "little")
    if header_length <= 0 or header_length > len(data) - 8:
        raise ValueError("bad safetensors header length")
    return json.loads(data[8 : 8 + header_length]).get("__metadata__", {})


@dataclass
class StylizerInfo:
    config: StylizerConfig
    style_names: list[str]
    digest: str
    training: dict = field(default_factory=dict)

    def style_index(self, name: str) -> int:
        if name not in self.style_names:
            raise CheckpointError(f"unknown style {name!r}; this checkpoint has: {', '.join(self.style_names)}")
        return self.style_names.index(name)


def save_stylizer(path: str, model: MultiStyleTransformer, style_names: list[str], training: dict | None = None) -> str:
    """Save a stylizer with its architecture, style names and training settings; return its digest."""
    if len(style_names) != model.num_styles:
        raise ValueError(f"{len(style_names)} style names for a {model.num_styles}-style network")
    if len(set(style_names)) != len(style_names):
        raise ValueError(f"style names must be unique: {style_names}")
    document = {
        "kind": STYLIZER_KIND,
        "config": model.config.to_dict(),
        "style_names": list(style_names),
        "training": training or {},
    }
    return save_tensors(path, model.state_dict(), document)


def load_stylizer(path: str, device: str | torch.device = "cpu") -> tuple[MultiStyleTransformer, StylizerInfo]:
    """Load a stylizer in eval mode on ``device``."""
    tensors, document, digest = load_tensors(path, STYLIZER_KIND)
    config = StylizerConfig(**document["config"])
    model = MultiStyleTransformer(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({exc})") from None
    info = StylizerInfo(config, list(document["style_names"]), digest, document.get("training", {}))
    return model.to(device).eval(), info
