"""ImaginedEnv: a learned world model behind the Env contract, so the control loop runs policies inside it.

An episode starts from a real observation (the first frame of a stored episode, picked by the seed) and then
lives in the model's latent space: each `step(action)` advances the latent one control period, decodes the
observation with the task's keys, shapes and dtypes (float32 low-dim values, uint8 images), and reads reward and
success from the model's heads. A step succeeds when the success head's probability reaches the threshold
(WorldModelConfig.success_threshold, 0.5 by default: the step is more likely a success than not); success or
`max_episode_steps` ends the episode, as in the simulators.

Because it is an Env, evaluating a family of policies in imagination is `evaluate` with a task whose env is this
class, e.g. TaskConfig(env="robolearn.eval.imagination:ImaginedEnv", env_kwargs={"world_model": "<checkpoint>",
"initial_observations": "<store>"}, score_key=""); robolearn.eval.correlation then compares imagined and real
success rates.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from robolearn.data.obs_source import parse_obs_sources
from robolearn.data.store import EpisodeStore
from robolearn.env import EnvSpec, Observation
from robolearn.models.world_model import WorldModel, load_world_model

_BAR_HEIGHT = 8  # pixels per value in the low-dim rendering


def episode_starts(store: EpisodeStore, obs_keys: Sequence[str],
                         obs_sources: Mapping[str, str] | None = None) -> list[dict[str, np.ndarray]]:
    """The first observation of every episode of a store, under the task's observation names."""
    sources = parse_obs_sources(list(obs_keys), dict(obs_sources or {}))
    starts = np.concatenate([[0], store.episode_ends[:-1]]).astype(np.int64)
    if len(store.episode_ends) == 0:
        raise ValueError(f"store {store.path} has no episodes to start imagined episodes from")
    rows = {key: store.read_rows(key, starts) for key in {s.key for s in sources.values()}}
    columns = {key: source.apply(rows[source.key]) for key, source in sources.items()}
    return [{key: np.array(columns[key][i]) for key in sources} for i in range(len(starts))]


@lru_cache(maxsize=4)
def _cached_model(path: str, device: str | None) -> WorldModel:
    """One loaded copy per checkpoint: a vector of imagined envs built from a config shares it."""
    return load_world_model(path, device=device)


