"""Stylizer checkpoints: save and load ``models.style.stylizer``'s networks through ``models.common.checkpoint``.

Two kinds: ``stylebeam.stylizer`` (one network of ``models.style.stylizer``'s family) and ``stylebeam.arbitrary``
(Ghiasi et al.'s pair: a style predictor and an embedding-conditioned transformer, in one file). This module
registers their architecture checks (the config builds a network whose tensors are exactly the file's;
``style_names`` one unique, printable, short name per style row), so every load refuses anything else in one
``CheckpointError`` line, and writers check the same rules. Loaders take a path or URL: a built-in name
(``magenta26``) is resolved above this module, by ``models.style.registry.resolve``.
"""

from dataclasses import dataclass, field

import torch

from models.common.checkpoint import (
    ARBITRARY_KIND,
    ARCHITECTURE_CHECKS,
    STYLIZER_KIND,
    check_finite,
    check_fits,
    config_from,
    json_type,
    load_tensors,
    save_tensors,
)
from models.common.errors import CheckpointError
from models.common.files import file_name_problem, shown
from models.style.predictor import StylePredictor
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

# Style names become file names (stylize), Parquet values and sheet labels: a short label, not a text.
MAX_STYLE_NAME_LENGTH = 100


def style_names_problem(names: object, num_styles: int) -> str | None:
    """What is wrong with ``names`` as the style names of a ``num_styles``-style network, or ``None``: they must
    be a list of ``num_styles`` unique strings of at most ``MAX_STYLE_NAME_LENGTH`` characters, each usable as
    part of a file name (``models.common.files.file_name_problem``: no separators, control characters or
    leading dot)."""
    if not isinstance(names, list):
        return f"style_names is {json_type(names)}, not a list"
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


def _check_stylizer(document: dict, tensors: dict[str, torch.Tensor], path: str) -> None:
    """The stylizer's config builds a network whose tensors are exactly the file's; one style name per row."""
    config = config_from(StylizerConfig, document["config"], path)
    if config.num_styles <= 0:
        raise CheckpointError(f"{path}: a stylizer checkpoint needs style rows (config num_styles > 0)")
    check_fits(lambda: MultiStyleTransformer(config), tensors, path)
    problem = style_names_problem(document["style_names"], config.num_styles)
    if problem:
        raise CheckpointError(f"{path}: {problem}")


def _check_arbitrary(document: dict, tensors: dict[str, torch.Tensor], path: str) -> None:
    """The predictor and the transformer each hold exactly their network's tensors."""
    config = config_from(StylizerConfig, document["config"], path)
    parts = arbitrary_parts(tensors, path)
    check_fits(StylePredictor, parts["predictor."], path, "predictor.")
    check_fits(lambda: MultiStyleTransformer(config), parts["transformer."], path, "transformer.")


ARCHITECTURE_CHECKS[STYLIZER_KIND] = _check_stylizer
ARCHITECTURE_CHECKS[ARBITRARY_KIND] = _check_arbitrary


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
