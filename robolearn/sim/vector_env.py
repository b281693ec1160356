"""Vectors of envs behind the `VectorEnv` contract; `SerialVectorEnv` steps in-process envs in turn."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robolearn.env import Env, Observation, StepResult


class SerialVectorEnv:
    """In-process envs stepped one after another: no workers, no copies (the choice for fast envs like Push-T)."""

    def __init__(self, envs: Sequence[Env]):
        if not envs:
            raise ValueError("a vector env needs at least one env")
        self.envs = list(envs)
        self.spec = self.envs[0].spec
        self.num_envs = len(self.envs)

    def reset(self, seeds: Sequence[int]) -> list[Observation]:
        if len(seeds) > self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        return [env.reset(seed=int(s)) for env, s in zip(self.envs, seeds)]

    def step(self, actions: Mapping[int, np.ndarray]) -> dict[int, StepResult]:
        return {i: self.envs[i].step(a) for i, a in actions.items()}

    def render(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self.envs[i].render() for i in indices]

    def close(self) -> None:
        for env in self.envs:
            env.close()