class ImaginedEnv:
    """`world_model`: a WorldModel or its checkpoint folder; `initial_observations`: real observations to start
    from, or a store (object or path) whose episodes' first frames are used; `spec`: the task's EnvSpec (default:
    the model's own, see WorldModel.env_spec), checked against what the model produces."""

    def __init__(self, world_model: WorldModel | str | os.PathLike,
                 initial_observations: Sequence[Mapping[str, np.ndarray]] | EpisodeStore | str | os.PathLike,
                 spec: EnvSpec | None = None, success_threshold: float | None = None,
                 max_episode_steps: int | None = None, device: str | None = None, render_size: int = 96):
        if not isinstance(world_model, WorldModel):
            world_model = _cached_model(str(world_model), device)
        self.model = world_model.eval()
        cfg = world_model.config
        spec = spec or world_model.env_spec()
        if max_episode_steps is not None:
            if max_episode_steps < 1:
                raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
            spec = dataclasses.replace(spec, max_episode_steps=int(max_episode_steps))
        self._check_spec(spec)
        self.spec = spec
        self.success_threshold = cfg.success_threshold if success_threshold is None else float(success_threshold)
        if not 0.0 < self.success_threshold < 1.0:
            raise ValueError(f"success_threshold must be in (0, 1), got {self.success_threshold}")
        if isinstance(initial_observations, (str, os.PathLike)):
            initial_observations = EpisodeStore.open(initial_observations)
        if isinstance(initial_observations, EpisodeStore):
            initial_observations = episode_starts(initial_observations, cfg.obs_keys, cfg.obs_sources)
        starts = [{key: np.asarray(obs[key]) for key in spec.obs} for obs in initial_observations]
        if not starts:
            raise ValueError("ImaginedEnv needs at least one initial observation")
        for i, obs in enumerate(starts):
            try:
                spec.check_obs(obs)
            except (KeyError, ValueError) as err:
                raise ValueError(f"initial observation {i} does not match the spec: {err}") from err
        self.initial = starts
        self.render_size = int(render_size)
        self._rng = np.random.default_rng(0)  # for reset(seed=None)
        self._z: torch.Tensor | None = None
        self._obs: dict[str, np.ndarray] = {}
        self._steps = 0
        self._done = True

    def _check_spec(self, spec: EnvSpec) -> None:
        cfg = self.model.config
        if spec.action_dim != cfg.action_dim:
            raise ValueError(f"spec {spec.name!r} has action_dim {spec.action_dim}, the world model {cfg.action_dim}")
        for key, want in spec.obs.items():
            if key not in cfg.obs_shapes:
                raise KeyError(f"spec {spec.name!r} declares observation {key!r}, which the world model does not predict "
                               f"(it predicts {sorted(cfg.obs_shapes)})")
            dtype = "uint8" if key in cfg.image_keys else "float32"
            if tuple(want.shape) != tuple(cfg.obs_shapes[key]) or want.dtype != dtype:
                raise ValueError(f"observation {key!r}: spec declares {want.shape} {want.dtype}, the world model produces "
                                 f"{tuple(cfg.obs_shapes[key])} {dtype}")

    def _observation(self) -> Observation:
        return Observation({k: v.copy() for k, v in self._obs.items()}, timestamp=self._steps / self.spec.control_hz)

    @torch.no_grad()
    def reset(self, seed: int | None = None) -> Observation:
        """Start from the real initial observation the seed picks (the same seed, the same start)."""
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        start = self.initial[int(rng.integers(len(self.initial)))]
        self._obs = {k: v.copy() for k, v in start.items()}
        self._z = self.model.encode({k: v[None] for k, v in start.items()})
        self._steps = 0
        self._done = False
        return self._observation()

    @torch.no_grad()
    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        if self._z is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("episode is over (done was returned); call reset() to start a new one")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (self.spec.action_dim,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be a finite vector of shape ({self.spec.action_dim},), got {action!r}")
        z, reward, logit = self.model.transition(self._z, torch.as_tensor(a[None], device=self.model.device))
        decoded = self.model.to_raw(self.model.decode(z))
        self._z = z
        self._obs = {k: decoded[k][0].cpu().numpy() for k in self.spec.obs}
        self._steps += 1
        cfg = self.model.config
        prob = float(torch.sigmoid(logit)[0]) if cfg.success_source != "none" else 0.0
        success = prob >= self.success_threshold
        at_limit = self._steps >= self.spec.max_episode_steps
        self._done = success or at_limit
        info = {"success": success, "success_prob": prob, "steps": self._steps, "truncated": at_limit and not success}
        return self._observation(), float(reward[0]) if cfg.reward_source != "none" else 0.0, self._done, info

    def render(self) -> np.ndarray:
        """The current (decoded) camera image, or for low-dim tasks one horizontal bar per value, its length the
        value's position in the training data's range (centre: the middle of the range)."""
        if self._z is None:
            raise RuntimeError("call reset() before render()")
        images = [k for k in self.spec.obs if self.spec.obs[k].is_image]
        if images:
            return self._obs[images[0]].copy()
        values = torch.cat([self.model.normalizer.normalize(k, torch.as_tensor(self._obs[k], device=self.model.device))
                            .flatten() for k in self.spec.obs]).clamp(-1, 1).cpu().numpy()
        width = self.render_size
        img = np.full((max(1, len(values)) * _BAR_HEIGHT, width, 3), 245, np.uint8)
        centre = width // 2
        for i, v in enumerate(values):
            end = int(round(centre + v * (width // 2 - 1)))
            lo, hi = sorted((centre, end))
            img[i * _BAR_HEIGHT + 1:(i + 1) * _BAR_HEIGHT - 1, lo:hi + 1] = (60, 90, 210)
        img[:, centre] = (120, 120, 120)
        return img

    def close(self) -> None:
        self._z = None
        self._done = True
