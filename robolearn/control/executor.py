"""Turns a chunking policy into a per-step controller for a batch of environments.

Every runner keeps each env's last `n_obs_steps` observations (repeating the first one after a reset, exactly
as training windows pad episode starts) and answers `act()` with one action per env. `PolicyRunner` is the
receding horizon: when its queue runs dry it asks the policy for the next chunk for all envs in one batched
call and executes its first `n_action_steps` actions. Temporal ensembling (`ensemble.py`) and real-time chunk
blending (`rtc.py`) share the same shape, so the loop drives any of them.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from robolearn.policies.base import Policy


@runtime_checkable
class ChunkRunner(Protocol):
    """What the control loop calls: start episodes, push observations, take the next action of every env."""

    n_inferences: int

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None: ...

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None: ...

    def act(self) -> np.ndarray: ...

    def close(self) -> None: ...  # release what the runner holds (an inference thread, buffers); it is done after


class ObsHistory:
    """The last `n_obs_steps` observations of every env, edge-padded after a reset like training windows."""

    def __init__(self, keys: Sequence[str], n_obs_steps: int):
        self.keys = tuple(keys)
        self.n_obs_steps = n_obs_steps
        self._history: dict[str, np.ndarray] = {}

    @property
    def history(self) -> dict[str, np.ndarray]:
        """Each observed key's last `n_obs_steps` frames per env: (n_envs, n_obs_steps, *shape)."""
        return self._history

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Start new episodes from their first observations (one per env)."""
        for key in self.keys:
            missing = [i for i, o in enumerate(observations) if key not in o]
            if missing:
                raise KeyError(f"policy needs observation key {key!r}, missing for env(s) {missing}")
            first = np.stack([np.asarray(o[key]) for o in observations])
            self._history[key] = np.repeat(first[:, None], self.n_obs_steps, axis=1)

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Push the newest observation of each env (envs that are done may repeat their last one)."""
        for key in self.keys:
            newest = np.stack([np.asarray(o[key]) for o in observations])
            hist = self._history[key]
            hist[:, :-1] = hist[:, 1:]
            hist[:, -1] = newest

    def close(self) -> None:
        """Drop the buffered observations (images of every env can be large); `reset` starts afresh."""
        self._history = {}


@torch.no_grad()
def predict_future(policy: Policy, history: Mapping[str, np.ndarray],
                   generator: torch.Generator | None = None) -> np.ndarray:
    """The whole predicted future of one chunk: (n_envs, horizon - n_obs_steps + 1, action_dim) float32.

    Index 0 is the action for the step of the newest observation (the chunk starts at the oldest observed
    step). Ensembling and blending need every predicted step, not only the `n_action_steps` that `act` keeps.
    Observations stay on the CPU here; the policy moves them to its device itself.
    """
    obs = {k: torch.as_tensor(v) for k, v in history.items()}
    chunk = policy.sample(obs, n=1, generator=generator)[:, 0]
    return chunk[:, policy.config.n_obs_steps - 1:].float().cpu().numpy()


class PolicyRunner(ObsHistory):
    """Receding horizon: execute `n_action_steps` of each chunk, then replan (blocking) for all envs at once."""

    def __init__(self, policy: Policy, generator: torch.Generator | None = None):
        super().__init__(tuple(policy.config.obs_shapes), policy.config.n_obs_steps)
        self.policy = policy
        self.generator = generator
        self._queue = np.zeros((0, 0, policy.config.action_dim), np.float32)
        self._next = 0
        self.n_inferences = 0
        self.latencies_s: list[float] = []  # wall time of each blocking inference

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        super().reset(observations)
        self._queue = np.zeros((len(observations), 0, self.policy.config.action_dim), np.float32)
        self._next = 0

    def act(self) -> np.ndarray:
        """(n_envs, action_dim): the next action of every env, replanning when the chunk is used up."""
        if self._next >= self._queue.shape[1]:
            t0 = time.perf_counter()
            self._queue = self.policy.act(self._history, generator=self.generator)
            self.latencies_s.append(time.perf_counter() - t0)
            self._next = 0
            self.n_inferences += 1
        action = self._queue[:, self._next]
        self._next += 1
        return action
