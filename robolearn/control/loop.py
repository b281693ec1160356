"""The control loop: drives a batch of envs with one policy, one batched inference per replanning step.

Simulated envs run in stepped time (no sleeping). Envs that finish early stop stepping while the others go
on; each keeps its own seed, so results do not depend on how many envs share a batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.control.executor import PolicyRunner
from robolearn.env import Env


@dataclass
class EpisodeResult:
    seed: int
    steps: int
    total_reward: float
    max_reward: float  # Push-T's reward is clip(coverage / 0.95): its max is Diffusion Policy's episode score
    success: bool  # any step reported info["success"]
    final_info: dict[str, Any]
    frames: list[np.ndarray] = field(default_factory=list)


class ControlLoop:
    def __init__(self, envs: Sequence[Env], runner: PolicyRunner, max_steps: int | None = None):
        if not envs:
            raise ValueError("ControlLoop needs at least one env")
        self.envs = list(envs)
        self.runner = runner
        self.max_steps = max_steps or self.envs[0].spec.max_episode_steps

    def run(self, seeds: Sequence[int], record: Sequence[bool] | None = None,
            on_step: Callable[[int], None] | None = None) -> list[EpisodeResult]:
        """One episode per env, env i reset with seeds[i]; `record[i]` keeps rendered frames of env i."""
        if len(seeds) != len(self.envs):
            raise ValueError(f"got {len(seeds)} seeds for {len(self.envs)} envs")
        record = list(record) if record is not None else [False] * len(self.envs)
        obs = [env.reset(seed=int(s)) for env, s in zip(self.envs, seeds)]
        results = [EpisodeResult(int(s), 0, 0.0, -np.inf, False, {}) for s in seeds]
        for i, env in enumerate(self.envs):
            if record[i]:
                results[i].frames.append(env.render())
        self.runner.reset(obs)
        active = np.ones(len(self.envs), bool)
        for _ in range(self.max_steps):
            actions = self.runner.act()
            for i in np.flatnonzero(active):
                o, reward, done, info = self.envs[i].step(actions[i])
                res = results[i]
                obs[i] = o
                res.steps += 1
                res.total_reward += float(reward)
                res.max_reward = max(res.max_reward, float(reward))
                res.success = res.success or bool(info.get("success", False))
                res.final_info = info
                if record[i]:
                    res.frames.append(self.envs[i].render())
                if done:
                    active[i] = False
            if on_step is not None:
                on_step(int(active.sum()))
            if not active.any():
                break
            self.runner.observe(obs)
        return results
