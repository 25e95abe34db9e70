"""Checkpoint I/O: one safetensors file that loads without executing code.

A checkpoint is tensors plus a JSON document in the safetensors header (``__metadata__["stylebeam"]``):
its ``kind``, architecture ``config``, ``style_names``, ``training`` settings and ``source`` (where imported
weights came from), and the SHA-256 of the tensors' bytes, checked on every load: a flipped bit in the weights is
a ``CheckpointError``, never a silently different model. The digest of a checkpoint is the SHA-256 of its
bytes, so the ``stylizer`` column of augmented rows names exactly the weights used. Paths may be local or any
fsspec URL (``gs://…``); wherever a path is accepted, so is a built-in name (``magenta26``, ``models.style.registry``).

Two kinds: ``stylebeam.stylizer`` (one network of ``models.style.stylizer``'s family) and ``stylebeam.arbitrary``
(Ghiasi et al.'s pair: a style predictor and an embedding-conditioned transformer, in one file).

Nothing a file says is trusted: ``validate_document`` checks every document on load (a JSON object; required keys
with their types; config keys the architecture knows, with the right types, describing exactly the tensors in the
file; ``style_names`` one unique, printable, short name per style row) and refuses anything else in one
``CheckpointError`` line. Every loader goes through it (``load_tensors``), and writers check the same rules.
"""

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from models.common.errors import CheckpointError, StylebeamError
from models.common.files import file_name_problem, read_file, shown, write_atomically
from models.style.predictor import StylePredictor
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

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
# Style names become file names (stylize), Parquet values and sheet labels: a short label, not a text.
MAX_STYLE_NAME_LENGTH = 100


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
    from models.style import registry as builtin  # lazy: the built-ins' importers save through this module

    return builtin.checkpoint_path(spec) if builtin.is_builtin(spec) else spec


def load_tensors(path: str, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint (a path, URL or built-in name): ``(tensors, document, digest)``. Raises
    ``CheckpointError`` with the path when the file is missing, foreign, corrupt (its tensors no longer match
    the SHA-256 written with them), of another kind than ``kind``, or its document fails ``validate_document``."""
    path = resolve_checkpoint(path)
    data = read_file(path, "checkpoint", missing=CheckpointError, unreadable=CheckpointError)
    try:
        tensors = load_safetensors_bytes(data)
        document = json.loads(read_safetensors_metadata(data)["stylebeam"])
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"not a stylebeam checkpoint: {path} ({type(exc).__name__}: {detail})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: its stylebeam document is {_json_type(document)}, not an object")
    expected = document.get("tensors_sha256")  # absent in checkpoints written before it was added
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path} is corrupt: its weights do not match the checksum written with them")
    validate_document(document, tensors, path, kind)
    return tensors, document, digest_of(data)


def validate_document(document: object, tensors: dict[str, torch.Tensor], path: str, kind: str | None = None) -> dict:
    """Check a checkpoint's document against its tensors; return it with a legacy ``kind`` renamed. One
    ``CheckpointError`` line says what is wrong: a document that is not an object, a kind other than ``kind`` (or,
    when ``kind`` is ``None``, one stylebeam does not read), a missing key or one of the wrong type, and for the
    kinds defined here a config the architecture refuses or that does not describe the tensors, and style names
    that are not one unique, printable, short name per style row (``style_names_problem``)."""
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: its stylebeam document is {_json_type(document)}, not an object")
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
            raise CheckpointError(f"{path}: {key} is {_json_type(document[key])}, not {_json_type(expected())}")
    for key in OPTIONAL_OBJECTS:
        if key in document and not isinstance(document[key], dict):
            raise CheckpointError(f"{path}: {key} is {_json_type(document[key])}, not an object")
    if found == STYLIZER_KIND:
        config = config_from(StylizerConfig, document["config"], path)
        if config.num_styles <= 0:
            raise CheckpointError(f"{path}: a stylizer checkpoint needs style rows (config num_styles > 0)")
        check_fits(lambda: MultiStyleTransformer(config), tensors, path)
        problem = style_names_problem(document["style_names"], config.num_styles)
        if problem:
            raise CheckpointError(f"{path}: {problem}")
    elif found == ARBITRARY_KIND:
        config = config_from(StylizerConfig, document["config"], path)
        parts = arbitrary_parts(tensors, path)
        check_fits(StylePredictor, parts["predictor."], path, "predictor.")
        check_fits(lambda: MultiStyleTransformer(config), parts["transformer."], path, "transformer.")
    return document


def style_names_problem(names: object, num_styles: int) -> str | None:
    """What is wrong with ``names`` as the style names of a ``num_styles``-style network, or ``None``: they must
    be a list of ``num_styles`` unique strings of at most ``MAX_STYLE_NAME_LENGTH`` characters, each usable as
    part of a file name (``models.common.files.file_name_problem``: no separators, control characters or
    leading dot)."""
    if not isinstance(names, list):
        return f"style_names is {_json_type(names)}, not a list"
    if len(names) != num_styles:
        return f"{len(names)} style names for a {num_styles}-style network"
    for name in names:
        problem = file_name_problem(name, MAX_STYLE_NAME_LENGTH)
        if problem:
            return f"style name {shown(name)} cannot be used: {problem}"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return f"style names must be unique: {', '.join(shown(name) for name in duplicates[:3])} appear more than once"
    return None


def config_from(cls: type, mapping: object, path: str, what: str = "config"):
    """``cls(**mapping)`` for the dataclass config a checkpoint stores; an unknown key, a value of the wrong JSON
    type or one the class refuses is one ``CheckpointError`` line naming it."""
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{path}: {what} is {_json_type(mapping)}, not an object")
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


def _load_state(network: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str) -> None:
    try:
        network.load_state_dict(tensors)
    except RuntimeError as exc:  # shapes were checked; a dtype that cannot be copied into a parameter is left
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({exc})") from None


def arbitrary_parts(tensors: dict[str, torch.Tensor], path: str) -> dict[str, dict[str, torch.Tensor]]:
    """An arbitrary-style checkpoint's tensors split into ``{"predictor.": …, "transformer.": …}``."""
    parts = {"predictor.": {}, "transformer.": {}}
    for name, tensor in tensors.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"{path}: unexpected tensor {shown(name)} in an arbitrary-style checkpoint")
        parts[prefix][name.removeprefix(prefix)] = tensor
    return parts


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


def _json_type(value: object) -> str:
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
    problem = style_names_problem(list(style_names), model.num_styles)  # what a loader would refuse
    if problem:
        raise ValueError(problem)
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
    tensors, document, digest = load_tensors(path, STYLIZER_KIND)  # validated: the config fits the tensors
    check_finite(tensors, path)
    config = config_from(StylizerConfig, document["config"], path)
    model = MultiStyleTransformer(config)
    _load_state(model, tensors, path)
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
    tensors, document, digest = load_tensors(spec, ARBITRARY_KIND)  # validated: the config fits the tensors
    check_finite(tensors, spec)
    parts = arbitrary_parts(tensors, spec)
    config = config_from(StylizerConfig, document["config"], spec)
    predictor, transformer = StylePredictor(), MultiStyleTransformer(config)
    _load_state(predictor, parts["predictor."], spec)
    _load_state(transformer, parts["transformer."], spec)
    info = ArbitraryInfo(config, digest, document.get("training", {}), document.get("source", {}))
    return predictor.to(device).eval(), transformer.to(device).eval(), info
