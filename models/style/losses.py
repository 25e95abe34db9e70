"""Perceptual losses over loss-network activations (Gatys et al. 2016; Johnson et al. 2016).

Conventions, shared by Gatys optimisation and stylizer training:

- ``features`` are the ``{layer: (B, C, H, W)}`` dicts that ``models.style.vgg.LossNetwork`` returns.
- Gram matrices are normalised by ``C·H·W``, so style images of any size give comparable targets
  (pytorch/examples fast_neural_style ``utils.gram_matrix``).
- Content and style terms are mean squared errors per layer, summed over layers (the convention behind
  the commonly used weights: content 1e5 / style 1e10 for training (pytorch/examples), content 1 /
  style 1e6 for Gatys (PyTorch's neural-style tutorial)).
- ``reduction="mean"`` averages over the batch (a scalar, for training); ``"none"`` returns one loss per image,
  ``(B,)``, so a batch of independent Gatys problems can be summed without coupling their scales.
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, C, C)``: channel co-activations, divided by ``C·H·W``."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def blend_grams(grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | torch.Tensor) -> dict:
    """Mix the Gram targets of several styles: ``sum_s weights[s] · grams[s][layer]`` for every layer.

    ``grams[s][layer]`` is ``(C, C)`` (one style image) or ``(1, C, C)``. ``weights`` is ``(S,)``, giving one
    ``(C, C)`` target per layer for the whole batch, or ``(B, S)``, giving a ``(B, C, C)`` target per image.
    Weights are used as given; pass a convex combination (rows summing to 1) to stay inside the styles' span.
    """
    if not grams:
        raise ValueError("blend_grams needs at least one style")
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.shape[-1] != len(grams):
        raise ValueError(f"{len(grams)} styles but {weights.shape[-1]} weights")
    blended = {}
    for layer in grams[0]:
        stacked = torch.stack([g[layer].reshape(g[layer].shape[-2:]) for g in grams])  # (S, C, C)
        mixing = weights.to(stacked)
        blended[layer] = torch.einsum("...s,scd->...cd", mixing, stacked)
    return blended


def content_loss(
    features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], *, reduction: str = "mean"
) -> torch.Tensor:
    """Sum over ``targets``' layers of the mean squared difference of activations (Gatys et al. 2016, eq. 1)."""
    per_image = _zeros(features)
    for layer, target in targets.items():
        per_image = per_image + _per_image_mse(features[layer], target)
    return _reduce(per_image, reduction)


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    *,
    layer_weights: Mapping[str, float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted sum over layers of the mean squared Gram difference (Gatys et al. 2016, eqs. 3–5).

    ``target_grams[layer]`` is ``(C, C)`` (one target for the batch, e.g. from ``blend_grams`` with ``(S,)``
    weights) or ``(B, C, C)`` (one per image). ``layer_weights`` defaults to 1 for every layer.
    """
    per_image = _zeros(features)
    for layer, target in target_grams.items():
        weight = 1.0 if layer_weights is None else layer_weights[layer]
        gram = gram_matrix(features[layer])
        per_image = per_image + weight * _per_image_mse(gram, target.expand_as(gram))
    return _reduce(per_image, reduction)


def total_variation_loss(images: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, across and down (Johnson et al. 2016, sec. 3.3, β = 2).

    ``images`` is ``(B, C, H, W)``; the result does not depend on the image size, only on its smoothness.
    """
    across = (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(1).mean(1)
    down = (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
    return _reduce(across + down, reduction)


def _zeros(features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    first = next(iter(features.values()))
    return first.new_zeros(first.shape[0])


def _per_image_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if prediction.shape != target.shape:
        target = target.expand_as(prediction)
    return F.mse_loss(prediction, target, reduction="none").flatten(1).mean(1)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    raise ValueError(f"unknown reduction {reduction!r}: use mean, sum or none")
