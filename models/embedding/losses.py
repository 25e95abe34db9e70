"""Losses between the CNN's projection ``(B, D)`` and fixed text targets ``(B, D)``.

- ``cosine``: 1 − cos(projection, target), for word2vec means (direction carries the meaning; Gómez et al.
  2018 regress word2vec/GloVe means the same way);
- ``sigmoid-ce``: sigmoid cross-entropy against topic probabilities (Gómez et al. 2017, sec. 3.2);
- ``infonce``: CLIP's symmetric contrastive loss (Radford et al. 2021) with a learned temperature, where the
  text side is the fixed target embedding (no text tower is trained).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.embedding.choices import LOSSES


class CosineRegressionLoss(nn.Module):
    def forward(self, projection: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(projection.float(), target.float(), dim=1)).mean()


class SigmoidTopicLoss(nn.Module):
    """``projection`` are logits; ``target`` topic probabilities in [0, 1]."""

    def forward(self, projection: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(projection.float(), target.float())


class InfoNCELoss(nn.Module):
    # CLIP initialises the temperature at 0.07 and clips the logit scale at 100 (Radford et al. 2021, sec. 2.5).
    def __init__(self, initial_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / initial_temperature)))
        self.max_log_scale = math.log(max_scale)

    def forward(self, projection: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        images = F.normalize(projection.float(), dim=1)
        texts = F.normalize(target.float(), dim=1)
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        logits = scale * images @ texts.t()
        labels = torch.arange(len(images), device=images.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

    @property
    def temperature(self) -> float:
        return float(1 / self.logit_scale.detach().clamp(max=self.max_log_scale).exp())


def make_loss(name: str) -> nn.Module:
    if name == "cosine":
        return CosineRegressionLoss()
    if name == "sigmoid-ce":
        return SigmoidTopicLoss()
    if name == "infonce":
        return InfoNCELoss()
    raise ValueError(f"unknown loss {name!r}; use one of {LOSSES}")


def default_loss(text_kind: str) -> str:
    """Gómez's pairing: topic distributions with sigmoid cross-entropy, word-vector means with cosine."""
    return "sigmoid-ce" if text_kind == "lda" else "cosine"
