"""Inference latency of one action chunk at batch 1: what a robot waits for between observation and action."""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from robolearn.control.executor import PolicyRunner
from robolearn.policies.base import Policy
from robolearn.task import TaskConfig


def first_history(policy: Policy, task: TaskConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A real batch-1 observation history from the task's env (the first observation, edge-padded)."""
    env = task.make_env()
    try:
        runner = PolicyRunner(policy)
        runner.reset([env.reset(seed=seed)])
        return {k: v.copy() for k, v in runner.history.items()}
    finally:
        env.close()


@torch.no_grad()
def chunk_latency_ms(policy: Policy, history: Mapping[str, np.ndarray], repeats: int = 30,
                     warmup: int = 3) -> np.ndarray:
    """Milliseconds per `act` call (one chunk) over `repeats` calls after `warmup` untimed ones."""
    policy.eval()
    obs = {k: torch.as_tensor(v, device=policy.device) for k, v in history.items()}
    generator = torch.Generator(device=policy.device).manual_seed(0)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        policy.act(obs, generator=generator)
        if policy.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return np.asarray(times)
