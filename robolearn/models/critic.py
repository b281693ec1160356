"""Critics of action chunks, Q(observation history, chunk) and V(observation history), learned offline from a store.

A chunk here is the `action_steps` actions that start at the current step: what a receding-horizon controller
executes before it replans, so one Q value scores one decision of the loop, and steering can rank the chunks a
policy proposes (see robolearn.eval.steering). Two estimators:

* "iql", implicit Q-learning (Kostrikov et al. 2021) lifted to chunks: with h = action_steps,
      r_chunk = sum_{k<h} gamma^k r_{t+k},   Q(s_t, a_{t:t+h}) <- r_chunk + gamma^h (1 - done) V(s_{t+h}),
  and V(s) regresses an upper expectile of the target Q over the data's chunks, so it approaches the best chunk
  the data supports without ever querying Q on chunks the data never took. Twin Q heads (the minimum is used),
  and a target copy of them updated by Polyak averaging (an EMA of the weights).
* "mc", the Monte-Carlo baseline: Q and V regress the discounted return-to-go of the data's own behaviour.

Rewards come from the store's per-step `reward` key, or from episode metadata `success`, turned into a reward of
1 on the last step of each successful episode. An episode's end is terminal (done = 1): a store keeps no
observation after the last action, so there is nothing to bootstrap from; with success rewards this gives a
failed episode the value 0, its value within the recorded horizon.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robolearn.data.normalizer import Normalizer, fit_from_stores
from robolearn.data.obs_source import action_dim_of, resolve_obs_keys, store_obs_specs
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec, to_device
from robolearn.device import resolve_device
from robolearn.nn.checkpoint_folder import CheckpointKind, load_configured, save_configured
from robolearn.nn.mlp import check_mlp, mlp_layers
from robolearn.nn.obs_encoder import ObsEncoder
from robolearn.task import TaskConfig
from robolearn.train.loop import check_fit_settings, fit_on_random_batches

KIND = CheckpointKind(what="critic", format="robolearn.critic", version=1, weights="critic.safetensors",
                      config="critic.json")
_METHODS = ("iql", "mc")
REWARD_SOURCES = ("auto", "reward", "success")


@dataclass
class CriticConfig:
    """What the critic sees and scores, how it is trained, and (filled in from the store) the data's shapes."""

    obs_keys: list[str] = field(default_factory=list)  # empty: the task's obs keys (or those of obs_shapes)
    obs_sources: dict[str, str] = field(default_factory=dict)  # obs key <- "store_key[a:b]", as in TaskConfig
    action_key: str = "action"
    reward_source: str = "auto"  # "reward": the store's reward key; "success": episode metadata; "auto": either
    reward_key: str = "reward"
    n_obs_steps: int = 2  # frames of history (the newest ones) the critic reads
    action_steps: int = 8  # h: actions scored per chunk, from the current step on
    method: str = "iql"  # "iql" or "mc" (see the module docstring)
    gamma: float = 0.99
    expectile: float = 0.7  # IQL's tau for V; 0.5 is a plain mean, -> 1 approaches the max over the data's chunks
    target_update: float = 0.005  # Polyak rate of the target Q heads per step
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "mish"
    crop_ratio: float = 0.9  # image encoding (only with image keys), as in PolicyConfig
    image_feature_dim: int = 64
    n_keypoints: int = 32
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    cache: str = "auto"  # windows RAM cache: auto | ram | none
    log_every: int = 100
    # filled in by train_critic from the store:
    obs_shapes: dict[str, list[int]] = field(default_factory=dict)
    image_keys: list[str] = field(default_factory=list)
    action_dim: int = 0

    def __post_init__(self) -> None:
        self.hidden = check_mlp(self.hidden, self.activation)
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got {self.reward_source!r}")
        if self.n_obs_steps < 1 or self.action_steps < 1:
            raise ValueError(f"n_obs_steps ({self.n_obs_steps}) and action_steps ({self.action_steps}) must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 < self.target_update <= 1.0:
            raise ValueError(f"target_update must be in (0, 1], got {self.target_update}")
        check_fit_settings(self)
        self.obs_keys = resolve_obs_keys(self.obs_keys, self.obs_shapes, self.obs_sources)


# ---------------------------------------------------------------------------------------------- data helpers
def step_rewards(store: EpisodeStore, source: str = "auto", reward_key: str = "reward") -> np.ndarray:
    """(n_steps,) float32 reward of every step: the store's `reward_key`, or 1 on the last step of each episode whose
    metadata says success=True ("success"); "auto" takes the reward key when the store has one."""
    if source not in REWARD_SOURCES:
        raise ValueError(f"reward source must be one of {REWARD_SOURCES}, got {source!r}")
    has_key = reward_key in store.specs
    if source == "reward" or (source == "auto" and has_key):
        if not has_key:
            raise KeyError(f"store {store.path} has no {reward_key!r} key (it has {store.keys}); use reward "
                           f"source 'success' to reward successful episodes from their metadata")
        spec = store.specs[reward_key]
        if spec.shape not in ((), (1,)):
            raise ValueError(f"{reward_key!r} must hold one number per step, got per-step shape {spec.shape}")
        return store.read(reward_key).reshape(-1).astype(np.float32)
    unlabeled = [i for i in range(store.n_episodes) if "success" not in store.episode_meta(i)]
    if unlabeled:
        raise ValueError(f"store {store.path} has no per-step {reward_key!r} key and episodes {unlabeled[:10]} have no "
                         f"'success' in their metadata; record rewards, or label every episode "
                         f"(append_episode(..., success=True/False))")
    rewards = np.zeros(store.n_steps, np.float32)
    for i in range(store.n_episodes):
        if store.episode_meta(i)["success"]:
            rewards[store.episode_bounds(i)[1] - 1] = 1.0
    return rewards


def _episode_end_of_step(episode_ends: np.ndarray) -> np.ndarray:
    """(n_steps,) exclusive end of the episode each step belongs to."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    return np.repeat(ends, np.diff(ends, prepend=0))


def chunk_rewards(rewards: np.ndarray, episode_ends: np.ndarray, h: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """For every step t: r_chunk = sum_{k<h, t+k in episode} gamma^k r_{t+k}, and done = 1 when t + h reaches the
    episode's end (there is no state s_{t+h} to bootstrap from)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    end = _episode_end_of_step(episode_ends)
    if len(end) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards for {len(end)} steps")
    t = np.arange(len(rewards))
    total = np.zeros(len(rewards))
    for k in range(h):
        inside = t + k < end
        total += np.where(inside, gamma ** k * rewards[np.minimum(t + k, len(rewards) - 1)], 0.0)
    return total.astype(np.float32), (t + h >= end).astype(np.float32)


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """For every step t: sum_{k>=0} gamma^k r_{t+k} up to its episode's end (the Monte-Carlo target)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros(len(rewards))
    begin = 0
    for end in np.asarray(episode_ends, dtype=np.int64):
        running = 0.0
        for t in range(end - 1, begin - 1, -1):
            running = rewards[t] + gamma * running
            out[t] = running
        begin = end
    return out.astype(np.float32)


def td_target(r_chunk: torch.Tensor, done: torch.Tensor, next_value: torch.Tensor, gamma: float, h: int) -> torch.Tensor:
    """Chunk-level TD target r_chunk + gamma^h (1 - done) V(s_{t+h})."""
    return r_chunk + gamma ** h * (1.0 - done) * next_value


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean of |tau - 1[diff < 0]| * diff^2 with diff = target - prediction: tau = 0.5 is half the MSE; tau > 0.5
    penalizes predictions below the target more, so the minimizer is an upper expectile of the targets."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.square()).mean()


class ChunkTransitions:
    """Every step t of every episode as (obs history at t, a_t..a_{t+h-1}, r_chunk, done, obs history at t+h, G_t).

    Built on `Windows` (horizon = n_obs_steps - 1 + h) so the observation history is gathered, padded and cached
    the same way as for policies; the windows of one episode are consecutive rows, so the window of t + h is
    `h` rows further on whenever t + h is still inside the episode.
    """

    def __init__(self, store: EpisodeStore, config: CriticConfig, rewards: np.ndarray):
        to, h = config.n_obs_steps, config.action_steps
        self.bootstraps = config.method == "iql"  # only TD needs the next observation
        spec = WindowSpec(tuple(config.obs_keys), to, to - 1 + h, h, config.action_key)
        self.windows = Windows(store, spec, cache=config.cache, obs_sources=config.obs_sources)
        self.first_action = to - 1
        index = self.windows.index
        t = index[:, 0] + to - 1  # the current step of each window
        r_chunk, done = chunk_rewards(rewards, store.episode_ends, h, config.gamma)
        self.r_chunk, self.done = r_chunk[t], done[t]
        self.returns = returns_to_go(rewards, store.episode_ends, config.gamma)[t]
        rows = np.arange(len(index))
        self.next_rows = np.where(t + h < index[:, 2], rows + h, rows)  # done rows point at themselves (unused)

    def __len__(self) -> int:
        return len(self.windows)

    def gather(self, rows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, Any]:
        batch = self.windows.gather(rows)
        out = to_device({"obs": batch["obs"], "action": batch["action"][:, self.first_action:]}, device)
        if self.bootstraps:
            nxt = self.windows.gather(self.next_rows[rows])["obs"]
            out["next_obs"] = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in nxt.items()}
        for name in ("r_chunk", "done", "returns"):
            out[name] = torch.as_tensor(getattr(self, name)[rows], device=device)
        return out


# ---------------------------------------------------------------------------------------------- the networks
def _head(in_dim: int, hidden: list[int], activation: str) -> nn.Sequential:
    return nn.Sequential(*mlp_layers([in_dim, *hidden], activation), nn.Linear(hidden[-1], 1))


class Critic(nn.Module):
    """Twin Q(obs, chunk) and V(obs) MLPs over normalized observation features and the flattened normalized chunk.

    Inputs are raw, like a policy's: obs {key: (B, T, *shape)} with T >= n_obs_steps (the newest frames are used,
    so a policy's longer history can be passed as is) and chunks (B, K, action_steps, action_dim) in task units.
    """

    def __init__(self, config: CriticConfig):
        super().__init__()
        if not config.obs_shapes or config.action_dim < 1:
            raise ValueError("a Critic needs config.obs_shapes and action_dim >= 1 (train_critic fills them in from "
                             "the store; set them yourself to build one by hand)")
        self.config = config
        lowdim = {k: tuple(s) for k, s in config.obs_shapes.items() if k not in config.image_keys}
        lowdim["action"] = (config.action_dim,)
        self.normalizer = Normalizer(lowdim, image_keys=tuple(config.image_keys))
        self.encoder = ObsEncoder(config.obs_shapes, config.image_keys, config.n_obs_steps, crop_ratio=config.crop_ratio,
                                  feature_dim=config.image_feature_dim, n_keypoints=config.n_keypoints)
        cond, chunk = self.encoder.out_dim, config.action_steps * config.action_dim
        self.q = nn.ModuleList([_head(cond + chunk, config.hidden, config.activation) for _ in range(2)])
        self.v = _head(cond, config.hidden, config.activation)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)

    # the ChunkScorer interface steering relies on
    @property
    def n_obs_steps(self) -> int:
        return self.config.n_obs_steps

    @property
    def action_steps(self) -> int:
        return self.config.action_steps

    @property
    def obs_shapes(self) -> dict[str, list[int]]:
        return self.config.obs_shapes

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    def features(self, obs: Mapping[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        """Raw observation history -> condition vector (B, cond_dim); `target` uses the target encoder."""
        cfg = self.config
        batch = None
        normed = {}
        for key in sorted(cfg.obs_shapes):
            if key not in obs:
                raise KeyError(f"observation is missing key {key!r}; the critic observes {sorted(cfg.obs_shapes)}")
            x = torch.as_tensor(obs[key], device=self.device)
            shape = tuple(cfg.obs_shapes[key])
            if x.dim() != len(shape) + 2 or tuple(x.shape[2:]) != shape or x.shape[1] < cfg.n_obs_steps:
                raise ValueError(f"observation {key!r} must be (B, T >= {cfg.n_obs_steps}, {', '.join(map(str, shape))}), "
                                 f"got {tuple(x.shape)}")
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"observation {key!r} has batch size {x.shape[0]}, other keys have {batch}")
            batch = x.shape[0]
            normed[key] = self.normalizer.normalize(key, x[:, x.shape[1] - cfg.n_obs_steps:])
        return (self.target_encoder if target else self.encoder)(normed)

    def normalized_chunks(self, chunks: torch.Tensor, batch: int) -> torch.Tensor:
        cfg = self.config
        want = (cfg.action_steps, cfg.action_dim)
        if chunks.dim() != 4 or chunks.shape[0] != batch or tuple(chunks.shape[2:]) != want:
            raise ValueError(f"chunks must be (B, K, action_steps, action_dim) = ({batch}, K, {want[0]}, {want[1]}), "
                             f"got {tuple(chunks.shape)}")
        return self.normalizer.normalize("action", chunks.to(self.device, torch.float32))

    def q_heads(self, cond: torch.Tensor, chunks: torch.Tensor, target: bool = False) -> torch.Tensor:
        """cond (B, C), normalized chunks (B, K, h, A) -> both Q heads' values (B, K, 2)."""
        x = torch.cat([cond[:, None].expand(-1, chunks.shape[1], -1), chunks.flatten(2)], dim=-1)
        return torch.cat([net(x) for net in (self.target_q if target else self.q)], dim=-1)

    def q_values(self, obs: Mapping[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """min over the twin heads of Q(obs, chunk): (B, K) for raw chunks (B, K, h, A). Differentiable in the
        chunks when gradients are enabled (gradient guidance uses this)."""
        cond = self.features(obs)
        return self.q_heads(cond, self.normalized_chunks(chunks, cond.shape[0])).min(dim=-1).values

    def score(self, obs: Mapping[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """Higher is better: the Q value (steering's ChunkScorer interface)."""
        return self.q_values(obs, chunks)

    def value(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """V(obs): (B,)."""
        return self.v(self.features(obs)).squeeze(-1)

    @torch.no_grad()
    def update_target(self, rate: float | None = None) -> None:
        rate = self.config.target_update if rate is None else rate
        for online, target in ((self.encoder, self.target_encoder), (self.q, self.target_q)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.lerp_(p, rate)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch of `ChunkTransitions` and its parts for logging."""
        cfg = self.config
        cond = self.features(batch["obs"])
        chunks = self.normalized_chunks(batch["action"][:, None], cond.shape[0])
        q = self.q_heads(cond, chunks)[:, 0]  # (B, 2)
        v = self.v(cond).squeeze(-1)
        if cfg.method == "mc":
            ret = batch["returns"]
            q_loss = (q - ret[:, None]).square().mean(0).sum()
            v_loss = F.mse_loss(v, ret)
        else:
            with torch.no_grad():
                q_target = self.q_heads(self.features(batch["obs"], target=True), chunks, target=True)[:, 0].min(-1).values
                next_v = self.v(self.features(batch["next_obs"])).squeeze(-1)
                target = td_target(batch["r_chunk"], batch["done"], next_v, cfg.gamma, cfg.action_steps)
            q_loss = (q - target[:, None]).square().mean(0).sum()
            v_loss = expectile_loss(q_target - v, cfg.expectile)
        return q_loss + v_loss, {"q_loss": float(q_loss.detach()), "v_loss": float(v_loss.detach()),
                                 "q_mean": float(q.detach().mean())}


# ---------------------------------------------------------------------------------------------- training
def _configure(source: EpisodeStore | TaskConfig, config: CriticConfig,
               dataset_path: str | os.PathLike | None) -> tuple[EpisodeStore, CriticConfig]:
    if isinstance(source, TaskConfig):
        from robolearn.data.sources import open_task_store

        store = open_task_store(source, dataset_path, progress=False)
        if not config.obs_keys:
            config = dataclasses.replace(config, obs_keys=list(source.obs_keys), obs_sources=dict(source.obs_sources),
                                         action_key=source.action_key)
    elif isinstance(source, EpisodeStore):
        store = source
    else:
        raise TypeError(f"train_critic needs an EpisodeStore or a TaskConfig, got {type(source).__name__}")
    if not config.obs_keys:
        raise ValueError("CriticConfig.obs_keys is empty: name the observed keys (or train from a TaskConfig)")
    specs = store_obs_specs(store, config.obs_keys, config.obs_sources, reader="the critic")
    config = dataclasses.replace(config, obs_shapes={k: list(s.shape) for k, s in specs.items()},
                                 image_keys=[k for k, s in specs.items() if s.is_image],
                                 action_dim=action_dim_of(store, config.action_key))
    return store, config


def train_critic(source: EpisodeStore | TaskConfig, config: CriticConfig | None = None,
                 dataset_path: str | os.PathLike | None = None, progress: bool = False,
                 history: list[dict[str, float]] | None = None) -> Critic:
    """Train a critic on a store (or a task's dataset) and return it in eval mode.

    `history`, when given, receives a record of the mean losses every `config.log_every` steps.
    """
    store, cfg = _configure(source, config or CriticConfig(), dataset_path)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rewards = step_rewards(store, cfg.reward_source, cfg.reward_key)
    data = ChunkTransitions(store, cfg, rewards)
    critic = Critic(cfg)
    fit_from_stores(critic.normalizer, [store], cfg.obs_sources, cfg.action_key)
    critic.to(device)
    critic.update_target(1.0)  # targets start equal to the online heads
    params = [p for name, p in critic.named_parameters() if not name.startswith("target_")]
    fit_on_random_batches(critic, params, lambda rows: data.gather(rows, device), len(data), cfg, what="critic",
                          history=history, progress=progress, after_step=critic.update_target,
                          hint="lower lr or check the rewards")
    return critic.eval()


# ---------------------------------------------------------------------------------------------- checkpoints
def save_critic(critic: Critic, directory: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
    """`critic.safetensors` (weights, normalizer and target heads included) + `critic.json` (the config)."""
    return save_configured(KIND, critic, directory, info)


def load_critic(path: str | os.PathLike, device: str | torch.device | None = None) -> Critic:
    """Rebuild a critic from `save_critic`'s folder, in eval mode, on `device` (default: CUDA if present)."""
    return load_configured(KIND, Critic, CriticConfig, path, device)
