"""The environment contract shared by simulators, real robots and world models.

Every source of observations for a task (store, sim, robot, world model) produces the keys its `EnvSpec`
declares, with the declared shapes and dtypes: images are uint8 HxWxC, low-dim values float32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32" for low-dim values, "uint8" for images

    @property
    def is_image(self) -> bool:
        return self.dtype == "uint8" and len(self.shape) == 3


@dataclass(frozen=True)
class EnvSpec:
    """What a task's observations and actions are; declared once, used by data, policies and envs alike."""

    name: str
    obs: dict[str, ArraySpec]
    action_dim: int
    control_hz: float
    action_meaning: str  # e.g. "absolute agent target (x, y) in pixels" or "delta end-effector pose"
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    max_episode_steps: int = 300
    extra: dict[str, Any] = field(default_factory=dict)

    def check_obs(self, obs: dict[str, np.ndarray]) -> None:
        """Raise a clear error when an observation does not match this spec."""
        for key, want in self.obs.items():
            if key not in obs:
                raise KeyError(f"observation is missing key {key!r}; {self.name} declares {sorted(self.obs)}")
            got = np.asarray(obs[key])
            if tuple(got.shape) != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
                raise ValueError(
                    f"observation {key!r}: got shape {got.shape} dtype {got.dtype}, "
                    f"{self.name} declares shape {want.shape} dtype {want.dtype}"
                )


class Observation(dict):
    """A flat `name -> array` mapping plus the monotonic time (seconds) at which it was taken."""

    def __init__(self, values: dict[str, np.ndarray], timestamp: float):
        super().__init__(values)
        self.timestamp = float(timestamp)


@runtime_checkable
class Env(Protocol):
    """One control period per `step` in sim and world models; a robot env sends the command and returns."""

    spec: EnvSpec

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


StepResult = tuple[Observation, float, bool, dict[str, Any]]


@runtime_checkable
class VectorEnv(Protocol):
    """`num_envs` envs of one task stepped together, so one batched policy call serves them all.

    `step` takes actions only for the envs still running (index -> action) and returns their results under the
    same indices; an implementation may step them in parallel (subprocess workers) or in turn.
    """

    spec: EnvSpec
    num_envs: int

    def reset(self, seeds: Sequence[int]) -> list[Observation]: ...  # env i reset with seeds[i]

    def step(self, actions: Mapping[int, np.ndarray]) -> dict[int, StepResult]: ...

    def render(self, indices: Sequence[int]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


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


def observation_mismatches(reads: Mapping[str, Sequence[int]], gives: Mapping[str, Sequence[int]], reader: str,
                           giver: str) -> list[str]:
    """What stops `reader`, which reads these keys with these per-step shapes, from running on what `giver` gives
    (empty: nothing). Policies against rigs, critics against policies, policies against world models."""
    problems = []
    for key, shape in reads.items():
        if key not in gives:
            problems.append(f"{reader} reads {key!r}, which {giver} does not give (it gives {sorted(gives)})")
        elif list(gives[key]) != list(shape):
            problems.append(f"{reader} reads {key!r} with shape {list(shape)}, {giver} gives {list(gives[key])}")
    return problems
