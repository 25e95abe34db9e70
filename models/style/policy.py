"""Which styles and blend each source image gets: ``--styles all|random:K|mix:K|randomize:K``, ``--alpha A|LO,HI``.

Two kinds of style sets, one policy language:

- the N styles of a checkpoint: a plan's conditioning vector is a mixture over them (one-hot for one style);
- a painting collection (arbitrary styles, Ghiasi et al. 2017): a plan's conditioning vector is a style
  embedding: one painting's (``all``, ``random:K``: Stylized-ImageNet, Geirhos et al. 2019), a convex mixture of a
  few paintings' (``mix:K``), or a sample from a Gaussian fitted on the collection's embeddings (``randomize:K``:
  style augmentation, Jackson et al. 2019).

Every draw comes from a seed derived from ``--seed`` and the record's id, never from worker state, so a re-run or
a Beam retry of any bundle makes the same choices for the same record. Pure numpy: used by the Beam job and by
the online transform alike.
"""

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from models.common.errors import UsageError

MODES = ("all", "random", "mix", "randomize")
# Paintings per mixture in mix:K over a collection: a Dirichlet over hundreds of paintings is their average,
# a blur of every style; two or three keeps each mixture a recognisable blend.
PAINTINGS_PER_MIX = 3
# The largest K of random:K, mix:K and randomize:K: K stylised copies of every image (K draws of a code each) are
# planned at once per record; past a thousand that is a typo (mix:100000000 asked numpy for 19.4 GiB), not a
# setting.
MAX_OUTPUTS_PER_IMAGE = 1024


@dataclass(frozen=True)
class StylePolicy:
    mode: str  # one of MODES
    count: int = 0  # K

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"unknown style policy {self.mode!r}; use one of {', '.join(MODES)}")
        if self.mode != "all" and not 1 <= self.count <= MAX_OUTPUTS_PER_IMAGE:
            raise UsageError(
                f"--styles {self.mode}:{self.count}: K is the number of outputs per image, from 1 to "
                f"{MAX_OUTPUTS_PER_IMAGE}"
            )

    def check(self, num_styles: int, paintings: bool = False) -> None:
        """``num_styles``: the checkpoint's styles, or the number of paintings."""
        kind = "paintings" if paintings else "styles"
        if self.mode == "random" and self.count > num_styles:
            raise UsageError(
                f"--styles random:{self.count} asks for more distinct {kind} than the {num_styles} there are"
            )
        if self.mode == "mix" and num_styles < 2:
            raise UsageError(f"--styles mix:K needs at least 2 {kind}")
        if self.mode == "randomize" and not paintings:
            raise UsageError("--styles randomize:K samples style embeddings: it needs --style-images PAINTINGS")


@dataclass(frozen=True)
class StylePlan:
    """One output of one source image.

    ``code`` is what conditions the network: a mixture over the checkpoint's styles (summing to 1) or, for
    paintings, a style embedding. For paintings ``alpha`` acts in embedding space (toward the content image's own
    embedding, Ghiasi et al. sec. 4.3), not on pixels; see ``blend_code``.
    """

    index: int  # n in the output id "{source_id}#{n}"
    style: str  # a style name or painting id, "mix", or "random" (a sampled embedding)
    code: np.ndarray  # (code_size,) float32
    alpha: float
    style_ids: tuple[str, ...] = ()  # the paintings behind the row (empty for checkpoint styles and samples)
    style_mix: tuple[float, ...] = ()  # their weights
    on_paintings: bool = False  # code is a style embedding (alpha in embedding space), not a style mixture

    @property
    def style_weights(self) -> np.ndarray | None:
        """The checkpoint-style mixture (``None`` for painting rows)."""
        return None if self.on_paintings else self.code


