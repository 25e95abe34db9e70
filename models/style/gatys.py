"""Gatys optimisation: find an image whose VGG activations match one image's content and others' style.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016: minimise
``content_weight · L_content + style_weight · L_style (+ tv_weight · L_tv)`` over the pixels of the output, with
content at relu4_2 and style (Gram matrices) at relu1_1 … relu5_1, by L-BFGS. Extras:

- several style images blended by weight (their Gram targets are mixed, ``models.style.losses.blend_grams``);
- ``preserve_color``: luminance-only transfer (Gatys, Ecker, Bethge, Hertzmann & Shechtman, "Controlling Perceptual
  Factors in Neural Style Transfer", CVPR 2017, sec. 5.1): style and content luminance (YIQ) are matched in
  mean and variance, only the luminance is optimised, and the content's I/Q chroma is put back at the end;
- a batch of content images (same size) optimised together: the objective is the sum of per-image losses, so each
  image keeps its own scale (Adam is then exactly per-image; L-BFGS shares one line search across the batch).

Parametrisation: the pixels themselves, clamped to [0, 1] after every optimiser step (the PyTorch neural-style
tutorial does the same). A sigmoid parametrisation avoids the clamp but flattens gradients near black and white,
which slows the dark and bright regions that paintings are full of.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from models.common.errors import UsageError
from models.style.losses import blend_grams, content_loss, gram_matrix, style_loss, total_variation_loss
from models.style.vgg import LossNetwork

CONTENT_LAYERS = ("relu4_2",)  # Gatys et al. 2016, sec. 3
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # Gatys et al. 2016, sec. 3
# NTSC RGB → YIQ (Gatys et al. 2017 use YIQ for luminance-only transfer).
RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64
)
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


@dataclass(frozen=True)
class GatysConfig:
    """Settings of one optimisation. Loss weights follow ``models.style.losses``' conventions (MSE, Grams / C·H·W);
    content 1 and style 1e6 are the PyTorch neural-style tutorial's values for that convention."""

    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_weight: float = 1.0
    style_weight: float = 1e6
    # Gatys et al. 2016 use no smoothness term; Johnson et al. 2016 add one. Off unless asked for.
    tv_weight: float = 0.0
    steps: int = 300
    optimizer: str = "lbfgs"  # "lbfgs" (Gatys et al. 2016) or "adam"
    # None: 1.0 for L-BFGS (its line search picks the step), 0.02 for Adam (pixels are in [0, 1]).
    lr: float | None = None
    init: str = "content"  # "content" or "noise" (uniform white noise, as in Gatys et al. 2016, fig. 2)
    preserve_color: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in ("lbfgs", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}: use lbfgs or adam")
        if self.init not in ("content", "noise"):
            raise UsageError(f"unknown init {self.init!r}: use content or noise")
        if self.steps < 0:
            raise UsageError(f"steps must be >= 0, got {self.steps}")
        if min(self.content_weight, self.style_weight, self.tv_weight) < 0:
            raise UsageError("loss weights must be >= 0")


