"""Which styles and blend each source image gets: ``--styles all|random:K|mix:K`` and ``--alpha A|LO,HI``.

Every draw comes from a seed derived from ``--seed`` and the record's id, never from worker state, so a
re-run or a Beam retry of any bundle makes the same choices for the same record.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from models.errors import UsageError


@dataclass(frozen=True)
class StylePolicy:
    mode: str  # "all", "random" or "mix"
    count: int = 0  # K for random/mix

    def check(self, num_styles: int) -> None:
        if self.mode == "random" and self.count > num_styles:
            raise UsageError(
                f"--styles random:{self.count} asks for more distinct styles than the {num_styles} there are"
            )
        if self.mode == "mix" and num_styles < 2:
            raise UsageError("--styles mix:K needs a checkpoint with at least 2 styles")


@dataclass(frozen=True)
class StylePlan:
    """One output of one source image."""

    index: int  # n in the output id "{source_id}#{n}"
    style: str  # a style name, or "mix"
    style_weights: np.ndarray  # (num_styles,) float32, sums to 1
    alpha: float


def parse_styles(text: str) -> StylePolicy:
    if text == "all":
        return StylePolicy("all")
    mode, _, count = text.partition(":")
    if mode in ("random", "mix") and count.isdigit() and int(count) > 0:
        return StylePolicy(mode, int(count))
    raise UsageError(f"--styles must be all, random:K or mix:K with K >= 1, got {text!r}")


def parse_alpha(text: str) -> tuple[float, float]:
    """``"0.8"`` → (0.8, 0.8); ``"0.5,1"`` → (0.5, 1.0). Values in [0, 1]."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 <= values[0] <= values[1] <= 1:
        raise UsageError(f"--alpha must be A or LO,HI with 0 <= LO <= HI <= 1, got {text!r}")
    return values[0], values[1]


def record_seed(seed: int, source_id: str) -> int:
    """A non-negative int64 from the job seed and the record id (SHA-256: stable across Python processes)."""
    digest = hashlib.sha256(f"{seed}\x00{source_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def plan_outputs(
    policy: StylePolicy, alpha_range: tuple[float, float], style_names: list[str], seed: int
) -> list[StylePlan]:
    """The outputs for one record, drawn from ``seed`` (that record's ``record_seed``)."""
    rng = np.random.default_rng(seed)
    num_styles = len(style_names)
    eye = np.eye(num_styles, dtype=np.float32)
    if policy.mode == "all":
        choices = [(name, eye[i]) for i, name in enumerate(style_names)]
    elif policy.mode == "random":
        picked = rng.choice(num_styles, size=policy.count, replace=False)
        choices = [(style_names[i], eye[i]) for i in sorted(picked)]
    else:
        # Dirichlet(1): uniform over the simplex of mixtures (style randomisation, Jackson et al. 2019).
        mixtures = rng.dirichlet(np.ones(num_styles), size=policy.count).astype(np.float32)
        mixtures /= mixtures.sum(axis=1, keepdims=True)
        choices = [("mix", row) for row in mixtures]
    low, high = alpha_range
    alphas = rng.uniform(low, high, size=len(choices)) if high > low else np.full(len(choices), low)
    return [
        StylePlan(n, name, weights, float(np.float32(alpha)))
        for n, ((name, weights), alpha) in enumerate(zip(choices, alphas, strict=True))
    ]