@dataclass(frozen=True)
class PaintingSet:
    """A painting collection's style embeddings, sorted by id, and the Gaussian fitted on them."""

    ids: tuple[str, ...]
    embeddings: np.ndarray  # (P, D) float32
    mean: np.ndarray  # (D,) float64
    cholesky: np.ndarray  # (D, D) float64, lower: Σ = L Lᵀ

    @classmethod
    def fit(cls, items: list[tuple[str, np.ndarray]], variance_floor: float = 1e-4) -> "PaintingSet":
        """``[(painting id, embedding)]`` in any order → the set. Σ is the sample covariance shrunk toward its
        average variance (weight d / (d + P) on the target: most of it for a handful of paintings, little for
        thousands), with a floor on the variance, so a small collection still has a full-rank Gaussian."""
        if not items:
            raise UsageError("no usable painting: every --style-images file was rejected (see rejected rows)")
        items = sorted(items, key=lambda item: item[0])
        ids = tuple(painting_id for painting_id, _ in items)
        if len(set(ids)) != len(ids):
            raise UsageError("painting ids must be unique")
        embeddings = np.stack([np.asarray(e, np.float32) for _, e in items])
        count, dim = embeddings.shape
        mean = embeddings.astype(np.float64).mean(0)
        sample = np.cov(embeddings.astype(np.float64), rowvar=False, bias=True) if count > 1 else np.zeros((dim, dim))
        target = max(float(np.trace(sample)) / dim, variance_floor)
        weight = dim / (dim + count)
        covariance = (1 - weight) * sample + weight * target * np.eye(dim)
        covariance += variance_floor * np.eye(dim)
        return cls(ids, embeddings, mean, np.linalg.cholesky(covariance))

    def __len__(self) -> int:
        return len(self.ids)


def parse_styles(text: str) -> StylePolicy:
    """``all``, ``random:K``, ``mix:K`` or ``randomize:K`` with 1 <= K <= ``MAX_OUTPUTS_PER_IMAGE`` (random:K is
    further bounded by the styles there are, in ``StylePolicy.check``)."""
    if text == "all":
        return StylePolicy("all")
    mode, _, count = text.partition(":")
    if mode in MODES[1:] and count.isascii() and count.isdigit():
        return StylePolicy(mode, int(count))  # which checks 1 <= K <= MAX_OUTPUTS_PER_IMAGE
    raise UsageError(f"--styles must be all, random:K, mix:K or randomize:K with K >= 1, got {text!r}")


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


def _alphas(rng: np.random.Generator, alpha_range: tuple[float, float], count: int) -> list[float]:
    low, high = alpha_range
    alphas = rng.uniform(low, high, size=count) if high > low else np.full(count, low)
    return [float(np.float32(alpha)) for alpha in alphas]


def plan_outputs(
    policy: StylePolicy, alpha_range: tuple[float, float], style_names: list[str], seed: int
) -> list[StylePlan]:
    """The outputs for one record over a checkpoint's styles, drawn from ``seed`` (that record's ``record_seed``)."""
    rng = np.random.default_rng(seed)
    num_styles = len(style_names)
    eye = np.eye(num_styles, dtype=np.float32)
    if policy.mode == "all":
        choices = [(name, eye[i]) for i, name in enumerate(style_names)]
    elif policy.mode == "random":
        picked = rng.choice(num_styles, size=policy.count, replace=False)
        choices = [(style_names[i], eye[i]) for i in sorted(picked)]
    elif policy.mode == "mix":
        # Dirichlet(1): uniform over the simplex of mixtures (style randomisation, Jackson et al. 2019).
        mixtures = rng.dirichlet(np.ones(num_styles), size=policy.count).astype(np.float32)
        mixtures /= mixtures.sum(axis=1, keepdims=True)
        choices = [("mix", row) for row in mixtures]
    else:
        policy.check(num_styles)  # randomize: paintings only
    alphas = _alphas(rng, alpha_range, len(choices))
    pairs = zip(choices, alphas, strict=True)
    return [StylePlan(n, name, weights, alpha) for n, ((name, weights), alpha) in enumerate(pairs)]


