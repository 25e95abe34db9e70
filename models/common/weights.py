"""Weights that are not stylebeam checkpoints: a state_dict file, or torchvision's ImageNet weights.

ImageNet weights come the way torchvision users expect: from the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
downloaded there on first use with torch.hub's progress bar and the SHA-256 prefix in the file name checked. Offline,
one error line says which file, where to put it, and what to pass instead.

A state_dict file is safetensors (by its ``.safetensors`` suffix) or a ``torch.save``d dict of tensors, local or any
fsspec URL. Torch files load with ``weights_only=True``: a file that needs code to load (a pickled module) is refused,
never run. Stylebeam's own checkpoints are ``models.style.checkpoint``'s business.
"""

import io
import os
import socket

import torch

from models.common.errors import CheckpointError, InputNotFoundError, WeightsUnavailableError
from models.common.files import read_file


def imagenet_file(url: str, description: str, instead: str) -> str:
    """Path of torchvision's weights file at ``url`` in the torch hub cache, downloaded there when missing.

    ``WeightsUnavailableError`` (one line) when it is neither cached nor downloadable: where it looked, the URL,
    why the download failed, and in ``instead`` what the user can pass in its place.
    """
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if os.path.isfile(path):
        return path
    try:
        fetch(url, path)
    except Exception as exc:  # URLError, HTTPError, timeouts, a hash mismatch, a read-only cache dir
        reason = getattr(exc, "reason", None) or exc
        raise WeightsUnavailableError(
            f"{description} weights are not in the torch hub cache ({path}) and could not be downloaded from {url} "
            f"({type(exc).__name__}: {reason}); put the file there, or {instead}"
        ) from None
    return path


def fetch(url: str, path: str, timeout_s: float = 60.0) -> None:
    """Download ``url`` to ``path`` as ``torch.hub`` does (progress bar on stderr, written beside and moved into
    place, the hash prefix of torchvision's file names checked); a stalled connection fails after ``timeout_s``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    match = torch.hub.HASH_REGEX.search(os.path.basename(url))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # torch.hub's urlopen has no timeout of its own
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=match.group(1) if match else None, progress=True)
    finally:
        socket.setdefaulttimeout(previous)


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
