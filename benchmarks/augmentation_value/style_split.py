"""Held-out styles: a multi-style checkpoint split into two checkpoints, one with the training styles and one with the
held-out styles, so that the augment job (``--stylizer PATH``) stylises training images with the first and test
images with the second. A style of Dumoulin et al.'s network is one row of each conditional instance norm's scale
and shift tables; a split keeps the rows of its styles and every shared weight, so a style renders the same in
either checkpoint as in the whole one."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.style.checkpoint import load_stylizer, save_stylizer
from models.style.registry import resolve
from models.style.stylizer import MultiStyleTransformer

HELD_OUT_SHARE = 6 / 26  # train on 20 of the 26 Magenta styles, test on images stylised with the other 6


@dataclass(frozen=True)
class StyleSplit:
    train: str  # checkpoint paths
    held_out: str
    train_styles: tuple[str, ...]
    held_out_styles: tuple[str, ...]


def subset(model: MultiStyleTransformer, indices: list[int]) -> MultiStyleTransformer:
    """A copy of ``model`` with only the styles ``indices`` (in that order)."""
    from dataclasses import replace

    rows = {
        f"{name}.{param}" for name, m in model.named_modules() if m in model.norms() for param in ("weight", "bias")
    }
    smaller = MultiStyleTransformer(replace(model.config, num_styles=len(indices)))
    state = {
        name: tensor[torch.as_tensor(indices)] if name in rows else tensor
        for name, tensor in model.state_dict().items()
    }
    smaller.load_state_dict(state)
    return smaller.eval()


def split_styles(stylizer: str, folder: Path, seed: int = 0) -> StyleSplit:
    """Hold out ``round(HELD_OUT_SHARE × styles)`` styles (at least 1, leaving at least 1), drawn from ``seed``."""
    model, info = load_stylizer(resolve(stylizer))
    count = model.num_styles
    if count < 2:
        raise ValueError(f"{stylizer} has {count} style: held-out styles need at least 2")
    held = min(count - 1, max(1, round(HELD_OUT_SHARE * count)))
    order = np.random.default_rng([seed, 26]).permutation(count)
    held_out, train = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, indices in (("train", train), ("held_out", held_out)):
        path = folder / f"{name}-styles.safetensors"
        names = [info.style_names[i] for i in indices]
        save_stylizer(str(path), subset(model, indices), names, training=info.training, source=info.source)
        paths[name] = str(path)
    return StyleSplit(
        paths["train"],
        paths["held_out"],
        tuple(info.style_names[i] for i in train),
        tuple(info.style_names[i] for i in held_out),
    )