@dataclass
class GatysLosses:
    """Per-image losses, each ``(B,)``: the three terms unweighted, ``total`` weighted as optimised."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    total: torch.Tensor

    def image(self, index: int) -> dict[str, float]:
        return {name: float(getattr(self, name)[index]) for name in ("content", "style", "tv", "total")}

    def mean(self) -> dict[str, float]:
        return {name: float(getattr(self, name).mean()) for name in ("content", "style", "tv", "total")}


@dataclass
class GatysResult:
    images: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    initial: GatysLosses  # at the starting image
    final: GatysLosses  # at the returned image (for preserve_color: its luminance, which is what was optimised)
    steps: int
    evaluations: int  # loss-network forward/backward passes (L-BFGS line searches take several per step)


ProgressCallback = Callable[[int, GatysLosses], None]


def style_transfer(
    loss_network: LossNetwork,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    style_weights: Sequence[float] | None = None,
    config: GatysConfig = GatysConfig(),
    progress: ProgressCallback | None = None,
) -> GatysResult:
    """Optimise ``content`` ``(B, 3, H, W)`` in [0, 1] towards the blended style of ``styles``.

    ``styles`` are ``(3, h, w)`` or ``(1, 3, h, w)`` images in [0, 1], any size (Gram matrices are size-normalised).
    ``style_weights`` (one per style, ≥ 0; default equal) are normalised to sum to 1. ``progress(step, losses)`` is
    called after every step with the losses of the last evaluation. Runs where ``content`` lives.
    """
    _check_layers(loss_network, config)
    weights = _normalised_weights(style_weights, len(styles))
    device = content.device
    content = content.detach().float()
    styles = [s.detach().float().reshape(1, *s.shape[-3:]).to(device) for s in styles]

    if config.preserve_color:
        content_yiq = rgb_to_yiq(content)
        content_luma = content_yiq[:, :1]
        target_image = content_luma.expand(-1, 3, -1, -1)
        style_targets = _luminance_style_targets(loss_network, content_luma, styles, weights, config.style_layers)
        start = content_luma
    else:
        target_image = content
        style_targets = _style_targets(loss_network, styles, weights, config.style_layers)
        start = content

    with torch.no_grad():
        features = loss_network(target_image)
        content_targets = {layer: features[layer].detach() for layer in config.content_layers}

    if config.init == "noise":
        generator = torch.Generator().manual_seed(config.seed)
        start = torch.rand(start.shape, generator=generator).to(device)
    pixels = start.clone().contiguous().requires_grad_(True)

    def as_rgb(x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if config.preserve_color else x

    def evaluate() -> GatysLosses:
        image = as_rgb(pixels)
        features = loss_network(image)
        c = content_loss(features, content_targets, reduction="none")
        s = style_loss(features, style_targets, reduction="none")
        t = total_variation_loss(pixels, reduction="none")
        total = config.content_weight * c + config.style_weight * s + config.tv_weight * t
        return GatysLosses(c, s, t, total)

    with torch.no_grad():
        initial = _detached(evaluate())

    last = initial
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal last, evaluations
        optimizer.zero_grad(set_to_none=True)
        losses = evaluate()
        objective = losses.total.sum()
        objective.backward()
        last = _detached(losses)
        evaluations += 1
        return objective

    optimizer = _optimizer(pixels, config)
    for step in range(1, config.steps + 1):
        optimizer.step(closure)
        with torch.no_grad():
            pixels.clamp_(0, 1)
        if progress is not None:
            progress(step, last)

    with torch.no_grad():
        final = _detached(evaluate())
        result = pixels.detach()
        if config.preserve_color:
            result = yiq_to_rgb(torch.cat([result, content_yiq[:, 1:]], dim=1)).clamp(0, 1)
    return GatysResult(images=result, initial=initial, final=final, steps=config.steps, evaluations=evaluations)


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB → YIQ (Y in [0, 1]; I, Q roughly in [-0.6, 0.6])."""
    return torch.einsum("ij,bjhw->bihw", RGB_TO_YIQ.to(images), images)


def yiq_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_yiq`` (not clamped: a luminance change can leave the RGB gamut)."""
    return torch.einsum("ij,bjhw->bihw", YIQ_TO_RGB.to(images), images)


def _style_targets(network, styles, weights, layers) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        grams = [{layer: gram_matrix(network(style)[layer])[0] for layer in layers} for style in styles]
    return blend_grams(grams, weights)


def _luminance_style_targets(network, content_luma, styles, weights, layers) -> dict[str, torch.Tensor]:
    """Per-image ``(B, C, C)`` targets: each style's luminance matched to each content's mean and std
    (Gatys et al. 2017, sec. 5.1), shown to the network as a grey image."""
    per_image = []
    for luma in content_luma:
        mean, std = luma.mean(), luma.std()
        matched = []
        for style in styles:
            style_luma = rgb_to_yiq(style)[:, :1]
            style_luma = (style_luma - style_luma.mean()) / style_luma.std().clamp_min(1e-6) * std + mean
            matched.append(style_luma.expand(-1, 3, -1, -1))
        per_image.append(_style_targets(network, matched, weights, layers))
    return {layer: torch.stack([targets[layer] for targets in per_image]) for layer in layers}


def _optimizer(pixels: torch.Tensor, config: GatysConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam([pixels], lr=config.lr or 0.02)
    # One L-BFGS iteration per ``step()`` so progress and clamping happen every iteration; the curvature history
    # (100 pairs, as in Johnson's neural-style) lives in the optimiser's state across calls. tolerance_grad=0:
    # size-normalised Gram losses have tiny gradients that the default 1e-7 would mistake for convergence.
    return torch.optim.LBFGS(
        [pixels],
        lr=config.lr or 1.0,
        max_iter=1,
        max_eval=25,
        history_size=100,
        tolerance_grad=0.0,
        line_search_fn="strong_wolfe",
    )


def _check_layers(network: LossNetwork, config: GatysConfig) -> None:
    if not config.content_layers and not config.style_layers:
        raise UsageError("Gatys optimisation needs at least one content or style layer")
    missing = [layer for layer in (*config.content_layers, *config.style_layers) if layer not in network.layers]
    if missing:
        raise UsageError(f"the loss network does not compute {', '.join(missing)}; build it with those layers")


def _normalised_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if count == 0:
        raise UsageError("Gatys optimisation needs at least one style image")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise UsageError(f"{count} style image(s) but {len(weights)} style weight(s)")
    if min(weights) < 0 or sum(weights) <= 0:
        raise UsageError(f"style weights must be >= 0 and not all zero, got {weights}")
    return [w / sum(weights) for w in weights]


def _detached(losses: GatysLosses) -> GatysLosses:
    return GatysLosses(*(t.detach() for t in (losses.content, losses.style, losses.tv, losses.total)))
