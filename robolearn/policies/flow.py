"""Flow-matching head (rectified flow, as in pi0) with an optional shortcut objective for few-step sampling.

Time runs from t=0 (Gaussian noise) to t=1 (the normalized action chunk): x_t = (1 - t) * noise + t * action,
and the backbone regresses the straight-line velocity action - noise. Sampling integrates dx/dt = v(x, t) from noise
with Euler or midpoint steps; the step count is a per-call argument, so speed is traded for accuracy without
retraining. `initial_noise`, `velocity` and `integrate_step` are public, and `sample` takes a `guidance` hook
whose correction is added after every integration step (robolearn.eval.steering uses it).

Shortcut models (Frans et al. 2024): the network also sees a step size d and learns s(x, t, d), the average
velocity over [t, t + d], so one large step lands where many small ones would. Training mixes
  (a) flow matching at the finest level (every d <= 1/shortcut_max_steps, d = 0 included, shares one embedding),
  (b) self-consistency on `shortcut_fraction` of each batch: s(x_t, t, 2h) is regressed onto the mean velocity
      of two consecutive h-steps taken by the model itself, under stop-gradient.
The backbone embeds a single scalar (the time), so d enters through its global condition instead: a
sinusoidal embedding of log2(1/d) and a small MLP, concatenated to the observation features (FiLM in every UNet
block, condition tokens of the transformer). With `sample(steps=k)` the model is asked for d = 1/k; powers of
two up to shortcut_max_steps are the trained step sizes, other counts interpolate between neighbouring levels.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.nn.unet1d import SinusoidalPosEmb
from robolearn.policies.backbone import BackboneConfig, BackbonePolicy

_TIME_SAMPLINGS = ("uniform", "beta")
_INTEGRATORS = ("euler", "midpoint")
_TIME_SCALE = 1000.0  # t in [0, 1] reaches the backbone's sinusoidal time embedding as ~[0, 1000), like DDPM steps
_BETA_A = 1.5  # pi0's u ~ Beta(1.5, 1); t = time_cutoff * (1 - u) puts more training weight on noisy times


@dataclass
class FlowConfig(BackboneConfig):
    time_sampling: str = "beta"  # training times: "beta" (pi0, favours noisy t) or "uniform"
    time_cutoff: float = 0.999  # pi0's s: beta-sampled times stay in [0, time_cutoff]
    clip_sample: bool = True  # clamp the final chunk to the normalized [-1, 1] range
    integrator: str = "euler"  # default ODE integrator of `sample`: "euler" or "midpoint"
    num_inference_steps: int = 10  # default integration steps of `sample`
    shortcut: bool = True  # condition on the step size and train the shortcut self-consistency objective
    shortcut_fraction: float = 0.25  # share of each batch trained on self-consistency targets
    shortcut_max_steps: int = 128  # the finest trained step size is 1 / shortcut_max_steps (a power of two)
    step_size_embed_dim: int = 32  # width of the step-size features appended to the condition

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_sampling not in _TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {_TIME_SAMPLINGS}, got {self.time_sampling!r}")
        if self.integrator not in _INTEGRATORS:
            raise ValueError(f"integrator must be one of {_INTEGRATORS}, got {self.integrator!r}")
        if not 0.0 < self.time_cutoff <= 1.0:
            raise ValueError(f"time_cutoff must be in (0, 1], got {self.time_cutoff}")
        if not 1 <= self.num_inference_steps <= 10_000:
            raise ValueError(f"num_inference_steps must be between 1 and 10000, got {self.num_inference_steps}")
        if not 0.0 <= self.shortcut_fraction < 1.0:
            raise ValueError(f"shortcut_fraction must be in [0, 1) so some rows keep the flow-matching loss, "
                             f"got {self.shortcut_fraction}")
        m = self.shortcut_max_steps
        if m < 2 or m & (m - 1):
            raise ValueError(f"shortcut_max_steps must be a power of two >= 2, got {m}")
        if self.step_size_embed_dim < 4 or self.step_size_embed_dim % 2:
            raise ValueError(f"step_size_embed_dim must be even and >= 4, got {self.step_size_embed_dim}")


def _on_device(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A time or step size, scalar or (N,), as float32 (N,) on x's device. Python numbers are filled on the device:
    a copy from the host would block, and could not be captured in a CUDA graph."""
    n = x.shape[0]
    if torch.is_tensor(value):
        return value.to(device=x.device, dtype=torch.float32).reshape(-1).expand(n)
    return torch.full((n,), float(value), device=x.device, dtype=torch.float32)


