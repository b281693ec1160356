"""A 2-D point that must reach either of two goals: the smallest task on which averaging policies fail.

The goals are fixed and the observation is only the agent's position, so a demonstration's choice of goal is
invisible at the start: the demonstrated action there is bimodal (the left goal or the right one). A round
obstacle sits midway between the goals, clear of every straight path from the start to a goal; touching it
ends the episode as a failure. The mean of "go left" and "go right" is therefore "go into the obstacle": a
policy that regresses the mean action crashes, while one that models the action distribution commits to a
goal and, once off-centre, the position itself tells it which way it is going.

Actions are absolute targets; each step the agent moves straight toward the target by at most `max_step`.
An episode succeeds (and ends) when the agent is within `goal_radius` of any goal.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from robolearn.data.store import EpisodeStore
from robolearn.env import ArraySpec, EnvSpec, Observation

GOALS: tuple[tuple[float, float], ...] = ((-1.0, 0.5), (1.0, 0.5))
BOUND = 1.5  # the arena is [-BOUND, BOUND]^2
_COLORS = {"background": (245, 245, 245), "goal": (60, 170, 90), "obstacle": (120, 120, 120),
           "agent": (210, 60, 50), "target": (60, 90, 210)}


def particle_spec(max_episode_steps: int = 20, goals: tuple[tuple[float, float], ...] = GOALS,
                  goal_radius: float = 0.1, max_step: float = 0.15, obstacle_radius: float = 0.35) -> EnvSpec:
    return EnvSpec(
        name="particle",
        obs={"state": ArraySpec((2,), "float32")},
        action_dim=2,
        control_hz=10.0,
        action_meaning=f"absolute target (x, y) of the agent; it moves at most {max_step} toward it per step",
        action_low=(-BOUND, -BOUND),
        action_high=(BOUND, BOUND),
        max_episode_steps=max_episode_steps,
        extra={"goals": [list(g) for g in goals], "goal_radius": goal_radius, "max_step": max_step,
               "obstacle_radius": obstacle_radius},
    )


def _segment_distance(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    """Distance from point p to segment a-b: a move that passes through the obstacle collides."""
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0.0 else float(np.clip((p - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p))


class ParticleEnv:
    """Point agent, two equally good goals, an obstacle at their midpoint (`obstacle_radius=0` removes it).

    `info["goal"]` is the index of the goal reached (-1: none); `info["collision"]` says the obstacle ended it.
    """

    def __init__(self, goals: tuple[tuple[float, float], ...] = GOALS, goal_radius: float = 0.1,
                 max_step: float = 0.15, start_noise: float = 0.05, obstacle_radius: float = 0.35,
                 max_episode_steps: int = 20, render_size: int = 64):
        if max_episode_steps < 1 or max_step <= 0 or goal_radius <= 0 or obstacle_radius < 0:
            raise ValueError("max_episode_steps, max_step and goal_radius must be positive, obstacle_radius >= 0")
        self.goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)
        self.goal_radius = float(goal_radius)
        self.max_step = float(max_step)
        self.start_noise = float(start_noise)
        self.obstacle = self.goals.mean(axis=0)
        self.obstacle_radius = float(obstacle_radius)
        self.render_size = int(render_size)
        self.spec = particle_spec(max_episode_steps, tuple(map(tuple, self.goals.tolist())), goal_radius, max_step,
                                  obstacle_radius)
        self._pos = np.zeros(2)
        self._target: np.ndarray | None = None
        self._steps = 0
        self._done = True
        self._needs_reset = True

    def _observation(self) -> Observation:
        return Observation({"state": self._pos.astype(np.float32)}, timestamp=self._steps / self.spec.control_hz)

    def reset(self, seed: int | None = None) -> Observation:
        """Start within `start_noise` (per axis) of the origin; the same seed gives the same start."""
        rng = np.random.default_rng(seed)
        self._pos = rng.uniform(-self.start_noise, self.start_noise, size=2)
        self._target = None
        self._steps = 0
        self._done = False
        self._needs_reset = False
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        """Move toward the commanded target by at most max_step; reward 1 on reaching a goal."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("episode is over (done was returned); call reset() to start a new one")
        target = np.asarray(action, dtype=np.float64)
        if target.shape != (2,) or not np.all(np.isfinite(target)):
            raise ValueError(f"particle action must be a finite (x, y) target of shape (2,), got {target!r}")
        self._target = target
        delta = target - self._pos
        dist = float(np.linalg.norm(delta))
        if dist > self.max_step:
            delta *= self.max_step / dist
        start, self._pos = self._pos, np.clip(self._pos + delta, -BOUND, BOUND)
        self._steps += 1
        collision = bool(self.obstacle_radius > 0
                         and _segment_distance(start, self._pos, self.obstacle) < self.obstacle_radius)
        dists = np.linalg.norm(self.goals - self._pos, axis=1)
        reached = int(np.argmin(dists)) if dists.min() <= self.goal_radius and not collision else -1
        success = reached >= 0
        at_limit = self._steps >= self.spec.max_episode_steps
        self._done = success or collision or at_limit
        info = {"success": success, "goal": reached, "collision": collision, "distance": float(dists.min()),
                "position": self._pos.tolist(), "steps": self._steps,
                "truncated": at_limit and not (success or collision)}
        return self._observation(), float(success), self._done, info

    def _pixel(self, xy: np.ndarray) -> tuple[float, float]:
        """World (x, y) -> image (col, row), y pointing up."""
        scale = (self.render_size - 1) / (2 * BOUND)
        return (xy[0] + BOUND) * scale, (BOUND - xy[1]) * scale

    def render(self) -> np.ndarray:
        """(render_size, render_size, 3) uint8: goals green, obstacle grey, agent red, last target blue."""
        if self._needs_reset:
            raise RuntimeError("call reset() before render()")
        size = self.render_size
        img = np.empty((size, size, 3), np.uint8)
        img[:] = _COLORS["background"]
        rows, cols = np.mgrid[0:size, 0:size]
        px_per_unit = (size - 1) / (2 * BOUND)

        def disk(center: np.ndarray, radius: float, color: str) -> None:
            c, r = self._pixel(center)
            img[(cols - c) ** 2 + (rows - r) ** 2 <= max(radius * px_per_unit, 1.0) ** 2] = _COLORS[color]

        for goal in self.goals:
            disk(goal, self.goal_radius, "goal")
        if self.obstacle_radius > 0:
            disk(self.obstacle, self.obstacle_radius, "obstacle")
        if self._target is not None:
            disk(self._target, 0.03, "target")
        disk(self._pos, 0.05, "agent")
        return img

    def close(self) -> None:
        self._needs_reset = True


