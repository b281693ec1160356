"""Value-guided steering: a frozen policy proposes action chunks, a critic decides which one runs.

`SteeredPolicy` wraps any Policy and is itself a Policy (same config, same observations, same `act`), so the
control loop, `PolicyRunner` and `evaluate` run it unchanged. Each decision draws K candidate chunks with
`policy.sample(obs, K)`, scores the part the loop will execute with the critic, and keeps

* "argmax": the best-scoring candidate (V-GPS, IDQL's greedy choice), or
* "softmax": one drawn with probability softmax(score / beta) (beta -> 0 is argmax, large beta the base policy).

Gradient guidance (diffusion and flow heads): with `guidance_scale` > 0 the candidates come from the head's own
`sample`, given a `guidance(x, dt)` hook that returns scale * dt * grad_x Q, x being the normalized chunk
(classifier guidance in action space); the head adds it after every denoising / integration step, dt being
1 / n_steps. The scale is therefore the total push over one sampling pass, whatever the step count. DDPM's
fresh noise at every step washes part of the push out again (on a toy critic the same scale moved DDIM-10
samples about three times further than DDPM-100), so stochastic samplers need a larger scale for the same
effect. Sampling itself (schedulers, integrators, step counts, clipping) stays in the heads: scale 0 passes no
hook and is `policy.sample` exactly.

A critic is anything with `score(obs, chunks) -> (B, K)` (higher is better) over chunks of `action_steps`
actions that start at the current step, reading the newest `n_obs_steps` frames of observation history:
robolearn.models.critic.Critic is one; a hand-written scorer is another.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from robolearn.env import observation_mismatches
from robolearn.policies.base import Policy
from robolearn.policies.diffusion import DiffusionPolicy
from robolearn.policies.flow import FlowMatchingPolicy

MODES = ("argmax", "softmax")


@runtime_checkable
class ChunkScorer(Protocol):
    n_obs_steps: int  # frames of history read (the newest ones of what the policy observes)
    action_steps: int  # actions scored, from the current step on

    def score(self, obs: Mapping[str, torch.Tensor], chunks: torch.Tensor) -> torch.Tensor:
        """obs {key: (B, T, *shape)}, chunks (B, K, action_steps, action_dim) in task units -> (B, K)."""
        ...


def _check_pair(policy: Policy, critic: ChunkScorer) -> None:
    pc = policy.config
    if critic.n_obs_steps > pc.n_obs_steps:
        raise ValueError(f"the critic reads {critic.n_obs_steps} frames of history but the policy keeps only "
                         f"{pc.n_obs_steps}; train the critic with n_obs_steps <= {pc.n_obs_steps}")
    start = pc.n_obs_steps - 1
    if start + critic.action_steps > pc.horizon:
        raise ValueError(f"the critic scores {critic.action_steps} actions from the current step, but the policy's "
                         f"chunks hold only {pc.horizon - start} from there (horizon {pc.horizon}, n_obs_steps "
                         f"{pc.n_obs_steps}); train the critic with action_steps <= {pc.horizon - start}")
    problems = observation_mismatches(getattr(critic, "obs_shapes", None) or {}, pc.obs_shapes, "the critic",
                                      "the policy")
    if problems:  # the loop passes the policy's observations only
        raise ValueError("; ".join(problems))


def critic_view(policy: Policy, critic: ChunkScorer, obs: Mapping[str, torch.Tensor],
                chunks: torch.Tensor) -> torch.Tensor:
    """Scores (B, K) of full policy chunks (B, K, horizon, action_dim): the critic sees the actions the loop executes
    first, chunk[:, :, n_obs_steps - 1 : n_obs_steps - 1 + action_steps]."""
    start = policy.config.n_obs_steps - 1
    keys = getattr(critic, "obs_shapes", None) or obs
    return critic.score({k: obs[k] for k in keys}, chunks[:, :, start:start + critic.action_steps])


def _guidance_grad(policy: Policy, critic: ChunkScorer, obs: Mapping[str, torch.Tensor], x: torch.Tensor,
                   b: int, n: int) -> torch.Tensor:
    """d(sum of scores)/dx for normalized flat chunks x (b * n, horizon, action_dim)."""
    cfg = policy.config
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        raw = policy.normalizer.unnormalize("action", xg).reshape(b, n, cfg.horizon, cfg.action_dim)
        (grad,) = torch.autograd.grad(critic_view(policy, critic, obs, raw).sum(), xg)
    return grad


def guided_sample(policy: Policy, critic: ChunkScorer, obs: Mapping[str, torch.Tensor], n: int = 1,
                  scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """n chunks per observation (B, n, horizon, action_dim) from a diffusion or flow head's own sampler (its
    configured scheduler / integrator and step count), pushed up the critic's gradient after every step."""
    if not isinstance(policy, (DiffusionPolicy, FlowMatchingPolicy)):
        raise TypeError(f"gradient guidance needs a diffusion or flow head (it acts between their sampling steps); "
                        f"{type(policy).__name__} has none: steer it by re-ranking (guidance_scale=0)")
    if not scale:
        return policy.sample(obs, n=n, generator=generator)

    def guidance(x: torch.Tensor, dt: float) -> torch.Tensor:  # the heads' hook: x + this after every step
        return (scale * dt) * _guidance_grad(policy, critic, obs, x, x.shape[0] // n, n)

    return policy.sample(obs, n=n, generator=generator, guidance=guidance)


class SteeredPolicy(Policy):
    """A policy whose chunks are chosen (and optionally guided) by a critic; see the module docstring.

    It shares the base policy's config and weights (its own state is the two wrapped modules), so moving it to a
    device moves both; training it trains the base policy (`loss` is the base policy's).
    """

    def __init__(self, policy: Policy, critic: ChunkScorer, k: int = 16, mode: str = "argmax", beta: float = 1.0,
                 guidance_scale: float = 0.0):
        nn.Module.__init__(self)  # not Policy.__init__: the normalizer and encoder are the base policy's
        if not isinstance(policy, Policy):
            raise TypeError(f"SteeredPolicy wraps a robolearn Policy, got {type(policy).__name__}")
        if not isinstance(critic, ChunkScorer):
            raise TypeError(f"the critic must have score(obs, chunks), n_obs_steps and action_steps; "
                            f"got {type(critic).__name__}")
        if k < 1:
            raise ValueError(f"k (candidates per decision) must be >= 1, got {k}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "softmax" and not beta > 0:
            raise ValueError(f"softmax steering needs a temperature beta > 0, got {beta}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if guidance_scale > 0 and not isinstance(policy, (DiffusionPolicy, FlowMatchingPolicy)):
            raise TypeError(f"gradient guidance needs a diffusion or flow head; {type(policy).__name__} has none "
                            f"(use guidance_scale=0 to steer by re-ranking)")
        _check_pair(policy, critic)
        self.config = policy.config
        self.policy = policy
        self.critic = critic  # registered as a submodule when it is one, so .to(device) moves it too
        self.k, self.mode, self.beta, self.guidance_scale = int(k), mode, float(beta), float(guidance_scale)

    @property
    def normalizer(self):  # type: ignore[override]
        return self.policy.normalizer

    def loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.policy.loss(batch)

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.encode_obs(obs)

    def nfe(self) -> int:
        """Network evaluations of the base policy per decision (K candidates share them as one batch)."""
        return self.policy.nfe()

    def candidates(self, obs: Mapping[str, torch.Tensor], n: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, n, horizon, action_dim) proposals: the base policy's samples, guided when guidance_scale > 0."""
        if self.guidance_scale > 0:
            return guided_sample(self.policy, self.critic, obs, n, self.guidance_scale, generator)
        return self.policy.sample(obs, n=n, generator=generator)

    @torch.no_grad()
    def select(self, obs: Mapping[str, torch.Tensor], candidates: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pick one of each row's K candidates (B, K, horizon, action_dim): returns the chosen chunks (B, horizon,
        action_dim), their indices (B,) and all scores (B, K)."""
        scores = critic_view(self.policy, self.critic, obs, candidates).float()
        if candidates.shape[1] == 1:
            index = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        elif self.mode == "argmax":
            index = scores.argmax(dim=1)
        else:
            probs = torch.softmax(scores / self.beta, dim=1)
            index = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        chosen = candidates[torch.arange(candidates.shape[0], device=candidates.device), index.to(candidates.device)]
        return chosen, index, scores

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n steered chunks per observation, each chosen from its own K candidates: (B, n, horizon, action_dim)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        b = self.policy.check_obs(obs)
        pool = self.candidates(obs, n * self.k, generator)  # group j is candidates j*K .. (j+1)*K - 1
        cfg = self.config
        groups = pool.reshape(b * n, self.k, cfg.horizon, cfg.action_dim)
        rep = {key: value.repeat_interleave(n, dim=0) for key, value in obs.items()}
        chosen, _, _ = self.select(rep, groups, generator)
        return chosen.reshape(b, n, cfg.horizon, cfg.action_dim)
