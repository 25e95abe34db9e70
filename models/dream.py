"""DeepDream (Mordvintsev, Olah & Tyka 2015): gradient ascent on an image to excite what a network sees.

Two objectives share one optimiser:

- ``LayerObjective``: the mean squared activation of one layer (the original "L2" DeepDream objective);
- ``TextObjective``: cosine similarity between the text-supervised CNN's embedding of the image and a
  query's text embedding (Gómez et al. dreamed #Barcelona this way).

``dream`` works from coarse to fine octaves (the image's detail is carried up each octave), jitters the image
by a random roll each step (so the result does not lock onto the pixel grid), smooths the gradient with a
Gaussian and normalises it by its mean magnitude (a step means the same at every layer and octave).
Images are ``(1, 3, H, W)`` float in [0, 1].
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.common.errors import UsageError
from models.common.pixels import ImageNetNormalize
from models.embedding.net import EmbeddingNet, build_backbone

DEFAULT_LAYERS = {"resnet-tiny": "layer3", "resnet18": "layer3", "resnet50": "layer3", "googlenet": "inception4c"}
MIN_OCTAVE_SIDE = 32


class ImageNetBackbone(nn.Module):
    """A torchvision backbone behind ImageNet normalisation (input in [0, 1]); ``.backbone`` holds the layers."""

    def __init__(self, name: str, weights: str = "imagenet"):
        super().__init__()
        self.name = name
        self.backbone, _ = build_backbone(name, weights)
        self.normalize = ImageNetNormalize()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """A named module of ``model.backbone`` (``layer3``, ``inception4c``, ``layer2.0.conv1``)."""
    modules = dict(model.backbone.named_modules())
    if not name or name not in modules:
        top = [n for n, _ in model.backbone.named_children() if n not in ("fc", "dropout", "avgpool")]
        raise UsageError(f"no layer {name!r} in this network; top-level layers: {', '.join(top)}")
    return modules[name]


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the wanted layer has run (layers above cost time)."""


class LayerObjective:
    """Mean squared activation of ``layer`` for ``model``; ``norm`` is the activations' L2 norm."""

    def __init__(self, model: nn.Module, layer: str):
        self.model = model
        self.layer = find_layer(model, layer)
        self.layer_name = layer

    def activations(self, images: torch.Tensor) -> torch.Tensor:
        captured = {}

        def hook(_module, _inputs, output):
            captured["output"] = output
            raise _Captured

        handle = self.layer.register_forward_hook(hook)
        try:
            self.model(images)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "output" not in captured:
            raise UsageError(f"layer {self.layer_name!r} is not used in the forward pass")
        return captured["output"]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        activation = self.activations(images)
        return activation.pow(2).mean(), float(activation.detach().norm())

    def norm(self, images: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.activations(images).norm())


class TextObjective:
    """Cosine similarity of ``model.embed(image)`` to ``target`` ``(D,)`` (a query's text embedding)."""

    def __init__(self, model: EmbeddingNet, target: torch.Tensor):
        self.model = model
        self.target = target.float()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        similarity = F.cosine_similarity(self.model.embed(images), self.target.to(images.device)[None], dim=1).mean()
        return similarity, float(similarity.detach())

    def norm(self, images: torch.Tensor) -> float:
        with torch.no_grad():
            return self(images)[1]


@dataclass(frozen=True)
class DreamConfig:
    octaves: int = 4
    # 1.4: the octave scale of the original DeepDream notebook
    octave_scale: float = 1.4
    iterations: int = 10
    # step in [0, 1] pixel units per mean-normalised gradient; the notebook's 1.5 on a 0–255 scale is ≈ 0.006
    step: float = 0.01
    jitter: int = 16
    smooth_sigma: float = 1.0
    frames_per_octave: int = 2
    seed: int = 0


@dataclass
class DreamResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    history: list[dict] = field(default_factory=list)  # {"octave", "iteration", "objective", "value"}
    frames: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (label, (1, 3, h, w)) snapshots


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Coarse → fine sizes, the last the image's own; octaves whose short side would drop under 32 px are skipped."""
    sizes = []
    for index in range(octaves - 1, -1, -1):
        size = (round(height / scale**index), round(width / scale**index))
        if min(size) >= MIN_OCTAVE_SIDE or index == 0:
            sizes.append(size)
    return sizes


def dream(objective: Callable, image: torch.Tensor, config: DreamConfig = DreamConfig(), progress: bool = True):
    """Gradient ascent on ``objective(images) -> (scalar to maximise, value to log)``; returns a ``DreamResult``."""
    from tqdm import tqdm

    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    generator = torch.Generator().manual_seed(config.seed)
    base = image.detach()
    sizes = octave_sizes(base.shape[2], base.shape[3], config.octaves, config.octave_scale)
    detail = torch.zeros_like(F.interpolate(base, size=sizes[0], mode="bilinear", align_corners=False))
    result = DreamResult(image=base, frames=[("input", base)])
    snapshot_every = max(1, config.iterations // max(config.frames_per_octave, 1))
    bar = tqdm(total=len(sizes) * config.iterations, desc="deepdream", file=sys.stderr, disable=not progress)
    for octave, size in enumerate(sizes):
        octave_base = F.interpolate(base, size=size, mode="bilinear", align_corners=False, antialias=True)
        detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        current = (octave_base + detail).clamp(0, 1)
        for iteration in range(1, config.iterations + 1):
            current, value = _ascent_step(objective, current, config, generator)
            result.history.append({"octave": octave, "iteration": iteration, "value": value, "size": list(size)})
            bar.update(1)
            bar.set_postfix(value=f"{value:.4g}")
            if iteration % snapshot_every == 0 or iteration == config.iterations:
                result.frames.append((f"octave {octave + 1} it {iteration}", current.detach().clone()))
        detail = current - octave_base
    bar.close()
    result.image = current.detach()
    return result


def _ascent_step(objective, image, config, generator):
    dy, dx = (int(v) for v in torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator))
    rolled = image.roll((dy, dx), dims=(2, 3)).detach().requires_grad_(True)
    goal, value = objective(rolled)
    (grad,) = torch.autograd.grad(goal, rolled)
    grad = grad.roll((-dy, -dx), dims=(2, 3))
    if config.smooth_sigma > 0:
        grad = _gaussian_blur(grad, config.smooth_sigma)
    grad = grad / (grad.abs().mean() + 1e-8)
    return (image + config.step * grad).clamp(0, 1).detach(), value


def _gaussian_blur(tensor: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=tensor.dtype, device=tensor.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = tensor.shape[1]
    padded = F.pad(tensor, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def frame_strip(tiles, height: int = 160):
    """``[(label, PIL image)]`` side by side at one ``height``, each labelled: read left to right, coarse to fine."""
    from PIL import Image, ImageDraw

    scaled = [
        (label, tile.resize((max(1, round(tile.width * height / tile.height)), height), Image.Resampling.BICUBIC))
        for label, tile in tiles
    ]
    strip = Image.new("RGB", (sum(t.width for _, t in scaled) + 4 * (len(scaled) + 1), height + 22), "white")
    draw = ImageDraw.Draw(strip)
    x = 4
    for label, tile in scaled:
        strip.paste(tile, (x, 4))
        draw.text((x, height + 6), label, fill="black")
        x += tile.width + 4
    return strip


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: only the image is optimised."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
