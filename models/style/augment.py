"""Online style augmentation: a torch transform that restyles training batches on the fly.

The offline path, ``pipelines.augment`` (Beam → Parquet), stylises a dataset once, at scale. This one draws
fresh styles every epoch inside a training loop, as style-augmentation's ``StyleAugmentor`` does (Jackson et
al. 2019, "Style augmentation: data augmentation via style randomization"), with our stylizers and the job's
own policies (``models.style.policy``), one draw per sample per epoch::

    augment = StyleAugment.from_checkpoint("magenta26", policy="mix", alpha=(0.5, 1.0), probability=0.5)
    augment = StyleAugment.from_paintings(paintings, policy="randomize")  # {id: (H, W, 3) uint8}: Jackson et al.
    for epoch in range(epochs):
        for images, labels, keys in loader:  # images (B, 3, H, W) float in [0, 1]; keys (B,) sample ids
            images = augment(images, keys, epoch)

Each sample's draw (restyle or not, which style, mixture, painting or sampled embedding, how strongly) comes from
``record_seed(seed, f"{key}@{epoch}")``, the job's per-record seed: the same sample in the same epoch gets the
same draw whatever its batch, and a new one the next epoch. The stylizer runs as the job runs it
(``models.style.runner.StylizerRunner``, the same ``precision`` rule), in forward passes of a fixed size, so a sample's
pixels do not depend on its batch-mates either.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.common.device import resolve_device
from models.common.errors import UsageError
from models.common.pixels import float_to_uint8
from models.style.checkpoint import load_arbitrary, load_stylizer
from models.style.policy import (
    PaintingSet,
    StylePlan,
    StylePolicy,
    plan_outputs,
    plan_painting_outputs,
    record_seed,
    style_conditioning,
)
from models.style.registry import resolve
from models.style.runner import StyleEmbedder, StylizerRunner, resolve_precision
from models.style.stylizer import SIZE_MULTIPLE, MultiStyleTransformer

POLICIES = ("random", "mix", "randomize")
# Images per forward pass on CUDA (padded): a training batch's restyled share, in a few fixed-shape passes.
CUDA_FORWARD_BATCH = 32


@dataclass(frozen=True)
class StyleDraw:
    """One sample's draw for one epoch: whether it is restyled, and how (the job's ``StylePlan``)."""

    restyle: bool
    plan: StylePlan


class StyleAugment(nn.Module):
    """Restyle each sample with probability ``probability``, drawing its style as ``--styles {policy}:1`` would:

    - a checkpoint's N styles: ``random`` (one style) or ``mix`` (a Dirichlet(1) mixture of all of them), blended
      with the original pixels by ``alpha``;
    - a painting collection (``from_paintings``, Ghiasi et al.'s arbitrary network): ``random`` (one painting:
      Stylized-ImageNet), ``mix`` (a mixture of a few) or ``randomize`` (an embedding sampled from the Gaussian
      fitted on the paintings: Jackson et al.), with ``alpha`` acting in embedding space toward the image's own.

    ``alpha`` is a float or a ``(lo, hi)`` range drawn per sample. ``probability = R / (1 + R)`` matches an offline
    augmented:original ratio ``R``: the same share of stylised images in training. ``size``: stylise at this short
    side and scale back (antialiased bilinear): a style network's strokes have a fixed size in pixels, so the scale
    it runs at decides what it keeps (at 64 px Magenta's styles swallow small objects, at 256 px they keep even an
    object's stripes; Jackson et al.'s ``downsamples`` is the same knob). ``precision``: as the job's
    ``--precision`` (``auto``: bf16 where the hardware has it natively, else fp32 on CPU). ``forward_batch``: images
    per forward pass (default: 1 on CPU, where the network is bound by cache, not arithmetic; 32 on CUDA), padded.
    The networks are frozen, in eval mode, on the stylizer's device.
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
        style_names: list[str] | None = None,
        paintings: PaintingSet | None = None,
        predictor: nn.Module | None = None,
        precision: str = "auto",
    ):
        super().__init__()
        if policy not in POLICIES:
            raise UsageError(f"unknown online style policy {policy!r}; use one of {', '.join(POLICIES)}")
        low, high = (alpha, alpha) if isinstance(alpha, (int, float)) else alpha
        if not 0 <= low <= high <= 1:
            raise UsageError(f"alpha must be A or (LO, HI) with 0 <= LO <= HI <= 1, got {alpha!r}")
        if not 0 <= probability <= 1:
            raise UsageError(f"probability must be in [0, 1], got {probability}")
        if size is not None and size < SIZE_MULTIPLE:
            raise UsageError(f"size must be at least {SIZE_MULTIPLE} px, got {size}")
        arbitrary = stylizer.config.embedding_size > 0
        if arbitrary != (paintings is not None):
            raise UsageError("an arbitrary-style network needs paintings (StyleAugment.from_paintings), and only it")
        self.policy = StylePolicy(policy, 1)
        self.policy.check(len(paintings) if arbitrary else stylizer.num_styles, paintings=arbitrary)
        if arbitrary and low < 1 and predictor is None:  # alpha < 1 blends toward each image's own embedding
            raise UsageError("alpha < 1 on paintings needs the style predictor (from_paintings loads it)")
        self.stylizer = stylizer.eval().requires_grad_(False)
        self.style_names = list(style_names or [f"style_{i}" for i in range(stylizer.config.code_size)])
        self.paintings = paintings
        device = next(stylizer.parameters()).device
        self.runner = StylizerRunner(
            stylizer,
            device,
            precision,
            batch_size=CUDA_FORWARD_BATCH,
            forward_batch=forward_batch,
            predictor=predictor if arbitrary and low < 1 else None,
        )
        self.alpha_range = (float(low), float(high))
        self.probability = float(probability)
        self.seed = int(seed)
        self.size = size

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu", **kwargs) -> "StyleAugment":
        """An N-style stylizer: a built-in name (``magenta26``) or a checkpoint path/URL."""
        stylizer, info = load_stylizer(resolve(checkpoint), device=device)
        return cls(stylizer, style_names=info.style_names, **kwargs)

    @classmethod
    def from_paintings(
        cls,
        paintings: Mapping[str, np.ndarray],
        checkpoint: str = "magenta_arbitrary",
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> "StyleAugment":
        """Arbitrary styles from a painting collection ``{painting id: (H, W, 3) uint8}``: each painting's embedding
        is computed once, here, and the Gaussian of ``randomize`` fitted on them."""
        predictor, transformer, _ = load_arbitrary(resolve(checkpoint), device=device)
        device = resolve_device(device) if isinstance(device, str) else device
        embedder = StyleEmbedder(predictor, device, resolve_precision(kwargs.get("precision", "auto"), device))
        ids = sorted(paintings)
        embeddings = embedder([np.ascontiguousarray(paintings[i], np.uint8) for i in ids])
        collection = PaintingSet.fit(list(zip(ids, embeddings, strict=True)))
        return cls(transformer, paintings=collection, predictor=predictor, **kwargs)

    def draw(self, key: int, epoch: int = 0) -> StyleDraw:
        """The draw of sample ``key`` in ``epoch``."""
        seed = record_seed(self.seed, f"{int(key)}@{int(epoch)}")
        restyle = bool(np.random.default_rng([seed, 1]).random() < self.probability)
        if self.paintings is None:
            (plan,) = plan_outputs(self.policy, self.alpha_range, self.style_names, seed)
        else:
            (plan,) = plan_painting_outputs(self.policy, self.alpha_range, self.paintings, seed)
        return StyleDraw(restyle, plan)

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
        subset = images.detach()[chosen]
        # On paintings with alpha < 1 the predictor embeds each drawn image (as uint8, as the job does).
        conditioning = style_conditioning(
            [draws[i].plan for i in chosen],
            lambda i: float_to_uint8(subset[i]).cpu().numpy(),
            self.runner.embed if self.runner.embedder else None,
        )
        restyled = self._restyle(subset, conditioning.codes, conditioning.alphas)
        out[chosen] = restyled.to(out.device, out.dtype)
        return out

    def _restyle(self, images: torch.Tensor, codes: np.ndarray, alphas: np.ndarray) -> torch.Tensor:
        height, width = images.shape[-2:]
        if not self.size or min(height, width) == self.size:
            return self.runner.stylize(images, codes, alphas)
        scale = self.size / min(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = F.interpolate(images, size=shape, mode="bilinear", antialias=True).clamp_(0, 1)
        restyled = self.runner.stylize(resized, codes, alphas)
        return F.interpolate(restyled, size=(height, width), mode="bilinear", antialias=True).clamp_(0, 1)

    def extra_repr(self) -> str:
        source = f"paintings={len(self.paintings)}" if self.paintings is not None else f"styles={len(self.style_names)}"
        return (
            f"policy={self.policy.mode}, {source}, alpha={self.alpha_range}, probability={self.probability}, "
            f"seed={self.seed}, size={self.size}"
        )
