"""Online style augmentation: a torch transform that restyles training batches on the fly.

The offline path, ``pipelines.augment`` (Beam → Parquet), stylises a dataset once, at scale. This one draws
fresh styles every epoch inside a training loop, as style-augmentation's ``StyleAugmentor`` does (Jackson et
al. 2019, "Style augmentation: data augmentation via style randomization"), with our stylizers and the job's
own policies (``models.style_policy``), one draw per sample per epoch::

    augment = StyleAugment.from_checkpoint("magenta26", policy="mix", alpha=(0.5, 1.0), probability=0.5)
    augment = StyleAugment.from_paintings(paintings, policy="randomize")  # {id: (H, W, 3) uint8}: Jackson et al.
    for epoch in range(epochs):
        for images, labels, keys in loader:  # images (B, 3, H, W) float in [0, 1]; keys (B,) sample ids
            images = augment(images, keys, epoch)

Each sample's draw (restyle or not, which style, mixture, painting or sampled embedding, how strongly) comes from
``record_seed(seed, f"{key}@{epoch}")``, the job's per-record seed: the same sample in the same epoch gets the
same draw whatever its batch, and a new one the next epoch. On CPU, where images are stylised one at a time, a
sample's pixels do not depend on its batch-mates either; on CUDA (whole batches) they can differ by a rounding
(kernels are chosen by batch shape).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_arbitrary, load_stylizer
from models.errors import UsageError
from models.inference import StyleEmbedder
from models.style_policy import (
    PaintingSet,
    StylePlan,
    StylePolicy,
    blend_code,
    plan_outputs,
    plan_painting_outputs,
    record_seed,
)
from models.stylizer import SIZE_MULTIPLE, MultiStyleTransformer

POLICIES = ("random", "mix", "randomize")


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
    object's stripes; Jackson et al.'s ``downsamples`` is the same knob). On CPU the stylizer runs one image at a
    time (``forward_batch``; on CUDA the whole batch): it is bound by cache, not arithmetic (``models.inference``).
    The networks are frozen, in eval mode, on their own device.
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
        self.stylizer = stylizer.eval().requires_grad_(False)
        self.style_names = list(style_names or [f"style_{i}" for i in range(stylizer.config.code_size)])
        self.paintings = paintings
        self.embedder = None
        if arbitrary and low < 1:  # alpha < 1 blends toward each image's own embedding
            if predictor is None:
                raise UsageError("alpha < 1 on paintings needs the style predictor (from_paintings loads it)")
            self.embedder = StyleEmbedder(predictor, next(stylizer.parameters()).device)
        self.alpha_range = (float(low), float(high))
        self.probability = float(probability)
        self.seed = int(seed)
        self.size = size
        self.forward_batch = forward_batch

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu", **kwargs) -> "StyleAugment":
        """An N-style stylizer: a built-in name (``magenta26``) or a checkpoint path/URL."""
        stylizer, info = load_stylizer(checkpoint, device=device)
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
        predictor, transformer, _ = load_arbitrary(checkpoint, device=device)
        embedder = StyleEmbedder(predictor, torch.device(device))
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
        parameter = next(self.stylizer.parameters())
        subset = images.detach()[chosen].to(parameter.device, parameter.dtype)
        plans = [draws[i].plan for i in chosen]
        codes, alphas = self._codes(subset, plans)
        step = self.forward_batch or (1 if parameter.device.type == "cpu" else len(chosen))
        restyled = [
            self._restyle(subset[i : i + step], codes[i : i + step], alphas[i : i + step])
            for i in range(0, len(chosen), step)
        ]
        out[chosen] = torch.cat(restyled).to(out.device, out.dtype)
        return out

    def _codes(self, images: torch.Tensor, plans: list[StylePlan]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's conditioning vector and pixel alpha. On paintings alpha acts in embedding space, as in the
        job (``models.style_policy.blend_code``), and the pixels are not blended."""
        codes = [plan.code for plan in plans]
        alphas = [plan.alpha for plan in plans]
        if self.paintings is not None:
            blend = [i for i, plan in enumerate(plans) if plan.alpha < 1]
            if blend:
                pixels = images[blend].mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
                own = self.embedder(list(pixels.numpy()))
                for j, i in enumerate(blend):
                    codes[i] = blend_code(codes[i], own[j], plans[i].alpha)
            alphas = [1.0] * len(plans)
        device = images.device
        return torch.from_numpy(np.stack(codes)).to(device), torch.tensor(alphas, device=device)

    def _restyle(self, images: torch.Tensor, codes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if not self.size or min(height, width) == self.size:
            return self.stylizer.stylize(images, codes, alphas)
        scale = self.size / min(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = F.interpolate(images, size=shape, mode="bilinear", antialias=True).clamp_(0, 1)
        restyled = self.stylizer.stylize(resized, codes, alphas)
        return F.interpolate(restyled, size=(height, width), mode="bilinear", antialias=True).clamp_(0, 1)

    def extra_repr(self) -> str:
        source = f"paintings={len(self.paintings)}" if self.paintings is not None else f"styles={len(self.style_names)}"
        return (
            f"policy={self.policy.mode}, {source}, alpha={self.alpha_range}, probability={self.probability}, "
            f"seed={self.seed}, size={self.size}"
        )
