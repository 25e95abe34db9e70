"""Device selection shared by every entry point."""

import torch

from models.common.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU. ``cuda`` without a GPU is a usage error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible to torch")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"unknown --device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a CPU generator with the same seed for explicit draws."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