class FlowMatchingPolicy(BackbonePolicy):
    config_class = FlowConfig
    config: FlowConfig

    def __init__(self, config: FlowConfig):
        e = config.step_size_embed_dim
        super().__init__(config, extra_cond_dim=e if config.shortcut else 0)
        self.max_level = int(math.log2(config.shortcut_max_steps))  # d = 2 ** -level, level in [0, max_level]
        self.step_size_encoder = (nn.Sequential(SinusoidalPosEmb(e), nn.Linear(e, e), nn.Mish(), nn.Linear(e, e))
                                  if config.shortcut else None)

    # ----- the vector field -----

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor,
                 d: torch.Tensor | float | None = None) -> torch.Tensor:
        """Velocity at normalized chunks x (N, horizon, action_dim) and times t in [0, 1] (scalar or (N,)),
        given observation features cond (N, cond_dim). With shortcut on it is the average velocity over a step
        of size d (scalar or (N,)); None or 0 asks for the finest level, i.e. the instantaneous flow."""
        t = _on_device(t, x)
        if self.step_size_encoder is not None:
            d = _on_device(0.0 if d is None else d, x)
            level = -torch.log2(d.clamp(2.0 ** -self.max_level, 1.0))  # 0 for d = 1 ... max_level for d -> 0
            cond = torch.cat([cond, self.step_size_encoder(level)], dim=-1)
        return self.backbone(x, t * _TIME_SCALE, cond)

    def integrate_step(self, x: torch.Tensor, t: float, dt: float, cond: torch.Tensor,
                       integrator: str | None = None) -> torch.Tensor:
        """Advance chunks x (N, horizon, action_dim) from time t to t + dt.

        Every network call is conditioned on the step it is used for: Euler on dt, midpoint on its dt / 2
        half-steps (in the flow limit this is the classical midpoint rule). Shortcut targets are built from
        Euler steps, so few-step shortcut sampling is meant for Euler; midpoint suits many-step flow sampling.
        """
        if self._integrator(integrator) == "euler":
            return x + dt * self.velocity(x, t, cond, dt)
        half = dt / 2
        mid = x + half * self.velocity(x, t, cond, half)
        return x + dt * self.velocity(mid, t + half, cond, half)

    # ----- training -----

    def sample_time(self, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times (b,) in [0, 1]: uniform, or pi0's t = time_cutoff * (1 - u) with u ~ Beta(1.5, 1).

        The beta law has density rising towards t = 0, the noisy end where the velocity is hardest to predict
        (near t = 1 the input already is nearly the answer). Beta(a, 1) has CDF u ** a, so u = r ** (1 / a)
        draws it exactly from a uniform r, and the optional generator covers both laws.
        """
        r = torch.rand(b, generator=generator, device=self.device)
        if self.config.time_sampling == "uniform":
            return r
        return self.config.time_cutoff * (1.0 - r.pow(1.0 / _BETA_A))

    @torch.no_grad()
    def shortcut_target(self, x: torch.Tensor, t: torch.Tensor, half: torch.Tensor | float,
                        cond: torch.Tensor) -> torch.Tensor:
        """Mean velocity of two consecutive model steps of size `half` from (x, t): the self-consistency target
        for one step of size 2 * half. Computed without gradient (the paper's stop-gradient)."""
        h = torch.as_tensor(half, device=x.device, dtype=torch.float32).reshape(-1)
        first = self.velocity(x, t, cond, h)
        second = self.velocity(x + h[:, None, None] * first, t + h, cond, h)
        return (first + second) / 2

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        cfg = self.config
        cond, action = self.encode_batch(batch)
        b = action.shape[0]
        noise = torch.randn_like(action)
        t = self.sample_time(b)
        d = torch.zeros(b, device=action.device)  # 0: flow-matching rows at the finest level
        m = round(b * cfg.shortcut_fraction) if cfg.shortcut else 0  # the first m rows are shortcut rows
        if m:
            # Step 2 ** -k with k < max_level, so its half-step is at most the finest level; t lies on the grid
            # of multiples of the step, as at inference, which also keeps t + d <= 1.
            k = torch.randint(0, self.max_level, (m,), device=action.device).float()
            d[:m] = 2.0 ** -k
            t[:m] = torch.floor(torch.rand(m, device=action.device) * 2.0 ** k) * d[:m]
        tt = t[:, None, None]
        x_t = (1.0 - tt) * noise + tt * action
        target = action - noise
        if m:
            target[:m] = self.shortcut_target(x_t[:m], t[:m], d[:m] / 2, cond[:m])
        return F.mse_loss(self.velocity(x_t, t, cond, d), target)

    # ----- sampling -----

    def _integrator(self, integrator: str | None) -> str:
        name = self.config.integrator if integrator is None else integrator
        if name not in _INTEGRATORS:
            raise ValueError(f"integrator must be one of {_INTEGRATORS}, got {name!r}")
        return name

    def _steps(self, steps: int | None) -> int:
        steps = self.config.num_inference_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return steps

    def nfe(self, steps: int | None = None, integrator: str | None = None) -> int:
        """Network evaluations to sample one chunk (a whole batch of chunks shares them): midpoint costs two."""
        return self._steps(steps) * (2 if self._integrator(integrator) == "midpoint" else 1)

    def initial_noise(self, batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Starting point of the flow (t = 0): (batch, n, horizon, action_dim) standard normal."""
        shape = (batch, n, self.config.horizon, self.config.action_dim)
        return torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               steps: int | None = None, integrator: str | None = None,
               noise: torch.Tensor | None = None,
               guidance: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
        """n chunks per observation, (B, n, horizon, action_dim) in task units.

        `guidance(x, dt) -> delta`: after every integration step, x (the flat normalized chunks, (B * n, horizon,
        action_dim), row i * n + j being candidate j of observation i) becomes x + delta, before the final clip.
        dt = 1 / steps is the step's size in flow time, the same contract as DiffusionPolicy.sample: steps' dt
        sum to 1 over the pass. None leaves sampling unchanged.
        """
        cfg = self.config
        steps, integrator = self._steps(steps), self._integrator(integrator)
        cond = self.encode_obs(obs)
        b = cond.shape[0]
        shape = (b, n, cfg.horizon, cfg.action_dim)
        if noise is None:
            noise = self.initial_noise(b, n, generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be (B, n, horizon, action_dim) = {shape}, got {tuple(noise.shape)}")
        cond = cond[:, None].expand(b, n, cond.shape[-1]).reshape(b * n, -1)  # row i*n + j: candidate j of obs i
        x = noise.to(device=cond.device, dtype=torch.float32).reshape(b * n, cfg.horizon, cfg.action_dim)
        dt = 1.0 / steps
        for i in range(steps):
            x = self.integrate_step(x, i * dt, dt, cond, integrator)
            if guidance is not None:
                x = x + guidance(x, dt)
        if cfg.clip_sample:
            x = x.clamp(-1.0, 1.0)
        return self.normalizer.unnormalize("action", x).reshape(shape)
