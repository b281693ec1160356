"""Observation history -> one condition vector shared by every policy head.

Keys are visited in sorted order and each contributes its whole history: low-dim keys flattened as they are,
image keys through a VisionEncoder applied to every frame (time folded into the batch, so all frames share
weights), giving n_obs_steps * feature_dim numbers per camera. Each camera has its own encoder unless
`share_image_encoder` is set: different viewpoints see different things, and separate trunks are what
Diffusion Policy found to work best. Inputs are already normalized (images as float in [-1, 1]).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from robolearn.nn.vision import VisionEncoder


def _module_name(key: str) -> str:
    """Observation keys may contain dots ("observation.image"); module names may not."""
    return key.replace(".", "__")


class ObsEncoder(nn.Module):
    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], image_keys: Sequence[str], n_obs_steps: int, *,
                 crop_ratio: float = 0.9, feature_dim: int = 64, n_keypoints: int = 32,
                 share_image_encoder: bool = False):
        """`crop_ratio`: side of the (random at train, centre at eval) crop as a fraction of each image side;
        `feature_dim` and `n_keypoints` size each VisionEncoder. The keyword defaults are what a policy gets
        when its config does not set them."""
        super().__init__()
        unknown = sorted(set(image_keys) - set(obs_shapes))
        if unknown:
            raise ValueError(f"image_keys {unknown} are not observed keys; obs_shapes has {sorted(obs_shapes)}")
        if not 0.0 < crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
        self.keys = sorted(obs_shapes)
        self.image_keys = sorted(image_keys)
        self.n_obs_steps = n_obs_steps
        self.vision = nn.ModuleDict()
        self._encoder_of: dict[str, str] = {}  # image key -> name of its encoder in self.vision
        for key in self.image_keys:
            shape = tuple(int(s) for s in obs_shapes[key])
            if len(shape) != 3:
                raise ValueError(f"image key {key!r} must have shape (H, W, C), got {list(shape)}")
            name = "shared" if share_image_encoder else _module_name(key)
            if name in self.vision:
                if not share_image_encoder:
                    raise ValueError(f"image keys {sorted(k for k in self._encoder_of if self._encoder_of[k] == name)}"
                                     f" and {key!r} map to the same module name {name!r}")
                if self.vision[name].image_shape != shape:
                    raise ValueError(f"a shared image encoder needs one image shape; {key!r} is {list(shape)}, "
                                     f"{self.image_keys[0]!r} is {list(self.vision[name].image_shape)}")
            else:
                crop = (max(1, round(crop_ratio * shape[0])), max(1, round(crop_ratio * shape[1])))
                self.vision[name] = VisionEncoder(shape, crop, feature_dim=feature_dim, n_keypoints=n_keypoints)
            self._encoder_of[key] = name
        per_step = sum(feature_dim if k in self._encoder_of else math.prod(obs_shapes[k]) for k in self.keys)
        self.out_dim = n_obs_steps * per_step

    def forward(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """`obs`: already normalized {key: (B, n_obs_steps, *shape)} -> (B, out_dim).

        `generator` drives the random crops (training mode only); the frames of one sample share a crop."""
        parts = []
        for key in self.keys:
            x = obs[key]
            b, t = x.shape[:2]
            if key in self._encoder_of:
                features = self.vision[self._encoder_of[key]](x.reshape(b * t, *x.shape[2:]), generator,
                                                              frames_per_sample=t)
                parts.append(features.reshape(b, -1))
            else:
                parts.append(x.reshape(b, -1))
        return torch.cat(parts, dim=-1)
