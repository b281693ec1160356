"""A tiny learnable problem shared by the head tests: the action chunk is a fixed linear map of the newest state."""
from __future__ import annotations

import numpy as np
import torch

from robolearn.policies.base import Policy

STATE_DIM, ACTION_DIM, HORIZON, N_OBS = 5, 2, 8, 2
STATE_LO, STATE_HI = -2.0, 3.0
W = torch.tensor([[0.5, -0.3], [0.2, 0.4], [-0.1, 0.3], [0.3, 0.1], [0.0, -0.2]])  # state -> action map


def fitted(policy: Policy) -> Policy:
    """Fit the policy's normalizer to the ranges this problem produces."""
    a_bound = float(W.abs().sum(0).max() * max(abs(STATE_LO), abs(STATE_HI)))
    policy.normalizer.fit({
        "state": {"min": np.full(STATE_DIM, STATE_LO), "max": np.full(STATE_DIM, STATE_HI)},
        "action": {"min": np.full(ACTION_DIM, -a_bound), "max": np.full(ACTION_DIM, a_bound)},
    })
    return policy


def synthetic_batch(b: int, seed: int) -> dict:
    """Actions are a fixed linear function of the latest state, repeated over the chunk."""
    g = torch.Generator().manual_seed(seed)
    state = STATE_LO + (STATE_HI - STATE_LO) * torch.rand(b, N_OBS, STATE_DIM, generator=g)
    action = (state[:, -1] @ W)[:, None, :].expand(b, HORIZON, ACTION_DIM).contiguous()
    return {"obs": {"state": state}, "action": action}


def train_losses(policy: Policy, data: dict, steps: int, lr: float) -> list[float]:
    """AdamW on one fixed batch; the loss after each step."""
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = policy.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
