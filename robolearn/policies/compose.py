"""Composing policies at test time: one sampler mixes the per-step predictions of several parents (GPC, "Compose
Your Policies!", 2025), each parent reading its own observation keys.

The common per-step quantity. Every head is read in rectified-flow form: at flow time t in [0, 1] a chunk is
y = t * x1 + (1 - t) * eps (t = 0: noise, t = 1: data), in normalized action units, and a parent answers with
its guess of the clean chunk x1 and of the noise eps. A step from t to t' then re-composes
y' = t' * x1 + (1 - t') * eps, with x1 and eps mixed by the convex weights.
- flow (velocity v = x1 - eps): x1 = y + (1 - t) v, eps = y - t v; the re-composition is its Euler step.
- diffusion (DDPM-trained, VP: x = s * x1 + sigma * eps with s^2 + sigma^2 = 1): flow time t = s / (s + sigma) and
  y = x / (s + sigma); the backbone runs at the (fractional) train timestep whose alpha_bar = s^2, its epsilon (or
  sample) prediction gives both guesses, and x1 is clipped like diffusers' DDIM does (eps kept). On the parent's
  own DDIM grid the re-composition is exactly its DDIM step (eta = 0).
- energy descent: one descent step is the head's guess of the demonstrated chunk, x1 = y - alpha * grad E(y),
  and eps = (y - t * x1) / (1 - t) (at t = 1, eps = y - x1). It was trained on y + sigma * eps, the flow state
  without its (1 - t) shrinkage towards 0: close to the end of the flow, an approximation near its start.
- energy (IBC): v = -grad E(y), read like a flow's velocity (a heuristic: IBC trains no flow).
So a composition of one parent with weight 1 reproduces that parent's Euler (flow) or DDIM (diffusion) samples
from the same noise. The time grid is the DDIM grid of the first diffusion parent taking part (weight > 0), else
`steps` uniform steps (default: the first flow parent's).

Parents must agree on action_dim, horizon and n_obs_steps (the chunk's alignment with the observations); each
parent's action normalizer maps the shared space (the first parent's normalized units) affinely onto its own.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robolearn.policies.base import Policy, PolicyConfig
from robolearn.policies.diffusion import DiffusionPolicy
from robolearn.policies.energy_descent import EnergyDescentPolicy
from robolearn.policies.flow import FlowMatchingPolicy
from robolearn.policies.ibc import IBCPolicy

Weights = Sequence[float] | Callable[[float], Sequence[float]]  # fixed, or a function of flow time t


def convex(weights: Sequence[float], n: int) -> np.ndarray:
    """Weights as a checked convex combination: n values >= 0 summing to 1."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n or not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"composition weights must be {n} non-negative numbers summing to 1, got {list(weights)}")
    return w


