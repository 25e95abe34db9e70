"""Paired statistics for arms compared on the same data draws: t-intervals on per-seed differences, Holm's step-down
correction across arms, and the rule for claiming a gain.

Every seed is a fresh data draw that all arms share, so an arm's effect is estimated from the per-seed differences
``arm − baseline`` (a paired t-test): the draw-to-draw variation that moves every arm together cancels. A gain is
claimed only where the difference's confidence interval, at Holm's level for that arm, lies above 0.

Pure Python and numpy (the Student t distribution from the regularised incomplete beta function), so the
experiment needs no scipy; the tests check it against scipy where it is installed.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function (Numerical Recipes, 3rd ed., sec. 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
    """The t with ``t_cdf(t, df) == probability``, by bisection (to ~1e-8: the CDF's own accuracy)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    low, high = -1e4, 1e4
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of the per-seed differences, its standard error, the two-sided t-test's ``p`` against 0 and the
    ``confidence`` interval ``[low, high]``."""

    mean: float
    std_error: float
    df: int
    p: float
    confidence: float
    low: float
    high: float

    def at(self, confidence: float) -> tuple[float, float]:
        """The interval at another confidence level (Holm's, for instance)."""
        half = t_quantile(0.5 + confidence / 2.0, self.df) * self.std_error
        return self.mean - half, self.mean + half


def paired_difference(values, baseline, confidence: float = 0.95) -> PairedDifference:
    """The t-interval on ``values − baseline``, paired by position (one pair per seed); at least two pairs."""
    differences = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
    if differences.ndim != 1 or len(differences) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {len(differences)}")
    count = len(differences)
    mean = float(differences.mean())
    std_error = float(differences.std(ddof=1) / math.sqrt(count))
    df = count - 1
    if std_error == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return PairedDifference(mean, 0.0, df, p, confidence, mean, mean)
    p = 2.0 * t_cdf(-abs(mean / std_error), df)
    half = t_quantile(0.5 + confidence / 2.0, df) * std_error
    return PairedDifference(mean, std_error, df, p, confidence, mean - half, mean + half)


def holm(p_values: dict[str, float], alpha: float = 0.05) -> dict[str, dict]:
    """Holm's step-down procedure (Holm 1979) over a family of tests. Per test: ``adjusted_p`` (monotone),
    ``level`` (the confidence at which its interval is read: 1 − alpha / (m − rank), rank from 0 by p) and
    ``rejected`` (the null is rejected at family-wise error ``alpha``; once one test fails, all later ones do)."""
    order = sorted(p_values, key=lambda name: (p_values[name], name))
    count = len(order)
    result, running, still = {}, 0.0, True
    for rank, name in enumerate(order):
        factor = count - rank
        running = max(running, min(1.0, factor * p_values[name]))
        still = still and p_values[name] <= alpha / factor
        result[name] = {"adjusted_p": running, "level": 1.0 - alpha / factor, "rejected": still}
    return result


def compare_arms(per_seed: dict[str, list[float]], baseline: str, alpha: float = 0.05) -> dict[str, dict]:
    """Each arm against ``baseline`` on one endpoint, seeds paired by position; Holm across the arms.

    Per arm: the 95% interval, Holm's adjusted p and level, the interval at that level and ``gain``: True only
    where Holm rejects and the interval at Holm's level lies above 0 (``loss`` likewise below 0)."""
    others = [name for name in per_seed if name != baseline]
    differences = {name: paired_difference(per_seed[name], per_seed[baseline], 1.0 - alpha) for name in others}
    corrected = holm({name: d.p for name, d in differences.items()}, alpha)
    result = {}
    for name in others:
        difference, holm_row = differences[name], corrected[name]
        low, high = difference.at(holm_row["level"]) if difference.std_error else (difference.low, difference.high)
        result[name] = {
            **asdict(difference),
            "holm_adjusted_p": holm_row["adjusted_p"],
            "holm_level": holm_row["level"],
            "holm_low": low,
            "holm_high": high,
            "gain": bool(holm_row["rejected"] and low > 0),
            "loss": bool(holm_row["rejected"] and high < 0),
        }
    return result


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """An arm's own mean over seeds and its t-interval: ``(mean, low, high)`` (one value: the value, twice)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = t_quantile(0.5 + confidence / 2.0, len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def gap_closed(arm: float, baseline: float, oracle: float) -> float | None:
    """The share of the oracle's advantage over the baseline that the arm recovers; None when the oracle is no
    better than the baseline (no gap to close)."""
    gap = oracle - baseline
    return None if gap <= 0 else (arm - baseline) / gap
