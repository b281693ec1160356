"""A latent world model learned from episode stores: encoder, one-step latent dynamics, decoder, reward and success.

    z_t = enc(o_t)      z_{t+1} = z_t + f(z_t, a_t)      o_t ~ dec(z_t)      r_t = R(z_t, a_t)      P(success) = S(z_t, a_t)

Low-dim observations go through an MLP; each camera through a small strided conv encoder, and a transposed-conv
decoder draws it back, so imagined rollouts can be watched. The dynamics take one action per step (one control
period), not a chunk: an imagined env then steps exactly like a simulator, and any chunking policy runs in it
through the ordinary control loop. Reward and success are predicted from the (latent, action) pair of a step,
because that is what a store records: the reward of an action, and success on the last action of a successful
episode (there is no observation after it).

Training unrolls the dynamics `rollout_steps` steps from the encoding of a real observation, with per-step weights
rho^k (Hansen et al., TD-MPC2, use the same schedule). The losses and why each is there:
* reconstruction, dec(enc(o)) ~ o: grounds the latent in the observation and rules out the collapse a purely
  self-predictive objective allows;
* latent consistency, z_hat_{t+k} ~ stopgrad(enc(o_{t+k})): keeps imagined latents on the encoder's manifold, so
  long rollouts do not drift into regions the decoder and heads never saw (TD-MPC2's main loss);
* multi-step prediction, dec(z_hat_{t+k}) ~ o_{t+k}: what an imagined env is judged on, the error of decoded
  rollouts, trained directly;
* reward (MSE) and success (binary cross-entropy) on imagined latents, as they are used at imagination time.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robolearn.data.normalizer import Normalizer, fit_from_stores
from robolearn.data.obs_source import action_dim_of, parse_obs_sources, resolve_obs_keys, store_obs_specs
from robolearn.data.store import EpisodeStore
from robolearn.device import resolve_device
from robolearn.env import ArraySpec, EnvSpec
from robolearn.models.critic import step_rewards
from robolearn.nn.checkpoint_folder import CheckpointKind, load_configured, save_configured
from robolearn.nn.mlp import ACTIVATIONS, check_mlp, mlp_layers
from robolearn.train.loop import check_fit_settings, fit_on_random_batches

KIND = CheckpointKind(what="world model", format="robolearn.world_model", version=1, weights="world_model.safetensors",
                      config="world_model.json")
_REWARD_SOURCES = ("auto", "reward", "success", "none")
_SUCCESS_SOURCES = ("metadata", "none")


@dataclass
class WorldModelConfig:
    obs_keys: list[str] = field(default_factory=list)  # what the model sees and predicts (a task's obs keys)
    obs_sources: dict[str, str] = field(default_factory=dict)  # obs key <- "store_key[a:b]", as in TaskConfig
    action_key: str = "action"
    reward_source: str = "auto"  # "reward" key, "success" metadata (1 on the last step), "auto": either; "none"
    reward_key: str = "reward"
    success_source: str = "metadata"  # episode metadata `success`, or "none" (the imagined env never succeeds)
    latent_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "mish"
    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # stride-2 conv stages per camera
    image_feature_dim: int = 128
    rollout_steps: int = 5  # latent steps unrolled per training sequence
    rho: float = 0.9  # weight of the k-th unrolled step: rho^k
    reconstruction_weight: float = 1.0
    consistency_weight: float = 1.0
    prediction_weight: float = 1.0
    reward_weight: float = 1.0
    success_weight: float = 1.0
    success_threshold: float = 0.5  # an imagined step succeeds (and ends the episode) when P(success) >= this
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    # filled in from the data by train_world_model (max_episode_steps: the longest training episode):
    obs_shapes: dict[str, list[int]] = field(default_factory=dict)
    image_keys: list[str] = field(default_factory=list)
    action_dim: int = 0
    control_hz: float = 10.0
    max_episode_steps: int = 300

    def __post_init__(self) -> None:
        self.hidden = check_mlp(self.hidden, self.activation)
        if self.reward_source not in _REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {_REWARD_SOURCES}, got {self.reward_source!r}")
        if self.success_source not in _SUCCESS_SOURCES:
            raise ValueError(f"success_source must be one of {_SUCCESS_SOURCES}, got {self.success_source!r}")
        if self.latent_dim < 1 or self.rollout_steps < 1 or self.image_feature_dim < 1:
            raise ValueError(f"latent_dim ({self.latent_dim}), rollout_steps ({self.rollout_steps}) and "
                             f"image_feature_dim ({self.image_feature_dim}) must be >= 1")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError(f"conv_channels must list at least one positive width, got {self.conv_channels}")
        if not 0.0 < self.rho <= 1.0 or not 0.0 < self.success_threshold < 1.0:
            raise ValueError(f"rho ({self.rho}) must be in (0, 1] and success_threshold ({self.success_threshold}) "
                             f"in (0, 1)")
        check_fit_settings(self)
        self.obs_keys = resolve_obs_keys(self.obs_keys, self.obs_shapes, self.obs_sources)


# ---------------------------------------------------------------------------------------------- networks
def _mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str) -> nn.Sequential:
    return nn.Sequential(*mlp_layers([in_dim, *hidden], activation), nn.Linear(hidden[-1], out_dim))


class ConvEncoder(nn.Module):
    """(B, H, W, C) image in [-1, 1] -> (B, feature_dim): stride-2 4x4 convolutions, then a linear map."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], feature_dim: int, activation: str):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = shape[2]
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), ACTIVATIONS[activation]()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            self.map_shape = tuple(self.conv(torch.zeros(1, shape[2], shape[0], shape[1])).shape[1:])
        if min(self.map_shape[1:]) < 1:
            raise ValueError(f"image shape {list(shape)} is too small for {len(channels)} stride-2 stages")
        self.proj = nn.Linear(math.prod(self.map_shape), feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(images.permute(0, 3, 1, 2)).flatten(1))