def plan_painting_outputs(
    policy: StylePolicy, alpha_range: tuple[float, float], paintings: PaintingSet, seed: int
) -> list[StylePlan]:
    """The outputs for one record over a painting collection; ``code`` is the style embedding before ``alpha``."""
    rng = np.random.default_rng(seed)
    count = len(paintings)
    plans = []
    if policy.mode in ("all", "random"):
        # random:K over fewer paintings than K (some were rejected at the style stage): every painting left
        picked = range(count) if policy.mode == "all" else sorted(rng.choice(count, min(policy.count, count), False))
        for i in picked:
            plans.append(("painting", paintings.ids[i], paintings.embeddings[i], (paintings.ids[i],), (1.0,)))
    elif policy.mode == "mix":
        size = min(PAINTINGS_PER_MIX, count)
        for _ in range(policy.count):
            picked = sorted(rng.choice(count, size=size, replace=False))
            weights = rng.dirichlet(np.ones(size))
            code = (weights[:, None] * paintings.embeddings[picked].astype(np.float64)).sum(0)
            mix = tuple(float(np.float32(w)) for w in weights)
            plans.append(("mix", "mix", code, tuple(paintings.ids[i] for i in picked), mix))
    else:  # randomize: z ~ N(μ, Σ) (Jackson et al. 2019, sec. 3)
        normal = rng.standard_normal((policy.count, paintings.mean.shape[0]))
        for z in paintings.mean + normal @ paintings.cholesky.T:
            plans.append(("sample", "random", z, (), ()))
    alphas = _alphas(rng, alpha_range, len(plans))
    return [
        StylePlan(n, style, np.asarray(code, np.float32), alpha, ids, mix, on_paintings=True)
        for n, ((_, style, code, ids, mix), alpha) in enumerate(zip(plans, alphas, strict=True))
    ]


def blend_code(style: np.ndarray, content: np.ndarray | None, alpha: float) -> np.ndarray:
    """Ghiasi's identity interpolation: ``alpha · style + (1 − alpha) · content`` in embedding space (``content``
    is the content image's own embedding; not needed when ``alpha`` is 1)."""
    if alpha >= 1.0:
        return np.asarray(style, np.float32)
    return (alpha * np.asarray(style, np.float64) + (1 - alpha) * np.asarray(content, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Conditioning:
    """What a batch of plans feeds the network."""

    codes: np.ndarray  # (B, code_size) float32: style mixtures, or style embeddings after alpha
    alphas: np.ndarray  # (B,) float32: the pixel blend toward the input (1 on paintings: their alpha acted on codes)
    content_embeddings: int  # content images whose own embedding was computed for it


def style_conditioning(
    plans: Sequence[StylePlan],
    content_of: Callable[[int], np.ndarray],
    embed: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    keys: Sequence[Hashable] | None = None,
) -> Conditioning:
    """Each plan's conditioning vector and pixel alpha: the one place that turns plans into network inputs.

    On a checkpoint's styles a plan's code is its mixture and its alpha blends pixels. On paintings alpha acts in
    embedding space (``blend_code``, toward the content image's own embedding) and the pixels are not blended.
    ``content_of(i)``: plan ``i``'s content image, ``(H, W, 3)`` uint8, asked only for the plans that need its
    embedding; ``embed``: uint8 images → ``(n, D)`` style embeddings (the style predictor); ``keys``: which plans share
    a content image (default: none do), so each image is embedded once.
    """
    codes = [plan.code for plan in plans]
    alphas = [1.0 if plan.on_paintings else plan.alpha for plan in plans]
    blended = [i for i, plan in enumerate(plans) if plan.on_paintings and plan.alpha < 1.0]
    first_of = {}
    if blended:
        if embed is None:
            raise UsageError("alpha < 1 on paintings needs the style predictor, to embed each content image")
        keys = range(len(plans)) if keys is None else keys
        for i in blended:
            first_of.setdefault(keys[i], i)
        own = dict(zip(first_of, embed([content_of(i) for i in first_of.values()]), strict=True))
        for i in blended:
            codes[i] = blend_code(codes[i], own[keys[i]], plans[i].alpha)
    return Conditioning(np.stack(codes).astype(np.float32), np.asarray(alphas, np.float32), len(first_of))
