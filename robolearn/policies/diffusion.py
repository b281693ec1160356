"""Diffusion Policy head (Chi et al. 2023): a conditional 1-D UNet or transformer denoises whole action chunks.

Training regresses the noise added to normalized action chunks at random diffusion steps; sampling runs a
diffusers DDIM or DDPM loop from Gaussian noise. `initial_noise` and `denoise_step` are separate methods,
and `sample` accepts the starting noise and a `guidance` hook whose correction is added after every denoising
step, so guidance (robolearn.eval.steering) acts inside this loop rather than in a copy of it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from robolearn.policies.backbone import BackboneConfig, BackbonePolicy

_SCHEDULERS = ("ddim", "ddpm")
_PREDICTION_TYPES = ("epsilon", "sample")


@dataclass
class DiffusionConfig(BackboneConfig):
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"  # what the backbone predicts: the added noise or the clean chunk
    clip_sample: bool = True  # keep predicted clean chunks inside the normalized [-1, 1] range
    scheduler: str = "ddim"  # sampler `sample` uses by default: "ddim" or "ddpm"
    num_inference_steps: int = 10  # DDIM steps; DDPM runs all num_train_timesteps

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scheduler not in _SCHEDULERS:
            raise ValueError(f"scheduler must be one of {_SCHEDULERS}, got {self.scheduler!r}")
        if self.prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {_PREDICTION_TYPES}, got {self.prediction_type!r}")
        if not 1 <= self.num_train_timesteps <= 10_000:
            raise ValueError(f"num_train_timesteps must be between 1 and 10000, got {self.num_train_timesteps}")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps ({self.num_inference_steps}) must be in "
                             f"[1, num_train_timesteps={self.num_train_timesteps}]")


class DiffusionPolicy(BackbonePolicy):
    config_class = DiffusionConfig
    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        common = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
                  "clip_sample": config.clip_sample, "prediction_type": config.prediction_type}
        self.schedulers: dict[str, SchedulerMixin] = {
            "ddpm": DDPMScheduler(variance_type="fixed_small", **common),
            "ddim": DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common),
        }

    # ----- training -----

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        cfg = self.config
        cond, clean = self.encode_batch(batch)
        b = clean.shape[0]
        noise = torch.randn_like(clean)
        t = torch.randint(0, cfg.num_train_timesteps, (b,), device=clean.device)
        noisy = self.schedulers["ddpm"].add_noise(clean, noise, t)
        pred = self.backbone(noisy, t, cond)
        target = noise if cfg.prediction_type == "epsilon" else clean
        return F.mse_loss(pred, target)

    # ----- sampling -----

    def _scheduler(self, scheduler: str | SchedulerMixin | None,
                   num_inference_steps: int | None) -> SchedulerMixin:
        """The scheduler to sample with, its timesteps set for this call."""
        name = self.config.scheduler if scheduler is None else scheduler
        if isinstance(name, str):
            if name not in self.schedulers:
                raise ValueError(f"scheduler must be one of {_SCHEDULERS} or a diffusers scheduler, got {name!r}")
            sched = self.schedulers[name]
            if num_inference_steps is None:
                num_inference_steps = (self.config.num_inference_steps if name == "ddim"
                                       else self.config.num_train_timesteps)
        else:
            sched = name
            num_inference_steps = num_inference_steps or self.config.num_inference_steps
        # Timesteps stay on the host: the scheduler's per-step coefficients are then host scalars and no step reads
        # a value back from the GPU (no sync per step, and the whole loop can be captured in a CUDA graph).
        sched.set_timesteps(num_inference_steps)
        return sched

    def nfe(self, scheduler: str | SchedulerMixin | None = None, num_inference_steps: int | None = None) -> int:
        """Backbone evaluations to sample one chunk (a whole batch of chunks shares them)."""
        return len(self._scheduler(scheduler, num_inference_steps).timesteps)

    def initial_noise(self, batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Starting point of the reverse process: (batch, n, horizon, action_dim) standard normal."""
        shape = (batch, n, self.config.horizon, self.config.action_dim)
        return torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)

    def denoise_step(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, scheduler: SchedulerMixin,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step on flat chunks x (N, horizon, action_dim) with condition (N, cond_dim)."""
        if torch.is_tensor(t) and t.device == x.device:
            steps = t.expand(x.shape[0])
        else:  # a host step number: filled on the device (a copy from the host could not be graph-captured)
            steps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        model_out = self.backbone(x, steps, cond)
        return scheduler.step(model_out, t, x, generator=generator).prev_sample

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               scheduler: str | SchedulerMixin | None = None, num_inference_steps: int | None = None,
               noise: torch.Tensor | None = None,
               guidance: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
        """n chunks per observation, (B, n, horizon, action_dim) in task units.

        `guidance(x, dt) -> delta`: after every denoising step, x (the flat normalized chunks, (B * n, horizon,
        action_dim), row i * n + j being candidate j of observation i) becomes x + delta, before the final clip.
        dt = 1 / (steps in this pass) is the share of the pass the step stands for, so a guide that returns
        dt * g pushes by g in total whether it runs 10 DDIM or 100 DDPM steps. None leaves sampling unchanged.
        """
        cfg = self.config
        cond = self.encode_obs(obs)
        b = cond.shape[0]
        if noise is None:
            noise = self.initial_noise(b, n, generator)
        elif tuple(noise.shape) != (b, n, cfg.horizon, cfg.action_dim):
            raise ValueError(f"noise must be (B, n, horizon, action_dim) = "
                             f"{(b, n, cfg.horizon, cfg.action_dim)}, got {tuple(noise.shape)}")
        sched = self._scheduler(scheduler, num_inference_steps)
        cond = cond[:, None].expand(b, n, cond.shape[-1]).reshape(b * n, -1)  # row i*n + j: candidate j of obs i
        x = noise.to(device=cond.device, dtype=torch.float32).reshape(b * n, cfg.horizon, cfg.action_dim)
        dt = 1.0 / len(sched.timesteps)
        for t in sched.timesteps:
            x = self.denoise_step(x, t, cond, sched, generator)
            if guidance is not None:
                x = x + guidance(x, dt)
        if cfg.clip_sample:
            x = x.clamp(-1.0, 1.0)
        return self.normalizer.unnormalize("action", x).reshape(b, n, cfg.horizon, cfg.action_dim)
