"""meta/stats.json as LeRobot writes it: per feature min, max, mean, std, count and the quantiles q01, q10, q50,
q90, q99 (LeRobot's DEFAULT_QUANTILES), per dimension for numbers; per channel, shaped (3, 1, 1) and scaled to
0..1, for cameras. LeRobot estimates quantiles from histograms and camera statistics from sampled, downscaled
frames; here numbers use every value (exact quantiles) and cameras up to `MAX_FRAMES` evenly spaced frames.
"""
from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
MAX_FRAMES = 500


def numeric_stats(values: np.ndarray) -> dict[str, Any]:
    """Statistics over the first axis of (n, *shape) values, each of shape `shape` (a scalar feature: (1,))."""
    x = values.astype(np.float64).reshape(len(values), -1)
    shape = values.shape[1:] or (1,)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({name: np.quantile(x, q, axis=0) for name, q in QUANTILES.items()})
    stats = {k: v.reshape(shape).tolist() for k, v in out.items()}
    stats["count"] = [len(values)]
    return stats


def frame_stats(frames: np.ndarray) -> dict[str, Any]:
    """Per-channel statistics of uint8 (n, H, W, 3) frames, scaled to 0..1, each shaped (3, 1, 1)."""
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    out = {"min": pixels.min(0), "max": pixels.max(0), "mean": pixels.mean(0), "std": pixels.std(0)}
    out.update({name: np.quantile(pixels, q, axis=0) for name, q in QUANTILES.items()})
    stats = {k: v.reshape(-1, 1, 1).tolist() for k, v in out.items()}
    stats["count"] = [len(frames)]
    return stats


def sample_rows(n_steps: int, limit: int = MAX_FRAMES) -> np.ndarray:
    """Up to `limit` evenly spaced row indices of 0..n_steps-1."""
    return np.unique(np.linspace(0, n_steps - 1, num=min(n_steps, limit)).round().astype(np.int64))
