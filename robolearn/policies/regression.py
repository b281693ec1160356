"""Regression baseline: an MLP maps the observation condition straight to the whole normalized action chunk.

Trained with mean squared error, it predicts the conditional mean of the demonstrations. That is the reference
the generative heads are measured against: where demonstrations are unimodal it is as good as they are at one
network evaluation, and where they disagree (left or right around an obstacle) it averages the modes, which is
exactly the failure the diffusion, flow and energy heads exist to avoid.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.nn.mlp import check_mlp, mlp_layers
from robolearn.policies.base import Policy, PolicyConfig


@dataclass
class RegressionConfig(PolicyConfig):
    hidden: list[int] = field(default_factory=lambda: [512, 512])  # MLP widths
    activation: str = "mish"  # "mish" or "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden = check_mlp(self.hidden, self.activation)


class RegressionPolicy(Policy):
    config_class = RegressionConfig
    config: RegressionConfig

    def __init__(self, config: RegressionConfig):
        super().__init__(config)
        widths = [self.obs_encoder.out_dim, *config.hidden]
        self.net = nn.Sequential(*mlp_layers(widths, config.activation),
                                 nn.Linear(widths[-1], config.horizon * config.action_dim))

    def predict_normalized(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition (B, cond_dim) -> normalized action chunk (B, horizon, action_dim)."""
        return self.net(cond).reshape(cond.shape[0], self.config.horizon, self.config.action_dim)

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        cond, action = self.encode_batch(batch)
        return F.mse_loss(self.predict_normalized(cond), action)

    def nfe(self) -> int:
        """Network evaluations per chunk: one forward pass."""
        return 1

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The predicted chunk repeated n times: (B, n, horizon, action_dim) in the task's units.

        A regression policy has one answer per observation, so the n "candidates" are identical and
        `generator` is unused; both are accepted so callers can treat every head alike (e.g. best-of-n
        selection degrades gracefully to the single prediction).
        """
        cond = self.encode_obs(obs)
        chunk = self.normalizer.unnormalize("action", self.predict_normalized(cond))
        return chunk[:, None].expand(-1, n, -1, -1).contiguous()
