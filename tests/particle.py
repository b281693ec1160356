"""The two-goal particle task as a test bed for multimodal heads: a plain training loop and rollouts (its windows
are the `particle_windows` fixture in conftest.py)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.data.windows import Windows
from robolearn.policies.base import Policy
from robolearn.sim.particle import ParticleEnv

PARTICLE = {"obs_shapes": {"state": [2]}, "action_dim": 2, "horizon": 1, "n_obs_steps": 1, "n_action_steps": 1}
ROLLOUT_SEEDS = list(range(1000, 1060))


def train(policy: Policy, windows: Windows, steps: int, lr: float = 3e-3, batch_size: int = 64,
          seed: int = 0) -> list[float]:
    """A plain Adam loop over shuffled windows; returns the loss of every step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses: list[float] = []
    policy.train()
    while len(losses) < steps:
        for batch in windows.batches(batch_size, rng):
            loss = policy.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def fitted(policy: Policy, windows: Windows) -> Policy:
    store = windows.store
    policy.normalizer.fit({"state": store.stats("state"), "action": store.stats("action")})
    return policy


def trained_on_particles(build: Callable[[], Policy], windows: Windows, steps: int) -> Policy:
    """The policy `build` makes under torch seed 0, its normalizer fitted to the windows, trained, in eval mode."""
    torch.manual_seed(0)
    policy = fitted(build(), windows)
    train(policy, windows, steps=steps)
    return policy.eval()


def rollout(policy: Policy, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-episode success, goal index reached (-1: none) and collision over ROLLOUT_SEEDS."""
    envs = [ParticleEnv() for _ in ROLLOUT_SEEDS]
    runner = PolicyRunner(policy, generator=torch.Generator().manual_seed(seed))
    results = ControlLoop(envs, runner).run(ROLLOUT_SEEDS)
    return {"success": np.array([r.success for r in results]),
            "goal": np.array([r.final_info["goal"] for r in results]),
            "collision": np.array([r.final_info["collision"] for r in results])}