class ConvDecoder(nn.Module):
    """(B, latent) -> (B, H, W, C) image in about [-1, 1]: the encoder's stages mirrored with transposed convs,
    resized to (H, W) when the strides do not divide the image size."""

    def __init__(self, latent_dim: int, shape: Sequence[int], channels: Sequence[int], map_shape: Sequence[int],
                 activation: str):
        super().__init__()
        self.map_shape = tuple(map_shape)
        self.out_hw = (int(shape[0]), int(shape[1]))
        self.proj = nn.Sequential(nn.Linear(latent_dim, math.prod(map_shape)), ACTIVATIONS[activation]())
        widths = [*reversed(channels), int(shape[2])]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.deconv(self.proj(z).reshape(-1, *self.map_shape))
        if tuple(x.shape[-2:]) != self.out_hw:
            x = F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=False)
        return x.permute(0, 2, 3, 1)


class WorldModel(nn.Module):
    """See the module docstring. Observations are raw {key: (B, *shape)}; actions raw (B, action_dim)."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        if not config.obs_shapes or config.action_dim < 1:
            raise ValueError("a WorldModel needs config.obs_shapes and action_dim >= 1 (train_world_model fills them "
                             "in from the store)")
        self.config = config
        unknown = sorted(set(config.image_keys) - set(config.obs_shapes))
        if unknown:
            raise ValueError(f"image_keys {unknown} are not observed keys {sorted(config.obs_shapes)}")
        self.lowdim_keys = [k for k in sorted(config.obs_shapes) if k not in config.image_keys]
        self.image_keys = sorted(config.image_keys)
        lowdim = {k: tuple(config.obs_shapes[k]) for k in self.lowdim_keys}
        self.lowdim_sizes = [math.prod(s) for s in lowdim.values()]
        self.normalizer = Normalizer({**lowdim, "action": (config.action_dim,)}, image_keys=tuple(self.image_keys))
        act, hidden, latent, a_dim = config.activation, config.hidden, config.latent_dim, config.action_dim
        self.image_encoders = nn.ModuleDict()
        self.image_decoders = nn.ModuleDict()
        for key in self.image_keys:
            shape = config.obs_shapes[key]
            if len(shape) != 3:
                raise ValueError(f"image key {key!r} must have shape (H, W, C), got {shape}")
            enc = ConvEncoder(shape, config.conv_channels, config.image_feature_dim, act)
            self.image_encoders[key.replace(".", "__")] = enc
            self.image_decoders[key.replace(".", "__")] = ConvDecoder(latent, shape, config.conv_channels, enc.map_shape, act)
        enc_in = sum(self.lowdim_sizes) + config.image_feature_dim * len(self.image_keys)
        self.encoder = _mlp(enc_in, hidden, latent, act)
        self.decoder = _mlp(latent, hidden, sum(self.lowdim_sizes), act) if self.lowdim_keys else None
        self.dynamics = _mlp(latent + a_dim, hidden, latent, act)
        self.reward_head = _mlp(latent + a_dim, hidden, 1, act)
        self.success_head = _mlp(latent + a_dim, hidden, 1, act)

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    # ----- observations <-> latents
    def normalize_obs(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Raw {key: (B, *shape)} (numpy or torch) -> normalized float tensors on the model's device."""
        out = {}
        for key, shape in self.config.obs_shapes.items():
            if key not in obs:
                raise KeyError(f"observation is missing key {key!r}; the world model observes {sorted(self.config.obs_shapes)}")
            x = torch.as_tensor(np.asarray(obs[key]) if not torch.is_tensor(obs[key]) else obs[key], device=self.device)
            if tuple(x.shape[1:]) != tuple(shape):
                raise ValueError(f"observation {key!r} must be (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
            out[key] = self.normalizer.normalize(key, x)
        return out

    def encode_normalized(self, normed: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [normed[k].flatten(1) for k in self.lowdim_keys]
        parts += [self.image_encoders[k.replace(".", "__")](normed[k]) for k in self.image_keys]
        return self.encoder(torch.cat(parts, dim=-1))

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Raw observations (B, *shape) per key -> latents (B, latent_dim)."""
        return self.encode_normalized(self.normalize_obs(obs))

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents -> normalized observations {key: (B, *shape)} (images in about [-1, 1])."""
        out: dict[str, torch.Tensor] = {}
        if self.decoder is not None:
            flat = self.decoder(z)
            for key, part in zip(self.lowdim_keys, flat.split(self.lowdim_sizes, dim=-1)):
                out[key] = part.reshape(-1, *self.config.obs_shapes[key])
        for key in self.image_keys:
            out[key] = self.image_decoders[key.replace(".", "__")](z)
        return out

    def to_raw(self, normed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalized predictions -> the task's units and dtypes: float32 low-dim values, uint8 images."""
        out = {}
        for key, x in normed.items():
            raw = self.normalizer.unnormalize(key, x)
            out[key] = raw.round().clamp(0, 255).to(torch.uint8) if key in self.image_keys else raw.float()
        return out

    # ----- one step
    def transition(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_t, raw a_t (B, action_dim)) -> (z_{t+1}, reward (B,), success logit (B,))."""
        if action.dim() != 2 or action.shape[1] != self.config.action_dim:
            raise ValueError(f"actions must be (B, action_dim={self.config.action_dim}), got {tuple(action.shape)}")
        x = torch.cat([z, self.normalizer.normalize("action", action.to(z.device))], dim=-1)
        return z + self.dynamics(x), self.reward_head(x).squeeze(-1), self.success_head(x).squeeze(-1)

    @torch.no_grad()
    def imagine(self, obs: Mapping[str, Any], actions: torch.Tensor) -> dict[str, Any]:
        """Open-loop rollout from real observations (B, *shape) under actions (B, T, action_dim): predicted raw
        observations {key: (B, T, *shape)} after each action, rewards (B, T) and success probabilities (B, T)."""
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        z = self.encode(obs)
        frames: dict[str, list[torch.Tensor]] = {k: [] for k in self.config.obs_shapes}
        rewards, success = [], []
        for t in range(actions.shape[1]):
            z, reward, logit = self.transition(z, actions[:, t])
            for key, value in self.to_raw(self.decode(z)).items():
                frames[key].append(value)
            rewards.append(reward)
            success.append(torch.sigmoid(logit))
        return {"obs": {k: torch.stack(v, dim=1) for k, v in frames.items()},
                "reward": torch.stack(rewards, dim=1), "success": torch.stack(success, dim=1)}

    def env_spec(self, name: str = "imagined") -> EnvSpec:
        """The observations and actions of this model as an EnvSpec (action bounds: the training data's range)."""
        cfg = self.config
        obs = {k: ArraySpec(tuple(s), "uint8" if k in self.image_keys else "float32") for k, s in cfg.obs_shapes.items()}
        with torch.no_grad():
            low, high = self.normalizer.unnormalize("action", torch.tensor([-1.0, 1.0], device=self.device)[:, None])
        return EnvSpec(name=name, obs=obs, action_dim=cfg.action_dim, control_hz=cfg.control_hz,
                       action_meaning="as in the data the world model was trained on",
                       action_low=tuple(low.tolist()), action_high=tuple(high.tolist()),
                       max_episode_steps=cfg.max_episode_steps)

    # ----- training
    def _obs_error(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample squared error, averaged over each key's values, then over keys: (B,)."""
        errors = [(pred[k] - target[k]).square().flatten(1).mean(1) for k in self.config.obs_shapes]
        return torch.stack(errors).mean(0)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch of sequences: obs {key: (B, T+1, *shape)}, valid (B, T+1), action (B, T, A), reward and success (B, T)."""
        cfg = self.config
        action = batch["action"]
        b, t_len = action.shape[:2]
        normed = {k: self.normalizer.normalize(k, v.flatten(0, 1)) for k, v in batch["obs"].items()}
        z_all = self.encode_normalized(normed).reshape(b, t_len + 1, -1)
        valid = batch["valid"].float()

        def masked(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (per_sample * mask).sum() / mask.sum().clamp(min=1.0)

        recon = masked(self._obs_error(self.decode(z_all.flatten(0, 1)), normed), valid.flatten())
        a_norm = self.normalizer.normalize("action", action)
        z, before, after = z_all[:, 0], [], []
        for k in range(t_len):  # only the dynamics are sequential; everything else runs on all steps at once
            before.append(z)
            z = z + self.dynamics(torch.cat([z, a_norm[:, k]], dim=-1))
            after.append(z)
        z_in, z_out = torch.stack(before, dim=1), torch.stack(after, dim=1)  # (B, T, latent)
        heads_in = torch.cat([z_in, a_norm], dim=-1)
        r_pred, s_logit = self.reward_head(heads_in).squeeze(-1), self.success_head(heads_in).squeeze(-1)
        w = z.new_tensor([cfg.rho ** k for k in range(t_len)])
        w = w / w.sum()
        mask = valid[:, 1:] * w  # (B, T): step weights, missing final observations dropped
        norm = mask.sum().clamp(min=1e-8)
        consistency = ((z_out - z_all[:, 1:].detach()).square().mean(-1) * mask).sum() / norm
        targets = {k: v.reshape(b, t_len + 1, *v.shape[1:])[:, 1:].flatten(0, 1) for k, v in normed.items()}
        prediction = (self._obs_error(self.decode(z_out.flatten(0, 1)), targets).reshape(b, t_len) * mask).sum() / norm
        reward = (F.mse_loss(r_pred, batch["reward"], reduction="none") * w).sum(1).mean()
        success = (F.binary_cross_entropy_with_logits(s_logit, batch["success"], reduction="none") * w).sum(1).mean()
        parts = {"reconstruction": recon, "consistency": consistency, "prediction": prediction, "reward": reward,
                 "success": success}
        weights = {"reconstruction": cfg.reconstruction_weight, "consistency": cfg.consistency_weight,
                   "prediction": cfg.prediction_weight,
                   "reward": cfg.reward_weight if cfg.reward_source != "none" else 0.0,
                   "success": cfg.success_weight if cfg.success_source != "none" else 0.0}
        total = sum(weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}


# ---------------------------------------------------------------------------------------------- data
class Sequences:
    """Every run of `rollout_steps` consecutive transitions inside one episode, across stores, held in RAM.

    A sequence may end on an episode's last action: its final observation does not exist and is masked out
    (`valid`), while that action's reward and success label still train the heads.
    """

    def __init__(self, stores: Sequence[EpisodeStore], config: WorldModelConfig):
        t_len = config.rollout_steps
        sources = parse_obs_sources(config.obs_keys, config.obs_sources)
        obs: dict[str, list[np.ndarray]] = {k: [] for k in config.obs_keys}
        actions, rewards, success, starts, ends = [], [], [], [], []
        offset = 0
        for store in stores:
            if store.n_episodes == 0:
                raise ValueError(f"store {store.path} has no episodes")
            raw = {key: store.read(key) for key in {s.key for s in sources.values()}}
            for key, source in sources.items():
                obs[key].append(source.apply(raw[source.key]))
            actions.append(store.read(config.action_key).astype(np.float32))
            rewards.append(np.zeros(store.n_steps, np.float32) if config.reward_source == "none"
                           else step_rewards(store, config.reward_source, config.reward_key))
            success.append(np.zeros(store.n_steps, np.float32) if config.success_source == "none"
                           else self._success_labels(store))
            begin = 0
            for end in store.episode_ends:
                if end - begin >= t_len:
                    s = np.arange(begin, end - t_len + 1)
                    starts.append(s + offset)
                    ends.append(np.full_like(s, end + offset))
                begin = end
            offset += store.n_steps
        if not starts:
            raise ValueError(f"no episode has rollout_steps={t_len} steps; lower rollout_steps")
        self.obs = {k: np.concatenate(v) for k, v in obs.items()}
        self.actions, self.rewards = np.concatenate(actions), np.concatenate(rewards)
        self.success = np.concatenate(success)
        self.starts, self.ends = np.concatenate(starts), np.concatenate(ends)
        self.rollout_steps = t_len

    @staticmethod
    def _success_labels(store: EpisodeStore) -> np.ndarray:
        unlabeled = [i for i in range(store.n_episodes) if "success" not in store.episode_meta(i)]
        if unlabeled:
            raise ValueError(f"episodes {unlabeled[:10]} of {store.path} have no 'success' in their metadata; label "
                             f"them, or set success_source='none' (the imagined env then never reports success)")
        return step_rewards(store, "success")  # 1 on the last step of each successful episode

    def __len__(self) -> int:
        return len(self.starts)

    def gather(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, Any]:
        s, e = self.starts[idx], self.ends[idx]
        rows = s[:, None] + np.arange(self.rollout_steps + 1)
        valid = rows < e[:, None]
        rows = np.minimum(rows, e[:, None] - 1)
        steps = s[:, None] + np.arange(self.rollout_steps)

        def tensor(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(device)

        return {"obs": {k: tensor(v[rows]) for k, v in self.obs.items()}, "valid": tensor(valid),
                "action": tensor(self.actions[steps]), "reward": tensor(self.rewards[steps]),
                "success": tensor(self.success[steps])}


def train_world_model(stores: EpisodeStore | Sequence[EpisodeStore], config: WorldModelConfig | None = None,
                      progress: bool = False, history: list[dict[str, float]] | None = None) -> WorldModel:
    """Train on one store or several (demonstrations and recorded rollouts alike); returns the model in eval mode.

    `history`, when given, receives the mean of each loss term every `config.log_every` steps.
    """
    stores = [stores] if isinstance(stores, EpisodeStore) else list(stores)
    cfg = config or WorldModelConfig()
    if not stores:
        raise ValueError("train_world_model needs at least one EpisodeStore")
    if not cfg.obs_keys:
        raise ValueError("WorldModelConfig.obs_keys is empty: name the observed keys (e.g. a task's obs_keys)")
    specs = store_obs_specs(stores[0], cfg.obs_keys, cfg.obs_sources, reader="the world model")
    for store in stores:
        other = store_obs_specs(store, cfg.obs_keys, cfg.obs_sources, reader="the world model")
        if other != specs or store.specs.get(cfg.action_key) != stores[0].specs.get(cfg.action_key):
            raise ValueError(f"store {store.path} holds different observation or action shapes than {stores[0].path}")
    cfg = dataclasses.replace(
        cfg, obs_shapes={k: list(s.shape) for k, s in specs.items()}, image_keys=[k for k, s in specs.items() if s.is_image],
        action_dim=action_dim_of(stores[0], cfg.action_key), control_hz=float(stores[0].fps or cfg.control_hz),
        max_episode_steps=int(max(s.episode_lengths.max() for s in stores)))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = Sequences(stores, cfg)
    model = WorldModel(cfg)
    fit_from_stores(model.normalizer, stores, cfg.obs_sources, cfg.action_key)
    model.to(device)
    fit_on_random_batches(model, model.parameters(), lambda rows: data.gather(rows, device), len(data), cfg,
                          what="world model", history=history, progress=progress, grad_clip=cfg.grad_clip)
    return model.eval()


# ---------------------------------------------------------------------------------------------- checkpoints
def save_world_model(model: WorldModel, directory: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
    """`world_model.safetensors` (weights and normalizer) + `world_model.json` (the config that rebuilds it)."""
    return save_configured(KIND, model, directory, info)


def load_world_model(path: str | os.PathLike, device: str | torch.device | None = None) -> WorldModel:
    """Rebuild a world model from `save_world_model`'s folder, in eval mode (default device: CUDA if present)."""
    return load_configured(KIND, WorldModel, WorldModelConfig, path, device)
