"""Temporal ensembling (ACT, Zhao et al. 2023): query the policy every step and average what all recent
chunks predicted for the current step.

A chunk requested at step s predicts steps s .. s+K-1 (K = horizon - n_obs_steps + 1), so at step t up to K
chunks hold a prediction for t. They are averaged with weights exp(-m * i), where i is the prediction's age
index counted from the oldest (i = 0) to the newest, as in ACT: with m > 0 the older predictions weigh more
and the executed trajectory is smooth; m = 0 is a plain mean; m < 0 favours the newest chunk.

The live chunks stay where the policy computed them (on the GPU for a CUDA policy) and are averaged there; only
the one ensembled action per env crosses to the host each step.
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import torch

from robolearn.control.executor import ObsHistory, policy_device, predict_future_tensor, use_cuda_graphs
from robolearn.policies.base import Policy


class TemporalEnsembleRunner(ObsHistory):
    """One (batched) inference per step; the action is the weighted mean of every live chunk's prediction."""

    def __init__(self, policy: Policy, decay: float = 0.01, generator: torch.Generator | None = None,
                 cuda_graphs: bool | None = None):
        super().__init__(tuple(policy.config.obs_shapes), policy.config.n_obs_steps, policy_device(policy))
        use_cuda_graphs(policy, cuda_graphs)
        if not math.isfinite(decay):
            raise ValueError(f"ensemble decay m must be a finite number, got {decay}")
        self.policy = policy
        self.decay = float(decay)
        self.generator = generator
        self.chunk_len = policy.config.horizon - policy.config.n_obs_steps + 1
        self._chunks: deque[tuple[int, torch.Tensor]] = deque(maxlen=self.chunk_len)  # (step requested, chunk)
        # weights for 1..K live chunks, oldest first, normalized once (float64 like the host computation was)
        ages = torch.arange(self.chunk_len, dtype=torch.float64, device=policy_device(policy))
        self._weights = [torch.exp(-self.decay * ages[:n]) / torch.exp(-self.decay * ages[:n]).sum()
                         for n in range(1, self.chunk_len + 1)]
        self._t = 0
        self.n_inferences = 0
        self.latencies_s: list[float] = []  # wall time of each inference

    def reset(self, observations) -> None:
        super().reset(observations)
        self._chunks.clear()
        self._t = 0

    def act(self) -> np.ndarray:
        """(n_envs, action_dim): the ensembled action for the current step."""
        t = self._t
        t0 = time.perf_counter()
        self._chunks.append((t, predict_future_tensor(self.policy, self._history, self.generator)))
        self.latencies_s.append(time.perf_counter() - t0)
        self.n_inferences += 1
        # every kept chunk covers step t: the deque holds the last K requests, one per step
        predictions = torch.stack([chunk[:, t - s] for s, chunk in self._chunks])  # (n, n_envs, A), oldest first
        weights = self._weights[len(predictions) - 1].to(predictions.device)  # no-op unless a wrapper hid it
        self._t += 1
        action = torch.tensordot(weights, predictions.to(torch.float64), dims=1)
        return action.float().cpu().numpy()
