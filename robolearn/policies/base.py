"""The one interface every policy head implements, so training, evaluation and steering treat them alike.

Inputs are raw: `obs` maps each key to a tensor (B, n_obs_steps, *shape) — float32 low-dim values, uint8
images — and `batch["action"]` is (B, horizon, action_dim) in the task's units. Normalization happens inside
the policy with its own `Normalizer`, so a checkpoint is self-contained.
"""
from __future__ import annotations

import abc
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robolearn.data.normalizer import Normalizer
from robolearn.env import EnvSpec
from robolearn.nn.obs_encoder import ObsEncoder

MAX_STEPS = 1024  # frames of history / actions per chunk
MAX_WIDTH = 4096  # an action's size, an observation's size along any axis


@dataclass
class PolicyConfig:
    """Fields every head shares: what it sees, what it outputs, and how much of a chunk the loop executes."""

    obs_shapes: dict[str, list[int]] = field(default_factory=dict)  # per-step shape of each observed key
    image_keys: list[str] = field(default_factory=list)  # which of obs_shapes are uint8 HxWxC images
    action_dim: int = 2
    n_obs_steps: int = 2  # frames of observation history
    horizon: int = 16  # actions predicted per chunk (the chunk starts at the oldest observed step)
    n_action_steps: int = 8  # actions executed from each chunk before replanning
    # Image encoding (used only when image_keys is non-empty). The defaults are the encoder every image policy
    # had before these fields existed, so checkpoints written without them rebuild the same network.
    crop_ratio: float = 0.9  # crop side / image side: random crops while training, a centre crop at eval
    image_feature_dim: int = 64  # features per camera and frame
    n_keypoints: int = 32  # spatial-softmax keypoints per camera
    share_image_encoder: bool = False  # one trunk for all cameras (they must share a shape) instead of one each

    def __post_init__(self) -> None:
        # Bounds a real policy never reaches: a damaged or hostile checkpoint fails here, not in a 4 TB allocation.
        if not (1 <= self.n_obs_steps <= MAX_STEPS and 1 <= self.horizon <= MAX_STEPS and self.n_action_steps >= 1):
            raise ValueError(f"n_obs_steps ({self.n_obs_steps}), horizon ({self.horizon}) and n_action_steps "
                             f"({self.n_action_steps}) must be >= 1 and at most {MAX_STEPS}")
        if not 1 <= self.action_dim <= MAX_WIDTH:
            raise ValueError(f"action_dim must be between 1 and {MAX_WIDTH}, got {self.action_dim}")
        for key, shape in self.obs_shapes.items():
            if not all(1 <= d <= MAX_WIDTH for d in shape):
                raise ValueError(f"obs_shapes[{key!r}] must be sizes between 1 and {MAX_WIDTH}, got {shape}")
        unknown = sorted(set(self.image_keys) - set(self.obs_shapes))
        if unknown:
            raise ValueError(f"image_keys {unknown} are not in obs_shapes {sorted(self.obs_shapes)}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps = {self.n_obs_steps - 1 + self.n_action_steps} exceeds "
                f"horizon {self.horizon}: the executed actions must lie inside the predicted chunk"
            )
        if not 0.0 < self.crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must be in (0, 1], got {self.crop_ratio}")
        if self.image_feature_dim < 1 or self.n_keypoints < 1:
            raise ValueError(f"image_feature_dim ({self.image_feature_dim}) and n_keypoints ({self.n_keypoints}) "
                             f"must be >= 1")
        if not isinstance(self.share_image_encoder, bool):
            raise TypeError(f"share_image_encoder must be true or false, got {self.share_image_encoder!r}")

    @classmethod
    def for_spec(cls, spec: EnvSpec, obs_keys: list[str] | None = None, **kwargs) -> PolicyConfig:
        keys = obs_keys or list(spec.obs)
        return cls(
            obs_shapes={k: list(spec.obs[k].shape) for k in keys},
            image_keys=[k for k in keys if spec.obs[k].is_image],
            action_dim=spec.action_dim,
            **kwargs,
        )


