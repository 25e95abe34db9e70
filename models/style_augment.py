"""Online style augmentation: a torch transform that restyles training batches on the fly.

The offline path, ``pipelines.augment`` (Beam → Parquet), stylises a dataset once, at scale. This one draws
fresh styles every epoch inside a training loop, as style-augmentation's ``StyleAugmentor`` does (Jackson et
al. 2019, "Style augmentation: data augmentation via style randomization"), but with our stylizers, the
policies of ``--styles`` and per-sample seeds::

    augment = StyleAugment.from_checkpoint("magenta26", policy="mix", alpha=(0.5, 1.0), probability=0.5)
    for epoch in range(epochs):
        for images, labels, keys in loader:  # images (B, 3, H, W) float in [0, 1]; keys (B,) sample ids
            images = augment(images, keys, epoch)

Each sample's draw (restyle or not, which style or mixture, how strongly) comes from a generator seeded with
``(seed, key, epoch)``: the same sample in the same epoch gets the same draw whatever its batch, and a new one
the next epoch. On CPU, where images are stylised one at a time, a sample's pixels do not depend on its
batch-mates either; on CUDA (whole batches) they can differ by a rounding (kernels are chosen by batch shape).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_stylizer
from models.errors import UsageError
from models.stylizer import SIZE_MULTIPLE, MultiStyleTransformer

POLICIES = ("random", "mix")


@dataclass(frozen=True)
class StyleDraw:
    """One sample's draw for one epoch."""

    restyle: bool
    style_weights: np.ndarray  # (num_styles,) float32, sums to 1
    alpha: float  # 1 = fully stylised


class StyleAugment(nn.Module):
    """Restyle each sample with probability ``probability``: one random style (``policy="random"``, as
    ``--styles random:1``) or a random convex mixture of all of them (``"mix"``: Dirichlet(1), as ``mix:1``),
    blended with the original by ``alpha`` drawn uniformly from ``alpha = (lo, hi)`` (or fixed: a float).

    On CPU the stylizer runs one image at a time (``forward_batch``; on CUDA the whole batch): it is bound by
    cache, not arithmetic, and one at a time was ~2x faster (``models.inference``); each sample's pixels then
    do not depend on its batch-mates either.

    ``probability = R / (1 + R)`` matches an offline augmented:original ratio ``R``: the same share of
    stylised images in training. ``size``: stylise at this short side and scale back (antialiased bilinear).
    A style network's strokes have a fixed size in pixels, so the scale it runs at decides what it keeps: at
    64 px Magenta's styles swallow small objects, at 256 px they keep even an object's stripes (Jackson et
    al.'s ``downsamples`` argument is the same knob). The stylizer is frozen, in eval mode, on its own device.
    """

    def __init__(
        self,
        stylizer: MultiStyleTransformer,
        policy: str = "random",
        alpha: float | tuple[float, float] = 1.0,
        probability: float = 0.5,
        seed: int = 0,
        size: int | None = None,
        forward_batch: int | None = None,
    ):
        super().__init__()
        if policy not in POLICIES:
            raise UsageError(f"unknown online style policy {policy!r}; use one of {', '.join(POLICIES)}")
        low, high = (alpha, alpha) if isinstance(alpha, (int, float)) else alpha
        if not 0 <= low <= high <= 1:
            raise UsageError(f"alpha must be A or (LO, HI) with 0 <= LO <= HI <= 1, got {alpha!r}")
        if not 0 <= probability <= 1:
            raise UsageError(f"probability must be in [0, 1], got {probability}")
        if policy == "mix" and stylizer.num_styles < 2:
            raise UsageError("policy 'mix' needs a stylizer with at least 2 styles")
        self.stylizer = stylizer.eval().requires_grad_(False)
        self.policy = policy
        self.alpha_range = (float(low), float(high))
        self.probability = float(probability)
        self.seed = int(seed)
        if size is not None and size < SIZE_MULTIPLE:
            raise UsageError(f"size must be at least {SIZE_MULTIPLE} px, got {size}")
        self.size = size
        self.forward_batch = forward_batch

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu", **kwargs) -> "StyleAugment":
        """A built-in stylizer's name or a checkpoint path/URL, loaded with ``models.checkpoint.load_stylizer``."""
        stylizer, _ = load_stylizer(checkpoint, device=device)
        return cls(stylizer, **kwargs)

    @property
    def num_styles(self) -> int:
        return self.stylizer.num_styles

    def draw(self, key: int, epoch: int = 0) -> StyleDraw:
        """The draw of sample ``key`` (a non-negative int) in ``epoch``."""
        rng = np.random.default_rng([self.seed, int(key), int(epoch)])
        restyle = bool(rng.random() < self.probability)
        if self.policy == "random":
            weights = np.zeros(self.num_styles, np.float32)
            weights[rng.integers(self.num_styles)] = 1.0
        else:
            weights = rng.dirichlet(np.ones(self.num_styles)).astype(np.float32)
            weights /= weights.sum()
        low, high = self.alpha_range
        alpha = float(np.float32(rng.uniform(low, high))) if high > low else low
        return StyleDraw(restyle, weights, alpha)

    def forward(self, images: torch.Tensor, keys, epoch: int = 0) -> torch.Tensor:
        """``images`` ``(B, 3, H, W)`` float in [0, 1], ``keys`` ``(B,)`` ints → ``(B, 3, H, W)``, the drawn samples
        restyled, the others unchanged (a new tensor; ``images`` is not modified)."""
        keys = torch.as_tensor(keys).reshape(-1).tolist()
        if len(keys) != images.shape[0]:
            raise ValueError(f"{len(keys)} keys for {images.shape[0]} images")
        draws = [self.draw(key, epoch) for key in keys]
        chosen = [i for i, d in enumerate(draws) if d.restyle]
        out = images.detach().clone()
        if not chosen:
            return out
        parameter = next(self.stylizer.parameters())
        subset = images.detach()[chosen].to(parameter.device, parameter.dtype)
        weights = torch.from_numpy(np.stack([draws[i].style_weights for i in chosen])).to(parameter.device)
        alphas = torch.tensor([draws[i].alpha for i in chosen], device=parameter.device)
        step = self.forward_batch or (1 if parameter.device.type == "cpu" else len(chosen))
        restyled = torch.cat(
            [
                self._restyle(subset[i : i + step], weights[i : i + step], alphas[i : i + step])
                for i in range(0, len(chosen), step)
            ]
        )
        out[chosen] = restyled.to(out.device, out.dtype)
        return out

    def _restyle(self, images: torch.Tensor, weights: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if not self.size or min(height, width) == self.size:
            return self.stylizer.stylize(images, weights, alphas)
        scale = self.size / min(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = F.interpolate(images, size=shape, mode="bilinear", antialias=True).clamp_(0, 1)
        restyled = self.stylizer.stylize(resized, weights, alphas)
        return F.interpolate(restyled, size=(height, width), mode="bilinear", antialias=True).clamp_(0, 1)

    def extra_repr(self) -> str:
        return (
            f"policy={self.policy}, styles={self.num_styles}, alpha={self.alpha_range}, "
            f"probability={self.probability}, seed={self.seed}, size={self.size}"
        )
