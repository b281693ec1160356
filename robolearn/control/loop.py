"""The control loop: drives a batch of envs with one policy, one batched inference per replanning step.

Simulated envs run in stepped time (no sleeping). Envs that finish early stop stepping while the others go
on; each keeps its own seed, so results do not depend on how many envs share a batch or how they are stepped
(in turn in this process, or in parallel subprocess workers).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.control.executor import PolicyRunner
from robolearn.env import Env, VectorEnv
from robolearn.sim.vector_env import SerialVectorEnv


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
    def __init__(self, envs: Sequence[Env] | VectorEnv, runner: PolicyRunner, max_steps: int | None = None):
        self.envs = envs if isinstance(envs, VectorEnv) else SerialVectorEnv(envs)
        self.runner = runner
        self.max_steps = max_steps or self.envs.spec.max_episode_steps

    def run(self, seeds: Sequence[int], record: Sequence[bool] | None = None,
            on_step: Callable[[int], None] | None = None) -> list[EpisodeResult]:
        """One episode each for the first len(seeds) envs, env i reset with seeds[i]; `record[i]` keeps its frames."""
        if not 1 <= len(seeds) <= self.envs.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.envs.num_envs} envs")
        record = list(record) if record is not None else [False] * len(seeds)
        recorded = [i for i, r in enumerate(record) if r]
        obs = self.envs.reset(seeds)
        results = [EpisodeResult(int(s), 0, 0.0, -np.inf, False, {}) for s in seeds]
        for i, frame in zip(recorded, self.envs.render(recorded)):
            results[i].frames.append(frame)
        self.runner.reset(obs)
        active = np.ones(len(seeds), bool)
        for _ in range(self.max_steps):
            actions = self.runner.act()
            stepped = self.envs.step({int(i): actions[i] for i in np.flatnonzero(active)})
            for i, (o, reward, done, info) in stepped.items():
                res = results[i]
                obs[i] = o
                res.steps += 1
                res.total_reward += float(reward)
                res.max_reward = max(res.max_reward, float(reward))
                res.success = res.success or bool(info.get("success", False))
                res.final_info = info
                if done:
                    active[i] = False
            frames_of = [i for i in recorded if i in stepped]
            for i, frame in zip(frames_of, self.envs.render(frames_of)):
                results[i].frames.append(frame)
            if on_step is not None:
                on_step(int(active.sum()))
            if not active.any():
                break
            self.runner.observe(obs)
        return results
