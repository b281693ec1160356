"""Choosing a composition's weights: a grid over the convex weights, each scored by evaluation on search seeds.

The search runs wherever the evaluation runs: in the simulator, or in a world model's imagination when the task's
env is an ImaginedEnv (no simulator needed). Search seeds must never be the seeds a result is reported on, or
the reported number would be chosen on its own test set.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.eval.rollout import evaluate
from robolearn.policies.base import Policy
from robolearn.policies.compose import ComposedPolicy


@dataclass
class SearchRow:
    weights: tuple[float, ...]
    success_rate: float
    score: float | None  # the task's score (e.g. max coverage), or the mean max reward without one

    def key(self) -> tuple[float, float]:
        return self.success_rate, -np.inf if self.score is None else self.score


def weight_grid(n_parents: int, resolution: int) -> list[tuple[float, ...]]:
    """Every convex weight vector whose entries are multiples of 1 / resolution (the simplex on a grid)."""
    if n_parents < 1 or resolution < 1:
        raise ValueError(f"a weight grid needs >= 1 parent and resolution >= 1, got {n_parents}, {resolution}")
    grid = []
    for cuts in itertools.combinations_with_replacement(range(resolution + 1), n_parents - 1):
        bounds = (0, *cuts, resolution)
        grid.append(tuple((bounds[i + 1] - bounds[i]) / resolution for i in range(n_parents)))
    return sorted(set(grid), reverse=True)


def search_weights(parents: Sequence[Policy], task: Any, resolution: int = 4, episodes: int = 10,
                   seed: int = 200_000, reported_seeds: range | None = None, steps: int | None = None,
                   **evaluate_kwargs: Any) -> tuple[tuple[float, ...], list[SearchRow]]:
    """The best weights on the grid (most successes, then the best score) and every row, best first."""
    search = range(seed, seed + episodes)
    if reported_seeds is not None and set(search) & set(reported_seeds):
        raise ValueError(f"search seeds {search.start}..{search.stop - 1} overlap the reported seeds "
                         f"{reported_seeds.start}..{reported_seeds.stop - 1}: choose another --search-seed")
    rows = []
    for weights in weight_grid(len(parents), resolution):
        report = evaluate(ComposedPolicy(parents, weights, steps=steps), task, n_episodes=episodes, start_seed=seed,
                          progress=False, **evaluate_kwargs)
        score = report.score_mean if report.score_mean is not None else report.max_reward_mean
        rows.append(SearchRow(weights, report.success_rate, score))
    rows.sort(key=SearchRow.key, reverse=True)
    return rows[0].weights, rows
