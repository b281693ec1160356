"""Small builders shared by tests: tiny policies and synthetic stores."""
from __future__ import annotations

import numpy as np
import torch

from robolearn.data.store import EpisodeStore
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy

TINY = dict(down_dims=[16, 32], diffusion_step_embed_dim=16, horizon=8, n_obs_steps=2, n_action_steps=4)


def tiny_diffusion(obs_dim: int = 5, action_dim: int = 2, **overrides) -> DiffusionPolicy:
    config = DiffusionConfig(obs_shapes={"state": [obs_dim]}, action_dim=action_dim, **{**TINY, **overrides})
    policy = DiffusionPolicy(config)
    policy.normalizer.fit({"state": {"min": np.zeros(obs_dim), "max": np.full(obs_dim, 512.0)},
                           "action": {"min": np.zeros(action_dim), "max": np.full(action_dim, 512.0)}})
    return policy


class GoToBlockPolicy(Policy):
    """A deterministic scripted policy for Push-T state: move the agent onto the block's position."""

    def loss(self, batch):
        return torch.zeros(())

    def sample(self, obs, n=1, generator=None):
        target = obs["state"][:, -1, 2:4].float()
        chunk = target[:, None, None, :].expand(-1, n, self.config.horizon, -1)
        return chunk


def go_to_block_policy() -> GoToBlockPolicy:
    return GoToBlockPolicy(PolicyConfig(obs_shapes={"state": [5]}, action_dim=2, horizon=8, n_action_steps=4))


def synthetic_pusht_store(path, n_episodes: int = 6, length: int = 40, seed: int = 0) -> EpisodeStore:
    """Straight-line state trajectories whose action is a linear function of the state: the whole action
    chunk follows from the last two observations, so a small policy learns it in a few dozen steps."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, fps=10, task="pusht")
    t = np.arange(length, dtype=np.float64)[:, None]
    for _ in range(n_episodes):
        state = (rng.uniform(100, 300, size=5) + t * rng.uniform(-4, 4, size=5)).astype(np.float32)
        action = (0.5 * state[:, :2] + 0.5 * state[:, 2:4]).astype(np.float32)
        store.append_episode({"state": state, "action": action}, source="synthetic")
    return store