class Policy(nn.Module, abc.ABC):
    config_class: type[PolicyConfig] = PolicyConfig

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        lowdim = {k: tuple(s) for k, s in config.obs_shapes.items() if k not in config.image_keys}
        lowdim["action"] = (config.action_dim,)
        self.normalizer = Normalizer(lowdim, image_keys=tuple(config.image_keys))
        if not config.obs_shapes:
            raise ValueError(f"{type(self).__name__} needs at least one observed key in config.obs_shapes")
        self.obs_encoder = ObsEncoder(config.obs_shapes, config.image_keys, config.n_obs_steps,
                                      crop_ratio=config.crop_ratio, feature_dim=config.image_feature_dim,
                                      n_keypoints=config.n_keypoints,
                                      share_image_encoder=config.share_image_encoder)

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device  # the normalizer always has buffers

    def check_obs(self, obs: Mapping[str, torch.Tensor]) -> int:
        """Raise a clear error unless every observed key is (B, n_obs_steps, *shape) with one B; return B."""
        cfg = self.config
        batch = -1  # unknown until the first key
        for key in sorted(cfg.obs_shapes):
            if key not in obs:
                raise KeyError(f"observation is missing key {key!r}; the policy observes {sorted(cfg.obs_shapes)}")
            want = (cfg.n_obs_steps, *cfg.obs_shapes[key])
            got = tuple(obs[key].shape)
            if len(got) != len(want) + 1 or got[1:] != want:
                raise ValueError(f"observation {key!r} must be (B, {', '.join(map(str, want))}) "
                                 f"= (B, n_obs_steps, *shape), got {got}")
            if batch >= 0 and got[0] != batch:
                raise ValueError(f"observation {key!r} has batch size {got[0]}, other keys have {batch}")
            batch = got[0]
        return batch

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations {key: (B, n_obs_steps, *shape)} -> condition vector (B, cond_dim)."""
        self.check_obs(obs)
        device = self.device
        # move first, convert after: uint8 images cross to the GPU at a quarter of the float32 size
        normed = {k: self.normalizer.normalize(k, obs[k].to(device, non_blocking=True)) for k in self.obs_encoder.keys}
        return self.obs_encoder(normed)

    def encode_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch -> (condition (B, cond_dim), normalized action chunk (B, horizon, action_dim))."""
        cond = self.encode_obs(batch["obs"])
        action: torch.Tensor = batch["action"]
        want = (cond.shape[0], self.config.horizon, self.config.action_dim)
        if tuple(action.shape) != want:
            raise ValueError(f"action must be (B, horizon, action_dim) = {want}, got {tuple(action.shape)}")
        return cond, self.normalizer.normalize("action", action.to(device=cond.device, dtype=torch.float32))

    @abc.abstractmethod
    def loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Training loss for a batch {"obs": {key: (B, To, ...)}, "action": (B, H, A)}."""

    @abc.abstractmethod
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n candidate action chunks per observation: (B, n, horizon, action_dim), in the task's units."""

    def nfe(self) -> int:
        """Network evaluations to produce one chunk with the config's sampler settings (heads override)."""
        return 1

    # ----- inference -----

    def compile_for_inference(self, enabled: bool = True) -> bool:
        """Batch-1 sampling from CUDA graphs: True when they are on.

        On a CUDA device, `act` and `infer_chunk` at batch 1 then replay the whole sampler as one CUDA graph
        (captured on first use per observation shape, sampler options and generator; same results as eager
        sampling from the same generator state). On the CPU (any non-CUDA device) this is a no-op that returns
        False: there is nothing to capture and eager sampling stays in use. `enabled=False` drops the graphs.
        Moving the policy to another device or replacing its weight tensors recaptures on the next call."""
        if not enabled or self.device.type != "cuda":
            self._graphed = None
            return False
        if getattr(self, "_graphed", None) is None:
            from robolearn.policies.cuda_graph import GraphedSampler  # CUDA-only machinery, loaded when used

            self._graphed = GraphedSampler(self)
        return True

    @property
    def inference_graphs(self):
        """The GraphedSampler in use (None: eager sampling)."""
        graphed = getattr(self, "_graphed", None)
        return graphed if graphed is not None and self.device.type == "cuda" else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_graphed", None)  # captured graphs belong to this object's memory: a copy recaptures
        return state

    @torch.no_grad()
    def infer_chunk(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """One chunk per observation, (B, horizon, action_dim) on the policy's device: `sample(obs, n=1)`,
        replayed from a CUDA graph at batch 1 when `compile_for_inference` is on."""
        graphed = self.inference_graphs
        if graphed is not None and self.check_obs(obs) == 1:
            return graphed.sample(obs, n=1, generator=generator)[:, 0]
        return self.sample(obs, n=1, generator=generator)[:, 0]

    def obs_tensors(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """The observed keys of `obs` as tensors on the policy's device (other keys are dropped)."""
        return {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, device=self.device)
                for k, v in obs.items() if k in self.config.obs_shapes}

    def executed_actions(self, chunk: torch.Tensor) -> np.ndarray:
        """The part of chunks (B, horizon, action_dim) the loop executes: (B, n_action_steps, action_dim) numpy."""
        start = self.config.n_obs_steps - 1
        return chunk[:, start:start + self.config.n_action_steps].float().cpu().numpy()

    @torch.no_grad()
    def act(self, obs: Mapping[str, np.ndarray | torch.Tensor],
            generator: torch.Generator | None = None) -> np.ndarray:
        """The actions the loop executes next: (B, n_action_steps, action_dim) as float32 numpy."""
        return self.executed_actions(self.infer_chunk(self.obs_tensors(obs), generator=generator))

    def act_with_energy(self, obs: Mapping[str, np.ndarray | torch.Tensor],
                        generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """`act`, plus the energy of each observation's decision (B,) for heads that have one (None here):
        the control loop records it and an EnergyGate can act on it."""
        return self.act(obs, generator), None
