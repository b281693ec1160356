"""Energy-descent policy (after Energy-Based Transformers and EBT-Policy, 2025): a scalar energy E(observation,
action chunk) on the UNet or transformer backbone, and actions found by a few steps of gradient descent on it.

The energy. E(o, a) = 1/2 * ||a - D(o, a)||^2 + N(o): D is the backbone (chunk in, chunk out, time input 0: the
energy has no noise level), so the first term is half the squared distance, in normalized action units, from the
chunk to where the network would move it, 0 at its fixed points. Written as a residual rather than as 1/2 *
||D(o, a)||^2, a network that outputs little does not make a flat energy: with the square form, training on
Lift sat for 500 steps at the loss of a descent that does not move. N(o) >= 0, the novelty term, is constant in
the chunk (descent ignores it): trained to 0 on the demonstrations' observation features and above
`novelty_margin` on the same features plus Gaussian noise (`novelty_noise`), it is what lifts the energy of
decisions taken on observations unlike any in training (minimizing the first term alone reaches ~0 anywhere).
Never negative, the energy is readable on its own; the control loop records it per decision and can act on it
(robolearn.control.energy_gate).

Descent. a_{k+1} = a_k - alpha * dE/da(a_k), with one learned step size alpha (a log-parameter, so it stays
positive). Inference starts n chunks from Gaussian noise (`start_scale` std, normalized units) and takes at most
`descent_steps` steps, projected onto the normalized action box; a row stops early once a step lowers its energy
by less than `early_stop_tol` (relative).
Each decision descends from `num_starts` starts and keeps the lowest-energy chunk: a start near the middle of two
modes converges slowly, and the energy tells which descents got stuck (on the two-goal task, 4 starts: 90 %
success instead of 53 % from one).

Training through the unrolled descent. Each demonstrated chunk y is perturbed, a_0 = y + sigma * eps with sigma
= start_scale * u and u drawn with density 2u on [0, 1] (large perturbations, where inference starts, are the
most frequent); the first `anchor_fraction` of the batch starts at y itself. Then `train_descent_steps` steps
are taken. Which iterates carry loss and how far gradients flow back: each iterate a_{k+1} is detached from
a_k before its step is taken (EBT's truncation), so the gradient of a loss on a_{k+1} reaches the weights and
alpha through that one step only — through dE/da, a second-order term, which is what shapes the landscape;
`loss_iterates="last"` puts the MSE to y on the last iterate only (the earlier steps run without a graph, as
the iterates the last step starts from), `"all"` on every iterate, averaged. The anchors add
`energy_weight * E(y)`, which pins the demonstrations' energy at 0, and the novelty term its two sides.

Why perturbed demonstrations rather than pure noise as starts: a deterministic descent from a start that
carries no information about the target is pulled by the MSE to the mean of the demonstrations, between two
modes. From y + sigma * eps the best step points to the demonstrated chunk most likely to have produced the
start, so E becomes a multi-scale landscape whose basins are the modes, and descents from different noise
starts end in different modes (the two-goal particle test checks this).

Noise starts (`noise_start_fraction`, off by default). Whether the descent turns an inference start, which holds
no demonstration, into one mode is left to the backbone above: the UNet does, the transformer lands near the
average of the modes (docs/energy_descent.md). The last `noise_start_fraction` of the batch therefore starts
where inference starts, `noise_start_candidates` noise draws per window, and each such window's loss is the MSE
of its closest start only (winner-takes-all, as in multiple-choice learning): no start is pulled to the average,
and the one that is trained learns to reach a demonstration from noise.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robolearn.policies.backbone import BackboneConfig, BackbonePolicy

_LOSS_ITERATES = ("last", "all")


@dataclass
class EnergyDescentConfig(BackboneConfig):
    descent_steps: int = 4  # inference: most gradient steps per chunk
    early_stop_tol: float = 0.01  # a row stops when a step lowers its energy by less than this fraction; 0: never
    num_starts: int = 4  # inference: starts per decision, the lowest final energy wins
    train_descent_steps: int = 2  # training: unrolled steps per batch
    loss_iterates: str = "last"  # "last" or "all": which iterates carry the MSE to the demonstrated chunk
    step_size: float = 1.0  # initial alpha
    learn_step_size: bool = True
    start_scale: float = 1.0  # std of the noise starts and of the largest training perturbation (normalized units)
    anchor_fraction: float = 0.125  # share of each batch whose start is the demonstrated chunk itself
    noise_start_fraction: float = 0.0  # share of each batch whose starts are inference noise (see loss)
    noise_start_candidates: int = 4  # noise starts per such window; the loss takes the closest one's
    energy_weight: float = 0.1  # weight of E(demonstrated chunk) and of the novelty term in the loss
    novelty_noise: float = 1.0  # std of the noise that turns observation features into novelty negatives
    novelty_margin: float = 1.0  # the novelty the negatives are pushed above
    clip_sample: bool = True  # keep the descent inside the normalized [-1, 1] box (projected steps)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (1 <= self.descent_steps <= 1000 and 1 <= self.train_descent_steps <= 1000):
            raise ValueError(f"descent_steps ({self.descent_steps}) and train_descent_steps "
                             f"({self.train_descent_steps}) must be between 1 and 1000")
        if not 1 <= self.num_starts <= 10_000:
            raise ValueError(f"num_starts must be between 1 and 10000, got {self.num_starts}")
        if self.loss_iterates not in _LOSS_ITERATES:
            raise ValueError(f"loss_iterates must be one of {_LOSS_ITERATES}, got {self.loss_iterates!r}")
        if not (math.isfinite(self.step_size) and self.step_size > 0 and self.start_scale > 0):
            raise ValueError(f"step_size ({self.step_size}) and start_scale ({self.start_scale}) must be > 0")
        if not (0.0 <= self.anchor_fraction < 1.0 and 0.0 <= self.early_stop_tol < 1.0):
            raise ValueError(f"anchor_fraction ({self.anchor_fraction}) and early_stop_tol ({self.early_stop_tol}) "
                             f"must be in [0, 1)")
        if not (0.0 <= self.noise_start_fraction and self.anchor_fraction + self.noise_start_fraction <= 1.0):
            raise ValueError(f"noise_start_fraction ({self.noise_start_fraction}) must be >= 0 and leave room for "
                             f"anchor_fraction ({self.anchor_fraction}): their sum is at most 1")
        if not 1 <= self.noise_start_candidates <= 64:
            raise ValueError(f"noise_start_candidates must be between 1 and 64, got {self.noise_start_candidates}")
        negative = [n for n in ("energy_weight", "novelty_noise", "novelty_margin") if not getattr(self, n) >= 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0")


@dataclass
class Descent:
    """Result of a descent on normalized chunks: where each row ended, its energy there, and steps it took."""

    chunks: torch.Tensor  # (N, horizon, action_dim)
    energies: torch.Tensor  # (N,)
    steps: torch.Tensor  # (N,) gradient steps taken (early stop makes them differ)


class EnergyDescentPolicy(BackbonePolicy):
    config_class = EnergyDescentConfig
    config: EnergyDescentConfig

    def __init__(self, config: EnergyDescentConfig):
        super().__init__(config)
        self.log_step_size = nn.Parameter(torch.tensor(math.log(config.step_size)),
                                          requires_grad=config.learn_step_size)
        cond_dim = self.obs_encoder.out_dim
        self.novelty_head = nn.Sequential(nn.Linear(cond_dim, 256), nn.Mish(), nn.Linear(256, 1), nn.Softplus())

    @property
    def step_size(self) -> torch.Tensor:
        return self.log_step_size.exp()

    # ----- the energy -----

    def novelty(self, cond: torch.Tensor) -> torch.Tensor:
        """The observation term of the energy (N,) >= 0: about 0 where the demonstrations were, above
        novelty_margin for observation features far from them. Constant in the chunk: descent ignores it."""
        return self.novelty_head(cond.detach()).squeeze(-1)

    def normalized_energy(self, cond: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """Energies (N,) of normalized chunks (N, horizon, action_dim) under conditions (N, cond_dim)."""
        residual = chunks - self.backbone(chunks, 0.0, cond)
        return 0.5 * residual.float().square().flatten(1).sum(dim=1) + self.novelty(cond)

    def energy_and_grad(self, cond: torch.Tensor, chunks: torch.Tensor, create_graph: bool = False,
                        keep_energy_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (N,) and dE/da (N, horizon, action_dim) at normalized chunks. `create_graph`: the gradient
        keeps its graph (training differentiates through it); `keep_energy_graph`: the energies keep theirs."""
        with torch.enable_grad():
            chunks = chunks if chunks.requires_grad else chunks.detach().requires_grad_(True)
            energies = self.normalized_energy(cond, chunks)
            (grad,) = torch.autograd.grad(energies.sum(), chunks, create_graph=create_graph,
                                          retain_graph=create_graph or keep_energy_graph)
        return energies, grad

    def energy(self, obs: Mapping[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """Energies (B, K) of raw candidate chunks (B, K, horizon, action_dim); lower is better.

        Scores chunks proposed by any policy of the same task (steering, re-ranking). Gradients flow when the
        caller has them enabled; wrap calls in torch.no_grad() to only score."""
        cfg = self.config
        cond = self.encode_obs(obs)
        b = cond.shape[0]
        if chunks.dim() != 4 or chunks.shape[0] != b or tuple(chunks.shape[2:]) != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"chunks must be (B, K, horizon, action_dim) = ({b}, K, {cfg.horizon}, "
                             f"{cfg.action_dim}), got {tuple(chunks.shape)}")
        k = chunks.shape[1]
        normed = self.normalizer.normalize("action", chunks.to(device=cond.device, dtype=torch.float32))
        flat_cond = cond[:, None].expand(b, k, cond.shape[-1]).reshape(b * k, -1)
        return self.normalized_energy(flat_cond, normed.reshape(b * k, cfg.horizon, cfg.action_dim)).reshape(b, k)

    # ----- training -----

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        cfg = self.config
        obs_cond, demo = self.encode_batch(batch)
        b = demo.shape[0]
        n_anchor = int(b * cfg.anchor_fraction)
        n_noise = min(int(b * cfg.noise_start_fraction), b - n_anchor)  # the last rows of the batch
        n_perturbed = b - n_noise
        u = torch.rand(n_perturbed, device=demo.device).sqrt()  # density 2u: large perturbations most often
        u[:n_anchor] = 0.0
        x = demo[:n_perturbed] + (cfg.start_scale * u)[:, None, None] * torch.randn_like(demo[:n_perturbed])
        cond, target, m = obs_cond, demo, cfg.noise_start_candidates
        if n_noise:  # m starts per window, drawn and projected as inference draws them
            starts = self.initial_noise(n_noise, m).flatten(0, 1)
            x = torch.cat([x, starts.clamp(-1.0, 1.0) if cfg.clip_sample else starts])
            cond = torch.cat([obs_cond[:n_perturbed], obs_cond[n_perturbed:].repeat_interleave(m, 0)])
            target = torch.cat([demo[:n_perturbed], demo[n_perturbed:].repeat_interleave(m, 0)])

        def iterate_loss(iterate: torch.Tensor) -> torch.Tensor:
            """Mean over windows of the MSE to the demonstrated chunk; a noise-start window counts its closest
            start only, so its starts may end in different modes (the others are not pulled to the average)."""
            row = (iterate - target).square().flatten(1).mean(dim=1)
            return torch.cat([row[:n_perturbed], row[n_perturbed:].reshape(n_noise, m).min(dim=1).values]).mean()

        mse = []
        anchor_energy = demo.new_zeros(())
        for k in range(cfg.train_descent_steps):
            carries_loss = cfg.loss_iterates == "all" or k == cfg.train_descent_steps - 1
            x = x.detach().requires_grad_(True)  # truncation: a loss on this step's result stops at its start
            anchored = k == 0 and n_anchor > 0
            energies, grad = self.energy_and_grad(cond, x, create_graph=carries_loss, keep_energy_graph=anchored)
            if anchored:
                anchor_energy = energies[:n_anchor].mean()
            alpha = self.step_size if carries_loss else self.step_size.detach()
            x = x - alpha * grad
            if carries_loss:
                mse.append(iterate_loss(x))
        # the observation term: ~0 on the demonstrations' observations, above the margin off them
        novel = obs_cond + cfg.novelty_noise * torch.randn_like(obs_cond)
        novelty = self.novelty(obs_cond).mean() + F.relu(cfg.novelty_margin - self.novelty(novel)).mean()
        return torch.stack(mse).mean() + cfg.energy_weight * (anchor_energy + novelty)

    # ----- inference -----

    def nfe(self, steps: int | None = None) -> int:
        """Backbone passes per chunk at most: `steps` forward + backward pairs (the gradient) and one forward
        for the final energy; early stops take fewer."""
        return 2 * self._steps(steps) + 1

    def _steps(self, steps: int | None) -> int:
        steps = self.config.descent_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        return steps

    def descend(self, cond: torch.Tensor, x: torch.Tensor, steps: int | None = None,
                early_stop_tol: float | None = None) -> Descent:
        """Gradient descent on normalized chunks x (N, horizon, action_dim) under conditions (N, cond_dim).

        A row whose step lowered its energy by less than early_stop_tol * |E| (or raised it) keeps its previous
        chunk and stops; the loop ends when every row has stopped or after `steps` steps. With clip_sample the
        descent is projected onto the normalized box [-1, 1] (the starts and every step), so the energy it
        reports is that of the chunk it returns."""
        steps = self._steps(steps)
        tol = self.config.early_stop_tol if early_stop_tol is None else float(early_stop_tol)
        project = (lambda t: t.clamp(-1.0, 1.0)) if self.config.clip_sample else (lambda t: t)  # noqa: E731
        alpha = self.step_size.detach()
        cond = cond.detach()
        x = project(x.detach())
        energies, grad = self.energy_and_grad(cond, x)
        with torch.no_grad():
            offset = self.novelty(cond)  # the chunk-independent part: the early stop measures progress without it
        taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for k in range(steps):
            proposal = project(x - alpha * grad)
            last = k == steps - 1
            if last:  # only its energy is needed
                with torch.no_grad():
                    new_energies, new_grad = self.normalized_energy(cond, proposal), grad
            else:
                new_energies, new_grad = self.energy_and_grad(cond, proposal)
            if tol > 0:
                improved = energies - new_energies > tol * (energies - offset).abs()
            else:  # no early stop: every step is taken
                improved = torch.ones_like(active)
            move = active & improved
            x = torch.where(move[:, None, None], proposal, x)
            energies = torch.where(move, new_energies, energies)
            grad = torch.where(move[:, None, None], new_grad, grad)
            taken += move.long()
            active &= improved
            if not bool(active.any()):
                break
        return Descent(x.detach(), energies.detach(), taken)

    def initial_noise(self, batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Starts of the descent: (batch, n, horizon, action_dim), Gaussian with std start_scale."""
        shape = (batch, n, self.config.horizon, self.config.action_dim)
        return self.config.start_scale * torch.randn(shape, generator=generator, device=self.device)

    @torch.no_grad()
    def sample_with_energy(self, obs: Mapping[str, torch.Tensor], n: int = 1,
                           generator: torch.Generator | None = None, steps: int | None = None,
                           early_stop_tol: float | None = None, num_starts: int | None = None,
                           noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n chunks per observation (B, n, horizon, action_dim) in task units, and their energies (B, n).

        Each chunk is the lowest-energy end of `num_starts` descents (default: config). `noise` replaces the
        Gaussian starts: (B, n * num_starts, horizon, action_dim) in normalized units."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cfg = self.config
        starts = cfg.num_starts if num_starts is None else int(num_starts)
        if starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {starts}")
        cond = self.encode_obs(obs)
        b, m = cond.shape[0], n * starts
        shape = (b, m, cfg.horizon, cfg.action_dim)
        if noise is None:
            noise = self.initial_noise(b, m, generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be (B, n * num_starts, horizon, action_dim) = {shape}, "
                             f"got {tuple(noise.shape)}")
        flat_cond = cond[:, None].expand(b, m, cond.shape[-1]).reshape(b * m, -1)  # row i*m + j: start j of obs i
        result = self.descend(flat_cond, noise.to(cond.device, torch.float32).reshape(b * m, *shape[2:]), steps,
                              early_stop_tol)
        chunks = result.chunks.reshape(b, n, starts, *shape[2:])
        energies = result.energies.reshape(b, n, starts)
        best = energies.argmin(dim=2)  # (b, n)
        chunks = torch.gather(chunks, 2, best[:, :, None, None, None].expand(b, n, 1, *shape[2:]))[:, :, 0]
        energies = torch.gather(energies, 2, best[:, :, None])[:, :, 0]
        return self.normalizer.unnormalize("action", chunks), energies

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               steps: int | None = None, early_stop_tol: float | None = None, num_starts: int | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """n chunks per observation, (B, n, horizon, action_dim) in task units (see `sample_with_energy`)."""
        return self.sample_with_energy(obs, n, generator, steps, early_stop_tol, num_starts, noise)[0]

    def compile_for_inference(self, enabled: bool = True) -> bool:
        """Always eager: the descent takes action gradients and stops early, which a CUDA graph cannot replay."""
        self._graphed = None
        return False

    @torch.no_grad()
    def act_with_energy(self, obs: Mapping[str, np.ndarray | torch.Tensor],
                        generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`act`'s actions (B, n_action_steps, action_dim) and the energy of each chosen chunk (B,), as numpy."""
        obs_t = self.obs_tensors(obs)
        chunks, energies = self.sample_with_energy(obs_t, n=1, generator=generator)
        return self.executed_actions(chunks[:, 0]), energies[:, 0].float().cpu().numpy()
