"""Turns a chunking policy into a per-step controller for a batch of environments.

The runner keeps each env's last `n_obs_steps` observations (repeating the first one after a reset, exactly
as training windows pad episode starts) and a queue of actions; when the queue runs dry it asks the policy
for the next chunk for all envs in one batched call and executes its first `n_action_steps` actions
(receding horizon).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from robolearn.policies.base import Policy


class PolicyRunner:
    def __init__(self, policy: Policy, generator: torch.Generator | None = None):
        self.policy = policy
        self.generator = generator
        self.keys = tuple(policy.config.obs_shapes)
        self.n_obs_steps = policy.config.n_obs_steps
        self._history: dict[str, np.ndarray] = {}
        self._queue = np.zeros((0, 0, policy.config.action_dim), np.float32)
        self._next = 0
        self.n_inferences = 0

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
        self._queue = np.zeros((len(observations), 0, self.policy.config.action_dim), np.float32)
        self._next = 0

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Push the newest observation of each env (envs that are done may repeat their last one)."""
        for key in self.keys:
            newest = np.stack([np.asarray(o[key]) for o in observations])
            hist = self._history[key]
            hist[:, :-1] = hist[:, 1:]
            hist[:, -1] = newest

    def act(self) -> np.ndarray:
        """(n_envs, action_dim): the next action of every env, replanning when the chunk is used up."""
        if self._next >= self._queue.shape[1]:
            self._queue = self.policy.act(self._history, generator=self.generator)
            self._next = 0
            self.n_inferences += 1
        action = self._queue[:, self._next]
        self._next += 1
        return action