class ComposedPolicy(Policy):
    """A Policy whose sampler mixes its parents' per-step predictions with convex weights."""

    def __init__(self, parents: Sequence[Policy], weights: Weights, steps: int | None = None):
        nn.Module.__init__(self)  # no networks of its own: the parents hold them
        if len(parents) < 1:
            raise ValueError("a composition needs at least one parent policy")
        for i, parent in enumerate(parents):
            if not isinstance(parent, (DiffusionPolicy, FlowMatchingPolicy, EnergyDescentPolicy, IBCPolicy)):
                raise TypeError(f"parent {i} is a {type(parent).__name__}; only diffusion, flow and energy heads "
                                f"have a per-step prediction to mix")
        self.parents = nn.ModuleList(parents)
        self.config = self._shared_config(parents)
        self.weights = weights if callable(weights) else convex(weights, len(parents))
        self.steps = steps

    @staticmethod
    def _shared_config(parents: Sequence[Policy]) -> PolicyConfig:
        first = parents[0].config
        for i, parent in enumerate(parents[1:], start=1):
            c = parent.config
            for name in ("action_dim", "horizon", "n_obs_steps"):
                if getattr(c, name) != getattr(first, name):
                    raise ValueError(f"parents disagree on {name}: parent 0 has {getattr(first, name)}, parent {i} has "
                                     f"{getattr(c, name)}; composed parents must share the action space and chunk layout")
        shapes: dict[str, list[int]] = {}
        for i, parent in enumerate(parents):
            for key, shape in parent.config.obs_shapes.items():
                if shapes.setdefault(key, list(shape)) != list(shape):
                    raise ValueError(f"parents read {key!r} with different shapes: {shapes[key]} vs {list(shape)} "
                                     f"(parent {i})")
        images = sorted({k for p in parents for k in p.config.image_keys})
        return PolicyConfig(obs_shapes=shapes, image_keys=images, action_dim=first.action_dim,
                            n_obs_steps=first.n_obs_steps, horizon=first.horizon, n_action_steps=first.n_action_steps)

    def loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        raise TypeError("a ComposedPolicy is not trained: train its parents, then compose them")

    def weights_at(self, t: float) -> np.ndarray:
        return convex(self.weights(t), len(self.parents)) if callable(self.weights) else self.weights

    def nfe(self) -> int:
        """Network evaluations per chunk: every parent runs at every step of the shared grid."""
        return (len(self.time_grid()[0]) - 1) * len(self.active)

    # ----- the shared time grid -----

    @property
    def active(self) -> list[Policy]:
        """The parents that take part: all of them under a weight schedule, else those with a weight above 0 (so a
        parent weighted 0 changes nothing, not even the time grid)."""
        if callable(self.weights):
            return list(self.parents)
        return [p for p, w in zip(self.parents, self.weights) if w > 0.0]

    def time_grid(self) -> tuple[list[float], list[float | None]]:
        """Flow times t_0 < ... < t_N = 1 and, per step, the first diffusion parent's exact timestep (or None)."""
        diffusion = next((p for p in self.active if isinstance(p, DiffusionPolicy)), None)
        if diffusion is None:
            flows = [p for p in self.active if isinstance(p, FlowMatchingPolicy)]
            steps = self.steps or (flows[0].config.num_inference_steps if flows else 10)
            return [i / steps for i in range(steps + 1)], [None] * steps
        sched = diffusion._scheduler("ddim", self.steps)
        alphas = sched.alphas_cumprod
        timesteps = [int(k) for k in sched.timesteps]
        times = [_flow_time(float(alphas[k])) for k in timesteps] + [1.0]
        return times, timesteps

    # ----- each parent's guesses of the clean chunk and the noise -----

    def _guesses(self, i: int, y: torch.Tensor, t: float, t_next: float, cond: torch.Tensor,
                 exact_step: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        parent = self.parents[i]
        scale, offset = self._to_parent[i]
        y_i = y * scale + offset  # the shared normalized units -> this parent's
        if isinstance(parent, FlowMatchingPolicy):
            v = parent.velocity(y_i, t, cond, t_next - t)
            x1, eps = y_i + (1.0 - t) * v, y_i - t * v
        elif isinstance(parent, EnergyDescentPolicy):
            _, grad = parent.energy_and_grad(cond, y_i)
            x1 = y_i - parent.step_size.detach() * grad
            eps = (y_i - t * x1) / (1.0 - t) if t < 1.0 else y_i - x1
        elif isinstance(parent, IBCPolicy):
            with torch.enable_grad():
                probe = y_i.detach().requires_grad_(True)
                energy = parent.normalized_energy(cond, probe[:, None]).sum()
                v = -torch.autograd.grad(energy, probe)[0]
            x1, eps = y_i + (1.0 - t) * v, y_i - t * v
        else:
            x1, eps = _diffusion_guesses(parent, y_i, t, cond, exact_step if i == self._first_diffusion else None)
        return (x1 - offset) / scale, (eps - offset) / scale  # back to the shared units

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        b = self.check_obs(obs)
        conds = []
        for parent in self.parents:
            cond = parent.encode_obs({k: obs[k] for k in parent.config.obs_shapes})
            conds.append(cond[:, None].expand(b, n, cond.shape[-1]).reshape(b * n, -1))
        shape = (b, n, cfg.horizon, cfg.action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be (B, n, horizon, action_dim) = {shape}, got {tuple(noise.shape)}")
        self._prepare_maps()
        times, exact = self.time_grid()
        noise = noise.to(self.device, torch.float32).reshape(b * n, cfg.horizon, cfg.action_dim)
        # a DDIM grid starts at the VP state x = noise, i.e. y = noise / (s + sigma); a flow grid at y = noise
        y = noise / _vp_scale(times[0]) if self._first_diffusion is not None else noise
        for j in range(len(times) - 1):
            t, t_next = times[j], times[j + 1]
            w = self.weights_at(t)
            x1 = torch.zeros_like(y)
            eps = torch.zeros_like(y)
            for i in range(len(self.parents)):
                if w[i] == 0.0:
                    continue
                gx, ge = self._guesses(i, y, t, t_next, conds[i], exact[j])
                x1 += float(w[i]) * gx
                eps += float(w[i]) * ge
            y = t_next * x1 + (1.0 - t_next) * eps
        first = self.parents[0]
        if getattr(first.config, "clip_sample", True):
            y = y.clamp(-1.0, 1.0)
        return first.normalizer.unnormalize("action", y).reshape(shape)

    def _prepare_maps(self) -> None:
        """Per parent: the affine map from the first parent's normalized actions to its own (x_i = a * y + b)."""
        def affine(p: Policy) -> tuple[torch.Tensor, torch.Tensor]:
            zero = torch.zeros(self.config.action_dim, device=self.device)
            b = p.normalizer.normalize("action", self.parents[0].normalizer.unnormalize("action", zero))
            a = p.normalizer.normalize("action", self.parents[0].normalizer.unnormalize("action", zero + 1.0)) - b
            return a, b

        self._to_parent = [affine(p) for p in self.parents]
        active = {id(p) for p in self.active}
        self._first_diffusion = next((i for i, p in enumerate(self.parents)
                                      if isinstance(p, DiffusionPolicy) and id(p) in active), None)


def _flow_time(alpha_bar: float) -> float:
    s, sigma = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
    return s / (s + sigma)


def _vp_scale(t: float) -> float:
    """s + sigma for the VP state at flow time t (y = x / (s + sigma))."""
    return 1.0 / (t * t + (1.0 - t) * (1.0 - t)) ** 0.5


def _diffusion_guesses(parent: DiffusionPolicy, y: torch.Tensor, t: float, cond: torch.Tensor,
                       exact_step: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A DDPM-trained backbone's clean-chunk and noise guesses at flow state y, time t (see the module docstring)."""
    alphas = parent.schedulers["ddim"].alphas_cumprod.to(torch.float64)
    alpha_bar = t * t / (t * t + (1.0 - t) ** 2)
    if exact_step is not None:
        step = float(exact_step)
        alpha_bar = float(alphas[int(step)])
    else:  # the fractional train timestep with this alpha_bar (alphas_cumprod falls with the step)
        reversed_alphas = alphas.flip(0).numpy()
        step = float(np.interp(alpha_bar, reversed_alphas, np.arange(len(alphas))[::-1]))
    s, sigma = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
    x = y * (s + sigma)
    steps = torch.full((x.shape[0],), step, device=x.device)
    out = parent.backbone(x, steps if exact_step is None else steps.long(), cond)
    if parent.config.prediction_type == "epsilon":
        eps, x1 = out, (x - sigma * out) / max(s, 1e-12)
    else:
        x1, eps = out, (x - s * out) / max(sigma, 1e-12)
    if parent.config.clip_sample:
        x1 = x1.clamp(-1.0, 1.0)  # as diffusers' DDIM step: the clean guess is clipped, the noise guess is kept
    return x1, eps
