"""Online style augmentation: a torchvision v2 transform that restyles training images on the fly.

The offline path, ``pipelines.augment`` (Beam → Parquet), stylises a dataset once, at scale. This one draws
fresh styles every epoch inside a training loop, as style-augmentation's ``StyleAugmentor`` does (Jackson et
al. 2019, "Style augmentation: data augmentation via style randomization"), with our stylizers and the job's
own policies (``models.style.policy``)::

    augment = StyleAugment.from_checkpoint("magenta26", policy="mix", alpha=(0.5, 1.0), probability=0.5)
    augment = StyleAugment.from_paintings(paintings, policy="randomize")  # {id: (H, W, 3) uint8}: Jackson et al.
    # as any v2 transform: a PIL image, a (3, H, W) or (B, 3, H, W) tensor, uint8 or float, a tv_tensors.Image
    transform = v2.Compose([v2.RandomHorizontalFlip(), augment, v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    # or per batch, keyed: the same sample in the same epoch gets the same draw, whatever its batch or worker
    for images, labels, keys in loader:
        images = augment(images, keys=keys, epoch=epoch)

Without keys, each sample's draw comes from the transform's own generator, seeded by ``seed`` (and, in a DataLoader
worker, by the worker's seed, so workers do not repeat each other's draws). With keys, a sample's draw (restyle or
not, which style, mixture, painting or sampled embedding, how strongly) comes from
``record_seed(seed, f"{key}@{epoch}")``, the job's per-record seed. The stylizer runs as the job runs it
(``models.style.runner.StylizerRunner``, the same ``precision`` rule), in forward passes of a fixed size, so a
sample's pixels do not depend on its batch-mates either; a uint8 image comes back as the job's pixels for it.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import is_pure_tensor

from models.common.device import resolve_device
from models.common.errors import UsageError
from models.common.pixels import float_to_uint8, uint8_to_float
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
FLOAT_TOLERANCE = 1e-3  # float images a resize or a blur left a hair outside [0, 1] are still [0, 1] images


@dataclass(frozen=True)
class StyleDraw:
    """One sample's draw for one epoch: whether it is restyled, and how (the job's ``StylePlan``)."""

    restyle: bool
    plan: StylePlan


def _samples(image: Any) -> int:
    """How many images ``image`` holds, checking its shape: a PIL image or ``(3, H, W)`` is one, ``(B, 3, H, W)`` B."""
    if isinstance(image, PIL.Image.Image):
        if image.mode != "RGB":
            raise UsageError(
                f"StyleAugment takes RGB images, got a PIL image in mode {image.mode}; convert('RGB') first"
            )
        return 1
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise UsageError(f"StyleAugment takes (3, H, W) or (B, 3, H, W) RGB tensors, got shape {tuple(image.shape)}")
    return 1 if image.ndim == 3 else image.shape[0]


def _as_float(image: torch.Tensor) -> torch.Tensor:
    """A ``(B, 3, H, W)`` tensor, uint8 in [0, 255] or float in [0, 1], → float32 in [0, 1]; anything else is refused
    (0-255 floats would come back as a white or black image, not as an error)."""
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if not image.is_floating_point():
        raise UsageError(f"StyleAugment takes uint8 images in [0, 255] or float ones in [0, 1], got {image.dtype}")
    if image.numel():
        low, high = image.min().item(), image.max().item()
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise UsageError(
                f"StyleAugment takes float images in [0, 1], got values in [{low:g}, {high:g}] "
                "(for 0-255 pixels pass uint8, or divide by 255)"
            )
    return image


class StyleAugment(Transform):
    """Restyle each sample with probability ``probability``, drawing its style as ``--styles {policy}:1`` would:

    - a checkpoint's N styles: ``random`` (one style) or ``mix`` (a Dirichlet(1) mixture of all of them), blended
      with the original pixels by ``alpha``;
    - a painting collection (``from_paintings``, Ghiasi et al.'s arbitrary network): ``random`` (one painting:
      Stylized-ImageNet), ``mix`` (a mixture of a few) or ``randomize`` (an embedding sampled from the Gaussian
      fitted on the paintings: Jackson et al.), with ``alpha`` acting in embedding space toward the image's own.

    A torchvision v2 transform: it takes a PIL image (RGB), a ``(3, H, W)`` or ``(B, 3, H, W)`` tensor, uint8 in
    [0, 255] or float in [0, 1], or a ``tv_tensors.Image``, and returns the same type, shape, dtype and range; labels,
    boxes and masks beside the image pass through. ``augment(images, keys=keys, epoch=epoch)`` (or the older
    ``augment(batch, keys, epoch)``) draws per sample key instead of from the transform's generator. So a
    ``(B, 3, H, W)`` pure tensor followed by a second positional argument means keys: pass a batch with its labels
    as one sample (``augment((images, labels))``, as ``v2.Compose`` does for a single tuple), not as two arguments.

    ``alpha`` is a float or a ``(lo, hi)`` range drawn per sample. ``probability = R / (1 + R)`` matches an offline
    augmented:original ratio ``R``: the same share of stylised images in training. ``size``: stylise at this short
    side and scale back (antialiased bilinear): a style network's strokes have a fixed size in pixels, so the scale
    it runs at decides what it keeps (at 64 px Magenta's styles swallow small objects, at 256 px they keep even an
    object's stripes; Jackson et al.'s ``downsamples`` is the same knob). ``precision``: as the job's
    ``--precision`` (``auto``: bf16 where the hardware has it natively, else fp32 on CPU). ``forward_batch``: images
    per forward pass (default: 1 on CPU, where the network is bound by cache, not arithmetic; 32 on CUDA), padded.
    The networks are frozen, in eval mode, on the stylizer's device. Built by ``from_checkpoint``/``from_paintings``,
    it pickles without its weights (DataLoader workers started by spawn load them once each, lazily).
    """

    # Pure tensors (the first of a sample, as v2 decides), tv_tensors.Image and PIL images; boxes, masks, labels pass.
    _transformed_types = (is_pure_tensor, tv_tensors.Image, PIL.Image.Image)

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
        self.style_names = list(style_names or [f"style_{i}" for i in range(stylizer.config.code_size)])
        self.paintings = paintings
        self.alpha_range = (float(low), float(high))
        self.probability = float(probability)
        self.seed = int(seed)
        self.size = size
        self._precision = precision
        self._forward_batch = forward_batch
        self._checkpoint: tuple[str, str, str] | None = None  # (kind, checkpoint, device) when loaded from one
        self._set_networks(stylizer, predictor if arbitrary and low < 1 else None)
        self._keys, self._epoch = None, 0  # the keys of the call in progress (forward → make_params)
        self._generator_pid: int | None = None  # the process the generator was seeded in (a worker reseeds)

    def _set_networks(self, stylizer: MultiStyleTransformer, predictor: nn.Module | None) -> None:
        self.stylizer = stylizer.eval().requires_grad_(False)
        device = next(stylizer.parameters()).device
        self.runner = StylizerRunner(
            stylizer,
            device,
            self._precision,
            batch_size=CUDA_FORWARD_BATCH,
            forward_batch=self._forward_batch,
            predictor=predictor,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu", **kwargs) -> "StyleAugment":
        """An N-style stylizer: a built-in name (``magenta26``) or a checkpoint path/URL."""
        stylizer, info = load_stylizer(resolve(checkpoint), device=device)
        augment = cls(stylizer, style_names=info.style_names, **kwargs)
        augment._checkpoint = ("stylizer", checkpoint, str(device))
        return augment

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
        augment = cls(transformer, paintings=collection, predictor=predictor, **kwargs)
        augment._checkpoint = ("arbitrary", checkpoint, str(device))
        return augment

    # -- pickling: a transform built from a checkpoint travels without its weights and reloads them per process --

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_generator", None)
        if self._checkpoint is not None:
            state["_modules"] = {k: v for k, v in state["_modules"].items() if k != "stylizer"}
            state["runner"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._generator_pid = None

    def _networks(self) -> StylizerRunner:
        if self.runner is None:  # unpickled in a worker: load the checkpoint here, once
            kind, checkpoint, device = self._checkpoint
            if kind == "stylizer":
                stylizer, predictor = load_stylizer(resolve(checkpoint), device=device)[0], None
            else:
                predictor, stylizer, _ = load_arbitrary(resolve(checkpoint), device=device)
                predictor = predictor if self.alpha_range[0] < 1 else None
            self._set_networks(stylizer, predictor)
        return self.runner

    # -- draws --

    def draw(self, key: int, epoch: int = 0) -> StyleDraw:
        """The draw of sample ``key`` in ``epoch``."""
        return self._draw(record_seed(self.seed, f"{int(key)}@{int(epoch)}"))

    def _draw(self, seed: int) -> StyleDraw:
        restyle = bool(np.random.default_rng([seed, 1]).random() < self.probability)
        if self.paintings is None:
            (plan,) = plan_outputs(self.policy, self.alpha_range, self.style_names, seed)
        else:
            (plan,) = plan_painting_outputs(self.policy, self.alpha_range, self.paintings, seed)
        return StyleDraw(restyle, plan)

    def _unkeyed_seeds(self, count: int) -> list[int]:
        """Seeds from the transform's own generator: seeded by ``seed`` in the process that made it and, in a
        DataLoader worker, by ``seed`` and the worker's seed (a forked copy would otherwise repeat the parent's)."""
        if self._generator_pid != os.getpid():
            worker = torch.utils.data.get_worker_info()
            self._generator = np.random.default_rng([self.seed] + ([worker.seed] if worker else []))
            self._generator_pid = os.getpid()
        return self._generator.integers(0, 2**63 - 1, size=count).tolist()

    # -- the v2 transform --

    def forward(self, *inputs: Any, keys=None, epoch: int = 0) -> Any:
        """``augment(image_or_sample)``, ``augment(images, keys=keys, epoch=epoch)``; the older
        ``augment(batch, keys[, epoch])`` on a ``(B, 3, H, W)`` pure tensor still means keys, not a label."""
        if keys is None and 2 <= len(inputs) <= 3 and is_pure_tensor(inputs[0]) and inputs[0].ndim == 4:
            inputs, keys, epoch = (inputs[0],), inputs[1], inputs[2] if len(inputs) == 3 else epoch
        self._keys, self._epoch = keys, epoch
        try:
            return super().forward(*inputs)
        finally:
            self._keys = None

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if not flat_inputs:
            return {"draws": []}
        count = _samples(flat_inputs[0])
        if self._keys is None:
            return {"draws": [self._draw(seed) for seed in self._unkeyed_seeds(count)]}
        keys = torch.as_tensor(self._keys).reshape(-1).tolist()
        if len(keys) != count:
            raise ValueError(f"{len(keys)} keys for {count} images")
        return {"draws": [self.draw(key, self._epoch) for key in keys]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        draws = params["draws"]
        if _samples(inpt) != len(draws):
            raise ValueError(f"StyleAugment got images of {len(draws)} and {_samples(inpt)} samples in one call")
        if isinstance(inpt, PIL.Image.Image):
            pixels = uint8_to_float(np.asarray(inpt))[None]
            return PIL.Image.fromarray(float_to_uint8(self.restyle(pixels, draws))[0].cpu().numpy(), "RGB")
        batch = inpt.as_subclass(torch.Tensor)
        batch = batch[None] if batch.ndim == 3 else batch
        images = _as_float(batch)
        out = self.restyle(images, draws)
        if batch.dtype == torch.uint8:
            out = float_to_uint8(out).movedim(-1, -3).contiguous()
        out = out.to(batch.dtype).reshape(inpt.shape)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def restyle(self, images: torch.Tensor, draws: list[StyleDraw]) -> torch.Tensor:
        """``images`` ``(B, 3, H, W)`` float in [0, 1], one draw each → ``(B, 3, H, W)`` in their dtype, the drawn
        samples restyled, the others unchanged (a new tensor; ``images`` is not modified)."""
        chosen = [i for i, d in enumerate(draws) if d.restyle]
        out = images.detach().clone()
        if not chosen:
            return out
        runner = self._networks()
        subset = out[chosen].float().clamp_(0, 1)
        # On paintings with alpha < 1 the predictor embeds each drawn image (as uint8, as the job does).
        conditioning = style_conditioning(
            [draws[i].plan for i in chosen],
            lambda i: float_to_uint8(subset[i]).cpu().numpy(),
            runner.embed if runner.embedder else None,
        )
        out[chosen] = self._stylize(runner, subset, conditioning.codes, conditioning.alphas).to(out.device, out.dtype)
        return out

    def _stylize(self, runner: StylizerRunner, images: torch.Tensor, codes: np.ndarray, alphas: np.ndarray):
        height, width = images.shape[-2:]
        if not self.size or min(height, width) == self.size:
            return runner.stylize(images, codes, alphas)
        scale = self.size / min(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = F.interpolate(images, size=shape, mode="bilinear", antialias=True).clamp_(0, 1)
        restyled = runner.stylize(resized, codes, alphas)
        return F.interpolate(restyled, size=(height, width), mode="bilinear", antialias=True).clamp_(0, 1)

    def extra_repr(self) -> str:
        source = f"paintings={len(self.paintings)}" if self.paintings is not None else f"styles={len(self.style_names)}"
        return (
            f"policy={self.policy.mode}, {source}, alpha={self.alpha_range}, probability={self.probability}, "
            f"seed={self.seed}, size={self.size}"
        )
