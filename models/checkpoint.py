"""Checkpoint I/O: one safetensors file that loads without executing code.

A checkpoint is tensors plus a JSON document in the safetensors header (``__metadata__["stylebeam"]``):
its ``kind``, architecture ``config``, ``style_names``, ``training`` settings and ``source`` (where imported
weights came from), and the SHA-256 of the tensors' bytes, checked on every load: a flipped bit in the weights is
a ``CheckpointError``, never a silently different model. The digest of a checkpoint is the SHA-256 of its
bytes, so the ``stylizer`` column of augmented rows names exactly the weights used. Paths may be local or any
fsspec URL (``gs://…``); wherever a path is accepted, so is a built-in name (``magenta26``, ``models.builtin``).

Two kinds: ``stylebeam.stylizer`` (one network of ``models.stylizer``'s family) and ``stylebeam.arbitrary``
(Ghiasi et al.'s pair: a style predictor and an embedding-conditioned transformer, in one file).
"""

import hashlib
import json
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from models.errors import CheckpointError
from models.files import read_file, write_atomically
from models.style_predictor import StylePredictor
from models.stylizer import MultiStyleTransformer, StylizerConfig

FORMAT_VERSION = 1
# Kinds name what a file holds, "stylebeam.<network>"; the layout's version is the document's format_version, and a
# trainer's resume state is "<kind>.resume" (models.resume). Kinds written by earlier versions map to today's.
STYLIZER_KIND = "stylebeam.stylizer"
EMBEDDING_KIND = "stylebeam.embedding"
ARBITRARY_KIND = "stylebeam.arbitrary"  # a style predictor and an embedding-conditioned stylizer
LEGACY_KINDS = {"stylebeam.embedding/1": EMBEDDING_KIND}


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


def resolve_checkpoint(spec: str) -> str:
    """A checkpoint path or URL as given; a built-in name (``magenta26``) → its cached file, built on first use."""
    from models import builtin  # lazy: the built-ins' importers save through this module

    return builtin.checkpoint_path(spec) if builtin.is_builtin(spec) else spec


def load_tensors(path: str, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint (a path, URL or built-in name): ``(tensors, document, digest)``. Raises
    ``CheckpointError`` with the path when the file is missing, foreign, corrupt (its tensors no longer match
    the SHA-256 written with them) or, when ``kind`` is given, of another kind."""
    path = resolve_checkpoint(path)
    data = read_file(path, "checkpoint", missing=CheckpointError, unreadable=CheckpointError)
    try:
        tensors = load_safetensors_bytes(data)
        document = json.loads(read_safetensors_metadata(data)["stylebeam"])
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"not a stylebeam checkpoint: {path} ({type(exc).__name__}: {exc})") from None
    expected = document.get("tensors_sha256")  # absent in checkpoints written before it was added
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} is corrupt: its weights do not match the checksum written with them")
    document["kind"] = LEGACY_KINDS.get(document.get("kind"), document.get("kind"))
    if kind is not None and document["kind"] != kind:
        raise CheckpointError(f"{path} is a {document.get('kind')!r} checkpoint, not a {kind!r} one")
    return tensors, document, digest_of(data)


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


@dataclass
class StylizerInfo:
    config: StylizerConfig
    style_names: list[str]
    digest: str
    training: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # where imported weights came from (package, file digest, licence)

    def style_index(self, name: str) -> int:
        if name not in self.style_names:
            raise CheckpointError(f"unknown style {name!r}; this checkpoint has: {', '.join(self.style_names)}")
        return self.style_names.index(name)


def save_stylizer(
    path: str,
    model: MultiStyleTransformer,
    style_names: list[str],
    training: dict | None = None,
    source: dict | None = None,
) -> str:
    """Save a stylizer with its architecture, style names, training settings and source; return its digest."""
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
    if source:
        document["source"] = source
    return save_tensors(path, model.state_dict(), document)


def load_stylizer(path: str, device: str | torch.device = "cpu") -> tuple[MultiStyleTransformer, StylizerInfo]:
    """Load a stylizer (a path, URL or built-in name) in eval mode on ``device``."""
    tensors, document, digest = load_tensors(path, STYLIZER_KIND)
    check_finite(tensors, path)
    try:
        config = StylizerConfig(**document["config"])
        model = MultiStyleTransformer(config)
        model.load_state_dict(tensors)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({exc})") from None
    info = StylizerInfo(
        config, list(document["style_names"]), digest, document.get("training", {}), document.get("source", {})
    )
    return model.to(device).eval(), info


@dataclass
class ArbitraryInfo:
    config: StylizerConfig  # the transformer's
    digest: str
    training: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def save_arbitrary(
    path: str,
    predictor: StylePredictor,
    transformer: MultiStyleTransformer,
    source: dict | None = None,
    training: dict | None = None,
) -> str:
    """Save an arbitrary-style pair (Ghiasi et al.) as one checkpoint: the style predictor's tensors under
    ``predictor.``, the embedding-conditioned transformer's under ``transformer.``; return its digest."""
    if transformer.config.embedding_size != predictor.embedding_size:
        raise ValueError(
            f"the transformer takes {transformer.config.embedding_size}-d embeddings, "
            f"the predictor makes {predictor.embedding_size}-d ones"
        )
    tensors = {f"predictor.{name}": t for name, t in predictor.state_dict().items()}
    tensors |= {f"transformer.{name}": t for name, t in transformer.state_dict().items()}
    document = {"kind": ARBITRARY_KIND, "config": transformer.config.to_dict(), "training": training or {}}
    if source:
        document["source"] = source
    return save_tensors(path, tensors, document)


def load_arbitrary(
    spec: str, device: str | torch.device = "cpu"
) -> tuple[StylePredictor, MultiStyleTransformer, ArbitraryInfo]:
    """Load an arbitrary-style pair (a path, URL or built-in name such as ``magenta_arbitrary``) in eval mode."""
    tensors, document, digest = load_tensors(spec, ARBITRARY_KIND)
    check_finite(tensors, spec)
    parts = {"predictor.": {}, "transformer.": {}}
    for name, tensor in tensors.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"{spec}: unexpected tensor {name} in an arbitrary-style checkpoint")
        parts[prefix][name.removeprefix(prefix)] = tensor
    try:
        config = StylizerConfig(**document["config"])
        predictor, transformer = StylePredictor(), MultiStyleTransformer(config)
        predictor.load_state_dict(parts["predictor."])
        transformer.load_state_dict(parts["transformer."])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{spec}: weights do not fit the stored architecture ({exc})") from None
    info = ArbitraryInfo(config, digest, document.get("training", {}), document.get("source", {}))
    return predictor.to(device).eval(), transformer.to(device).eval(), info
