"""Paired statistics for comparing two representations over seeds and over test faces.

- ``bootstrap_ci``: a percentile bootstrap confidence interval of a mean.
- ``paired_bootstrap_ci``: the same for the accuracy difference of two
  classifiers on the same faces (the faces resampled in pairs).
- ``paired_t``: Student's t on paired differences (two-sided p).
- ``wilcoxon``: Wilcoxon's signed-rank test, exact for up to EXACT_MAX
  non-zero differences (two-sided p).
- ``mcnemar``: McNemar's exact test of two classifiers on the same faces.

numpy only, so nothing beyond the project's requirements is needed (tests
check these against scipy where it is installed). benchmarks/ablation.py
uses them over seeds; the demo over one seed's test faces.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

__all__ = ["bootstrap_ci", "paired_bootstrap_ci", "paired_t", "wilcoxon", "mcnemar", "t_sf", "EXACT_MAX"]

# Beyond this many non-zero differences the Wilcoxon p comes from the normal approximation.
EXACT_MAX = 20


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 10000,
                 seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement, a fixed seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_bootstrap_ci(correct_a: Sequence[bool], correct_b: Sequence[bool], level: float = 0.95,
                        resamples: int = 10000, seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of accuracy(a) - accuracy(b) over the same faces, resampled in pairs."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap_ci: expected two equal non-empty 1-d sequences, got shapes {a.shape} "
                         f"and {b.shape}")
    rng = np.random.default_rng(seed)
    diff = a - b
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):   # a thousand resamples at a time bounds the index array
        idx = rng.integers(0, diff.size, size=(min(1000, resamples - start), diff.size))
        means[start:start + idx.shape[0]] = diff[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
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
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def paired_t(diffs: Sequence[float]) -> Tuple[float, int, float]:
    """(t, degrees of freedom, two-sided p) of the paired differences' mean against 0."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        raise ValueError("paired_t: needs at least two differences")
    sd = d.std(ddof=1)
    if sd == 0:
        return (math.copysign(math.inf, d.mean()) if d.mean() else 0.0), d.size - 1, (0.0 if d.mean() else 1.0)
    t = d.mean() / (sd / math.sqrt(d.size))
    return float(t), d.size - 1, min(1.0, 2.0 * t_sf(abs(t), d.size - 1))


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size)
    sorted_a = a[order]
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon(diffs: Sequence[float]) -> Tuple[float, float, str]:
    """(W+, two-sided p, method) of Wilcoxon's signed-rank test; zero differences are dropped.

    Exact: every one of the 2^n sign patterns of the (tie-averaged) ranks, so
    with n differences the smallest possible p is 2 / 2^n; beyond EXACT_MAX
    the normal approximation with the tie correction.
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 0.0, 1.0, "exact"
    ranks = _ranks(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    total = float(ranks.sum())
    deviation = abs(w_plus - total / 2.0)
    if n <= EXACT_MAX:
        sums = np.zeros(1)
        for r in ranks:   # the distribution of W+ over all sign patterns, one rank at a time
            sums = np.concatenate([sums, sums + r])
        p = float(np.mean(np.abs(sums - total / 2.0) >= deviation - 1e-9))
        return w_plus, min(1.0, p), "exact"
    _, counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((counts ** 3 - counts).sum()) / 48.0
    z = deviation / math.sqrt(var)
    return w_plus, min(1.0, math.erfc(z / math.sqrt(2.0))), "normal"


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> Tuple[int, int, float]:
    """(faces only A gets right, faces only B gets right, exact two-sided p) of McNemar's test:
    under the null the discordant faces split as Binomial(b + c, 1/2)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mcnemar: expected two equal 1-d sequences, got shapes {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return only_a, only_b, 1.0
    log_half = n * math.log(0.5)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
               for i in range(k + 1))
    return only_a, only_b, min(1.0, 2.0 * tail)
