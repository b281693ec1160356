"""How well a cheap evaluator (a simulator, a world model) ranks policies the way the real thing does.

Run a family of policies (checkpoints, methods) once for real and once in the proxy; each gives one number per
policy (success rate, score). Three summaries, as in SIMPLER (Li et al. 2024):

* Pearson r: linear agreement of the numbers themselves.
* Spearman rho: agreement of their ranks (ties get the average of the ranks they span), i.e. Pearson r of the
  ranks; insensitive to any monotone distortion of the proxy's scale.
* MMRV, mean maximum rank violation: for each policy i, the worst real-performance gap |R_i - R_j| over the
  policies j that the proxy orders differently from reality, 1[(S_i < S_j) != (R_i < R_j)], averaged over i.
  Lower is better (0: no pair is misordered); unlike the correlations it weights a misordering by how much it
  matters in reality, so swapping two nearly equal policies costs little.

MMRV follows the paper's indicator with "<". Where the proxy ties two policies that differ in reality, the
violation is charged to the one that is worse in reality (the tie overrates it); SIMPLER's code writes the test
with ">" and charges the better one instead, which can change the mean when proxy values tie.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence with one number per policy, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values at positions {np.flatnonzero(~np.isfinite(x)).tolist()}")
    return x


def _pair(real: Sequence[float] | np.ndarray, proxy: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, s = _vector(real, "real"), _vector(proxy, "proxy")
    if r.shape != s.shape:
        raise ValueError(f"real and proxy must score the same policies: got {len(r)} and {len(s)} values")
    if len(r) < 2:
        raise ValueError(f"comparing rankings needs at least 2 policies, got {len(r)}")
    return r, s


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks (smallest = 1); tied values share the mean of the ranks they occupy."""
    x = _vector(values, "values")
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), np.float64)
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + 1 + stop) / 2.0  # mean of ranks start+1 .. stop
        start = stop
    return ranks


def pearson_r(real: Sequence[float] | np.ndarray, proxy: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; undefined (ValueError) when either side is constant."""
    r, s = _pair(real, proxy)
    dr, ds = r - r.mean(), s - s.mean()
    for name, d, v in (("real", dr, r), ("proxy", ds, s)):
        if not np.any(d):
            raise ValueError(f"{name} values are all equal ({v[0]:g}): a correlation is undefined; the evaluator "
                             f"cannot tell these policies apart (use more episodes or more different policies)")
    value = float(dr @ ds / math.sqrt(float(dr @ dr) * float(ds @ ds)))
    return max(-1.0, min(1.0, value))


def spearman_rho(real: Sequence[float] | np.ndarray, proxy: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (Pearson r of the ranks)."""
    r, s = _pair(real, proxy)
    return pearson_r(average_ranks(r), average_ranks(s))


def mmrv(real: Sequence[float] | np.ndarray, proxy: Sequence[float] | np.ndarray) -> float:
    """Mean maximum rank violation (SIMPLER): mean over i of max_j |R_i - R_j| * 1[(S_i < S_j) != (R_i < R_j)]."""
    r, s = _pair(real, proxy)
    misordered = (s[:, None] < s[None, :]) != (r[:, None] < r[None, :])
    violation = np.abs(r[:, None] - r[None, :]) * misordered
    return float(violation.max(axis=1).mean())


@dataclass(frozen=True)
class Agreement:
    """The three summaries for one family of policies; a correlation is NaN where it is undefined (see `note`)."""

    n_policies: int
    pearson: float
    spearman: float
    mmrv: float
    note: str = ""


def agreement(real: Sequence[float] | np.ndarray, proxy: Sequence[float] | np.ndarray) -> Agreement:
    """Pearson r, Spearman rho and MMRV of proxy against real; a constant side yields NaN correlations and a note
    instead of an error, since "the proxy cannot tell these policies apart" is itself a result to report."""
    r, s = _pair(real, proxy)
    try:
        return Agreement(len(r), pearson_r(r, s), spearman_rho(r, s), mmrv(r, s))
    except ValueError as err:
        return Agreement(len(r), math.nan, math.nan, mmrv(r, s), note=str(err))
