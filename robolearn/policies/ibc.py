"""Implicit behavior cloning (Florence et al. 2021): an energy E(obs, action chunk) that is low on demonstrated
actions, and a sampler that searches for its minimum.

Why an energy instead of regressing the action: an argmin can jump between separate low-energy regions, so
demonstrations that do the same thing in two different ways (two goals, left or right around an obstacle)
stay two modes instead of being averaged into an action no demonstrator took.

Training is InfoNCE: each demonstrated chunk competes against `n_negatives` counter-example chunks drawn
uniformly in the normalized action box [-1, 1]; the loss is cross-entropy with the positive at index 0 over
logits -E / temperature. Everything works on normalized chunks (see `Normalizer`); `energy()` accepts raw chunks,
so the trained network is also usable as a scorer for candidates proposed by other policies.

Samplers (`config.sampler` or the `sampler=` argument):
  "dfo"      derivative-free optimization: uniform samples, then rounds of softmax(-E)-weighted resampling
             with Gaussian noise that shrinks each round. Robust; its cost grows with the action dimension.
  "langevin" gradient-based MCMC from uniform starts, x <- x - clip(lr_t * (0.5 dE/dx + noise * eps)),
             with IBC's polynomially decaying step size. IBC trains Langevin models with `grad_penalty` > 0 so
             dE/dx stays bounded; the per-step clip keeps chains stable either way.
Both produce a population of candidates per observation. Greedy (`config.greedy`, IBC's choice at evaluation):
`sample(n=1)` returns the lowest-energy candidate and `sample(n>1)` draws n from softmax(-E / temperature)
over the final population. Greedy DFO reweights by the full softmax every round, which sharpens the
distribution round after round: the population, and so the chosen mode, collapses onto whichever mode is
slightly lower at this observation. Non-greedy DFO spreads the weight 1 / temperature over its rounds and the
final draw (each uses temperature * (dfo_iters + 1)), so its draws approximate samples of exp(-E / temperature)
and modes are chosen in proportion to their learned probability; non-greedy Langevin draws from its chains'
final softmax.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.nn.mlp import ACTIVATIONS, check_mlp, mlp_layers
from robolearn.policies.base import Policy, PolicyConfig

_SAMPLERS = ("dfo", "langevin")


@dataclass
class IBCConfig(PolicyConfig):
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])  # energy MLP widths
    activation: str = "mish"  # "mish" or "relu"
    n_negatives: int = 255  # uniform counter-example chunks per demonstrated chunk
    temperature: float = 1.0  # softmax temperature of InfoNCE and of the samplers' final selection
    greedy: bool = True  # optimize (n=1 gives the argmin) rather than sample exp(-E / T); see the module docstring
    grad_penalty: float = 0.0  # weight of max(0, ||dE/da|| - grad_margin)^2 on counter-examples (use with Langevin)
    grad_margin: float = 1.0
    sampler: str = "dfo"  # default inference sampler: "dfo" or "langevin"
    dfo_samples: int = 1024  # population per observation (IBC used 16384; fewer keeps CPU inference fast)
    dfo_iters: int = 3  # resampling rounds
    dfo_noise: float = 0.33  # std of the first round's perturbation, in normalized units
    dfo_noise_shrink: float = 0.5  # the std is multiplied by this after each round
    langevin_samples: int = 128  # chains per observation
    langevin_steps: int = 100
    langevin_lr_init: float = 0.1
    langevin_lr_final: float = 1e-5
    langevin_lr_power: float = 2.0  # polynomial decay exponent; 0 keeps the step size fixed at lr_init
    langevin_noise: float = 1.0  # scale of the Gaussian term inside each step
    langevin_delta_clip: float = 0.1  # largest move of one coordinate in one step (keeps chains stable)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden = check_mlp(self.hidden, self.activation)
        if self.sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {_SAMPLERS}, got {self.sampler!r}")
        for name in ("n_negatives", "dfo_samples", "langevin_samples"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be between 1 and 1000000, got {getattr(self, name)}")
        if not (0 <= self.dfo_iters <= 10_000 and 0 <= self.langevin_steps <= 10_000):
            raise ValueError(f"dfo_iters ({self.dfo_iters}) and langevin_steps ({self.langevin_steps}) must be "
                             f"between 0 and 10000")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        scales = ("grad_penalty", "grad_margin", "dfo_noise", "dfo_noise_shrink", "langevin_lr_init",
                  "langevin_lr_final", "langevin_lr_power", "langevin_noise", "langevin_delta_clip")
        negative = [name for name in scales if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0")


class EnergyMLP(nn.Module):
    """E(cond, chunk) as an MLP over concat(cond, flattened chunk).

    The first layer is split into a condition part and an action part (the same linear map as one layer over
    the concatenation), so the condition is projected once per observation rather than once per candidate.
    """

    def __init__(self, cond_dim: int, action_numel: int, hidden: list[int], activation: str):
        super().__init__()
        self.cond_in = nn.Linear(cond_dim, hidden[0])
        self.action_in = nn.Linear(action_numel, hidden[0], bias=False)
        self.trunk = nn.Sequential(ACTIVATIONS[activation](), *mlp_layers(hidden, activation), nn.Linear(hidden[-1], 1))

    def cond_features(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_dim) -> (B, hidden[0]): the condition's share of the first layer, reusable across candidates."""
        return self.cond_in(cond)

    def from_features(self, features: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """features (B, hidden[0]), normalized chunks (B, K, horizon, action_dim) -> energies (B, K)."""
        h = self.action_in(chunks.flatten(2)) + features[:, None, :]
        return self.trunk(h).squeeze(-1)

    def forward(self, cond: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.cond_features(cond), chunks)


class IBCPolicy(Policy):
    config_class = IBCConfig
    config: IBCConfig

    def __init__(self, config: IBCConfig):
        super().__init__(config)
        self.net = EnergyMLP(self.obs_encoder.out_dim, config.horizon * config.action_dim, config.hidden,
                             config.activation)

    # ----- energies -----

    def normalized_energy(self, cond: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """Energies (B, K) of normalized chunks (B, K, horizon, action_dim) under conditions (B, cond_dim)."""
        return self.net(cond, chunks)

    def energy(self, obs: Mapping[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """Energies (B, K) of raw candidate chunks (B, K, horizon, action_dim); lower is better.

        Usable as a scorer: rank or filter chunks proposed by any policy of the same task. Gradients flow
        when the caller has them enabled (e.g. for guidance), so wrap calls in torch.no_grad() to only score.
        """
        cfg = self.config
        cond = self.encode_obs(obs)
        if chunks.dim() != 4 or chunks.shape[0] != cond.shape[0] or tuple(chunks.shape[2:]) != (cfg.horizon,
                                                                                                 cfg.action_dim):
            raise ValueError(f"chunks must be (B, K, horizon, action_dim) = ({cond.shape[0]}, K, {cfg.horizon}, "
                             f"{cfg.action_dim}), got {tuple(chunks.shape)}")
        normed = self.normalizer.normalize("action", chunks.to(device=cond.device, dtype=torch.float32))
        return self.net(cond, normed)

    # ----- training -----

    def _uniform(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Chunks drawn uniformly in the normalized action box [-1, 1]."""
        return torch.rand(shape, generator=generator, device=self.device) * 2.0 - 1.0

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        cfg = self.config
        cond, positive = self.encode_batch(batch)
        b = cond.shape[0]
        negatives = self._uniform((b, cfg.n_negatives, cfg.horizon, cfg.action_dim), None)
        penalize = cfg.grad_penalty > 0 and torch.is_grad_enabled()
        negatives.requires_grad_(penalize)
        candidates = torch.cat([positive[:, None], negatives], dim=1)  # the positive sits at index 0
        energies = self.net(cond, candidates)
        target = torch.zeros(b, dtype=torch.long, device=cond.device)
        loss = F.cross_entropy(-energies / cfg.temperature, target)
        if penalize:
            # IBC's gradient penalty: only on counter-examples, only the part of the slope above the margin.
            (grad,) = torch.autograd.grad(energies[:, 1:].sum(), negatives, create_graph=True)
            excess = F.relu(grad.flatten(2).norm(dim=-1) - cfg.grad_margin)
            loss = loss + cfg.grad_penalty * excess.square().mean()
        return loss

    # ----- sampling -----

    def nfe(self, sampler: str | None = None) -> int:
        """Energy-network rows evaluated per observation to produce its chunk(s).

        DFO: dfo_samples * (dfo_iters + 1) forward rows (one scoring per round plus the final one). Langevin:
        langevin_samples * (langevin_steps + 1) forward rows; each of the langevin_steps rows also takes one
        backward pass for dE/dx. A batch of B observations evaluates B times as many rows in the same passes.
        """
        cfg = self.config
        name = self._sampler_name(sampler)
        if name == "dfo":
            return cfg.dfo_samples * (cfg.dfo_iters + 1)
        return cfg.langevin_samples * (cfg.langevin_steps + 1)

    def _sampler_name(self, sampler: str | None) -> str:
        name = self.config.sampler if sampler is None else sampler
        if name not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {_SAMPLERS}, got {name!r}")
        return name

    def _gaussian(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def dfo(self, features: torch.Tensor, generator: torch.Generator | None = None,
            temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Derivative-free optimization from condition features (B, hidden[0]), resampling each round by
        softmax(-E / temperature) (default: config.temperature).

        Returns the final population (B, dfo_samples, horizon, action_dim) in normalized units and its
        energies (B, dfo_samples).
        """
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        b = features.shape[0]
        x = self._uniform((b, cfg.dfo_samples, cfg.horizon, cfg.action_dim), generator)
        noise = cfg.dfo_noise
        for _ in range(cfg.dfo_iters):
            probs = torch.softmax(-self.net.from_features(features, x) / temperature, dim=-1)
            idx = torch.multinomial(probs, cfg.dfo_samples, replacement=True, generator=generator)
            x = torch.gather(x, 1, idx[:, :, None, None].expand_as(x))
            x = (x + noise * self._gaussian(x, generator)).clamp(-1.0, 1.0)
            noise *= cfg.dfo_noise_shrink
        return x, self.net.from_features(features, x)

    def langevin_step_size(self, step: int) -> float:
        """IBC's polynomial decay from langevin_lr_init (step 0) to langevin_lr_final (last step)."""
        cfg = self.config
        frac = 1.0 - step / max(cfg.langevin_steps - 1, 1)
        return (cfg.langevin_lr_init - cfg.langevin_lr_final) * frac ** cfg.langevin_lr_power + cfg.langevin_lr_final

    def langevin(self, features: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Langevin MCMC from uniform starts, conditioned on features (B, hidden[0]).

        Returns the final chains (B, langevin_samples, horizon, action_dim), normalized, and their energies.
        """
        cfg = self.config
        b = features.shape[0]
        features = features.detach()
        x = self._uniform((b, cfg.langevin_samples, cfg.horizon, cfg.action_dim), generator)
        with torch.enable_grad():
            for step in range(cfg.langevin_steps):
                x = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.net.from_features(features, x).sum(), x)
                lr = self.langevin_step_size(step)
                delta = lr * (0.5 * grad + cfg.langevin_noise * self._gaussian(x, generator))
                delta = delta.clamp(-cfg.langevin_delta_clip, cfg.langevin_delta_clip)
                x = (x.detach() - delta).clamp(-1.0, 1.0)
        x = x.detach()
        return x, self.net.from_features(features, x).detach()

    @staticmethod
    def _select(population: torch.Tensor, energies: torch.Tensor, n: int, argmin: bool, temperature: float,
                generator: torch.Generator | None) -> torch.Tensor:
        """The lowest-energy candidate (argmin, n == 1) or n draws from softmax(-E / temperature)."""
        if argmin and n == 1:
            idx = energies.argmin(dim=1, keepdim=True)
        else:
            probs = torch.softmax(-energies / temperature, dim=-1)
            idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        return torch.gather(population, 1, idx[:, :, None, None].expand(-1, -1, *population.shape[2:]))

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               sampler: str | None = None, greedy: bool | None = None) -> torch.Tensor:
        """n chunks per observation, (B, n, horizon, action_dim) in the task's units.

        `sampler` and `greedy` override the config for this call (see the module docstring).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cfg = self.config
        name = self._sampler_name(sampler)
        greedy = cfg.greedy if greedy is None else greedy
        features = self.net.cond_features(self.encode_obs(obs))
        temperature = cfg.temperature
        if name == "dfo":
            if not greedy:
                temperature = cfg.temperature * (cfg.dfo_iters + 1)
            population, energies = self.dfo(features, generator, temperature)
        else:
            population, energies = self.langevin(features, generator)
        chosen = self._select(population, energies, n, greedy, temperature, generator)
        return self.normalizer.unnormalize("action", chosen).reshape(features.shape[0], n, cfg.horizon,
                                                                     cfg.action_dim)
