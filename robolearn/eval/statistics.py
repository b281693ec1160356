"""Confidence intervals for evaluation metrics, so a success rate from 50 episodes is never reported as exact.

Success rates use the Wilson score interval (well behaved at 0 % and 100 %, unlike the normal approximation).
Means of bounded per-episode scores (coverage, max reward in [0, 1]) use a seeded percentile bootstrap, whose
interval never leaves the range of the values (a t interval printed 0.980 [0.940, 1.020] for a score capped at 1).
`mean_interval` (Student-t; scipy imported only when it is computed) remains for unbounded quantities.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _sample(values: Sequence[float] | np.ndarray, confidence: float, what: str) -> np.ndarray:
    """The values as a flat float64 array: at least one, all finite."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{what} needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} got non-finite values")
    return x


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `successes / n`."""
    _check_confidence(confidence)
    if n <= 0:
        raise ValueError(f"wilson_interval needs at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    return _wilson(successes / n, n, confidence)


def _wilson(p: float, n: int, confidence: float) -> tuple[float, float]:
    """Wilson's interval around a proportion p of n trials (also valid, conservatively, for the mean of n values in
    [0, 1], whose variance is at most p (1 - p))."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    z2n = z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if p <= 0.0 else max(0.0, center - half)
    high = 1.0 if p >= 1.0 else min(1.0, center + half)
    return low, high


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean with its Student-t confidence interval; the interval is (nan, nan) for a single value."""
    x = _sample(values, confidence, "mean_interval")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    from scipy.stats import t as student_t

    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    half = float(student_t.ppf(0.5 + confidence / 2.0, df=x.size - 1)) * sem
    return mean, mean - half, mean + half


def bootstrap_mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                            n_resamples: int = 10_000, seed: int = 0,
                            bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean with a percentile-bootstrap interval, inside [min(values), max(values)] and so inside any bounds the
    values respect; seeded, so a report is reproducible. The interval is (nan, nan) for a single value.

    Values without any spread give the bootstrap nothing to resample (two zero rewards would read 0 [0, 0]); with
    `bounds` known, such a sample gets Wilson's interval for a mean of values in those bounds instead."""
    x = _sample(values, confidence, "bootstrap_mean_interval")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    if bounds is not None and np.ptp(x) == 0.0:
        lo, hi = bounds
        if not lo <= mean <= hi or hi <= lo:
            raise ValueError(f"values {mean} lie outside the bounds {bounds}")
        low, high = _wilson((mean - lo) / (hi - lo), x.size, confidence)
        return mean, lo + low * (hi - lo), lo + high * (hi - lo)
    rows = np.random.default_rng(seed).integers(0, x.size, (n_resamples, x.size))
    means = x[rows].mean(axis=1)
    low, high = np.quantile(means, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0])
    return mean, float(low), float(high)
