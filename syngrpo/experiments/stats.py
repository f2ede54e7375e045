"""The statistics the experiments report: means over seeds, and paired differences with confidence intervals.

Two arms run with the same seeds and are scored on the same images, so their difference is *paired* twice: by seed
and by image. :func:`paired_bootstrap` resamples both (seeds with replacement, then images with replacement, the
same draw for both arms), so its interval counts the seed-to-seed spread *and* the finite test set;
:func:`paired_t` is the textbook interval over the per-seed differences alone (the test set taken as fixed), kept
as a cross-check. numpy only: the Student t quantile is computed here (the regularised incomplete beta function by
its continued fraction) rather than pulling scipy in for one number; ``tests/test_study.py`` checks it against
published table values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class Interval:
    """A difference ``b - a`` with its confidence interval; ``p``: two-sided p-value (t) or the bootstrap's share of
    draws on the other side of zero, doubled (an approximate two-sided p)."""

    mean: float
    lo: float
    hi: float
    p: float
    level: float = 0.95
    n_seeds: int = 0
    n_images: int = 0

    def text(self, scale: float = 100.0, unit: str = " points") -> str:
        """``+2.4 points [−0.3, +5.1]`` (``scale`` 100: fractions as percentage points)."""
        return (f"{scale * self.mean:+.1f}{unit} [{scale * self.lo:+.1f}, {scale * self.hi:+.1f}]")


def paired_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """The t interval of the mean per-seed difference ``b - a`` (seeds paired by position)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_t needs two equal-length samples of at least 2 seeds, got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b, strict=True)]
    m, sd = mean_std(d)
    n = len(d)
    if sd == 0.0:
        return Interval(m, m, m, 0.0 if m else 1.0, level, n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    t = m / (sd / math.sqrt(n))
    p = 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    return Interval(m, m - half, m + half, p, level, n)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95, images: bool = True) -> Interval:
    """The percentile interval of ``mean(b) - mean(a)`` over a two-level paired bootstrap.

    ``a`` and ``b`` are (seeds, images) arrays of per-image scores (Acc@0.5 hits, 0/1), row ``s`` of both from seed
    ``s``, column ``i`` the same image. Each draw resamples the seeds, then (``images``) the images, with
    replacement, and applies the same draw to both arms. (seeds,) arrays, or ``images=False``, resample seeds only.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same shape (seeds, images): {a.shape} vs {b.shape}")
    if a.ndim == 1:
        a, b, images = a[:, None], b[:, None], False
    n_seeds, n_img = a.shape
    diff = b - a  # (S, N)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for k in range(n_boot):
        rows = rng.integers(0, n_seeds, n_seeds)
        if images:
            cols = rng.integers(0, n_img, n_img)
            draws[k] = diff[np.ix_(rows, cols)].mean()
        else:
            draws[k] = diff[rows].mean()
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    mean = float(diff.mean())
    other_side = float(np.mean(draws <= 0.0)) if mean > 0 else float(np.mean(draws >= 0.0))
    return Interval(mean, float(lo), float(hi), min(1.0, 2.0 * other_side), level, n_seeds, n_img if images else 0)
