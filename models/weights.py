"""Weights that are not stylebeam checkpoints: a state_dict file, or torchvision's ImageNet file in the torch hub cache.

A state_dict file is safetensors (by its ``.safetensors`` suffix) or a ``torch.save``d dict of tensors, local or any
fsspec URL. Torch files load with ``weights_only=True``: a file that needs code to load (a pickled module) is refused,
never run. Stylebeam's own checkpoints are ``models.checkpoint``'s business.
"""

import io
import os

import torch

from models.errors import CheckpointError, InputNotFoundError, WeightsUnavailableError
from models.files import read_file


def hub_cache_file(filename: str, description: str, instead: str) -> str:
    """Path of ``filename`` in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); never downloads.

    ``WeightsUnavailableError`` says where it looked and, in ``instead``, what the user can pass in its place.
    """
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"{description} weights are not available offline (looked for {path}); {instead}")
    return path


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` state_dict from ``path`` (a ``{"state_dict": {...}}`` wrapper is unwrapped).

    Raises ``InputNotFoundError`` when there is no such file and ``CheckpointError`` naming the file otherwise.
    """
    data = read_file(path, "weights file", missing=InputNotFoundError, unreadable=CheckpointError)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled modules, foreign formats and truncated files raise many types
        raise CheckpointError(
            f"cannot read {path} as a state_dict ({type(exc).__name__}); expected safetensors or a file saved "
            "with torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(value) for value in state.values()):
        raise CheckpointError(f"{path} does not hold a plain state_dict of tensors (found {type(state).__name__})")
    return state
