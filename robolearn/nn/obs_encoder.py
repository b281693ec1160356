"""Observation history -> one condition vector shared by every policy head.

Low-dim keys (sorted) are flattened over the history and concatenated. Image keys need a vision encoder,
which contributes its features to the same vector.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


class ObsEncoder(nn.Module):
    def __init__(self, obs_shapes: Mapping[str, list[int]], image_keys: list[str], n_obs_steps: int):
        super().__init__()
        if image_keys:
            raise ValueError(f"image observations need an image encoder; not available for this head yet "
                             f"(image_keys={list(image_keys)})")
        self.keys = sorted(obs_shapes)
        self.out_dim = n_obs_steps * sum(math.prod(obs_shapes[k]) for k in self.keys)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`obs`: already normalized {key: (B, n_obs_steps, *shape)} -> (B, out_dim)."""
        return torch.cat([obs[k].reshape(obs[k].shape[0], -1) for k in self.keys], dim=-1)