def scripted_demos(n_episodes: int, seed: int = 0, env: ParticleEnv | None = None, noise: float = 0.0,
                   lookahead: float | None = None) -> list[dict[str, np.ndarray]]:
    """Demonstrations that pick a goal 50/50 and go straight to it at full speed.

    The commanded target is the chosen goal itself (the env clips each move to max_step), or with `lookahead`
    the point that far ahead on the straight line. Commanding the goal keeps the two modes' actions as far
    apart as the goals, so the mean of the modes is the midpoint between them: the obstacle.

    Each demo is {"state": (T, 2), "action": (T, 2)} float32, the state observed before each action. `noise` > 0
    perturbs the executed target by Gaussian noise of that std while the recorded action stays the expert's
    (DART-style), so the data also covers states slightly off the straight lines. A demo that fails (too much
    noise, an obstacle in the way) raises instead of entering the data.
    """
    env = env or ParticleEnv()
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(n_episodes):
        obs = env.reset(seed=int(rng.integers(2**31)))
        goal = env.goals[rng.integers(len(env.goals))]
        states, actions = [], []
        done = False
        while not done:
            pos = obs["state"].astype(np.float64)
            delta = goal - pos
            dist = float(np.linalg.norm(delta))
            action = goal if lookahead is None or dist <= lookahead else pos + delta * (lookahead / dist)
            states.append(obs["state"])
            actions.append(action.astype(np.float32))
            executed = action + rng.normal(0.0, noise, size=2) if noise > 0 else action
            obs, _, done, info = env.step(executed)
        if not info["success"]:
            raise RuntimeError(f"a scripted demo failed ({'collision' if info['collision'] else 'time limit'}) at "
                               f"{info['position']}; lower `noise` or the obstacle radius")
        demos.append({"state": np.stack(states), "action": np.stack(actions)})
    return demos


def make_particle_store(path: str | os.PathLike, n_episodes: int = 200, seed: int = 0, noise: float = 0.0,
                        lookahead: float | None = None, overwrite: bool = False) -> EpisodeStore:
    """Write `scripted_demos` to a new EpisodeStore (built under a temporary name, so an interrupted run leaves
    nothing); each episode's metadata names the goal it went to. Returns the finished store, opened to read."""
    env = ParticleEnv()
    with EpisodeStore.build(path, replace=overwrite, fps=env.spec.control_hz, task="particle",
                            attrs={"goals": env.goals.tolist(), "seed": seed, "noise": noise,
                                   "lookahead": lookahead}) as store:
        for demo in scripted_demos(n_episodes, seed, env, noise, lookahead):
            final = demo["action"][-1].astype(np.float64)
            goal = int(np.argmin(np.linalg.norm(env.goals - final, axis=1)))
            store.append_episode(demo, source="scripted", goal=goal)
    return EpisodeStore.open(path)
