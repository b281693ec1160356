"""Per-key affine normalization that lives inside the policy, so a checkpoint carries its own statistics.

Low-dim keys map their per-dimension [min, max] onto [-1, 1] (the range diffusion models are trained in);
uint8 images map 0..255 onto [-1, 1] without fitting. Dimensions that never vary keep their value centred
at 0 instead of dividing by zero.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from robolearn.data.obs_source import ObsSource, parse_obs_sources

if TYPE_CHECKING:
    from robolearn.data.store import EpisodeStore

_EPS = 1e-4


class Normalizer(nn.Module):
    def __init__(self, shapes: Mapping[str, tuple[int, ...]], image_keys: tuple[str, ...] = ()):
        """`shapes`: the per-step shape of each low-dim key to normalize; `image_keys` are uint8 images."""
        super().__init__()
        self.image_keys = tuple(image_keys)
        self.lowdim_keys = tuple(shapes)
        for key, shape in shapes.items():
            self.register_buffer(self._name(key, "scale"), torch.ones(shape))
            self.register_buffer(self._name(key, "offset"), torch.zeros(shape))

    @staticmethod
    def _name(key: str, what: str) -> str:
        return f"{key.replace('.', '__')}__{what}"

    def fit(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> Normalizer:
        """Set each low-dim key's affine map from its `min`/`max` statistics (see EpisodeStore.stats)."""
        for key in self.lowdim_keys:
            if key not in stats:
                raise KeyError(f"no statistics for {key!r}; have {sorted(stats)}")
            lo = np.asarray(stats[key]["min"], dtype=np.float64)
            hi = np.asarray(stats[key]["max"], dtype=np.float64)
            span = hi - lo
            const = span < _EPS
            scale = np.where(const, 1.0, 2.0 / np.where(const, 1.0, span))
            offset = np.where(const, -lo, -1.0 - lo * scale)
            getattr(self, self._name(key, "scale")).copy_(torch.as_tensor(scale, dtype=torch.float32))
            getattr(self, self._name(key, "offset")).copy_(torch.as_tensor(offset, dtype=torch.float32))
        return self

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key in self.image_keys:
            return x.float() * (2.0 / 255.0) - 1.0
        return x.float() * getattr(self, self._name(key, "scale")) + getattr(self, self._name(key, "offset"))

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key in self.image_keys:
            return (x + 1.0) * (255.0 / 2.0)
        return (x - getattr(self, self._name(key, "offset"))) / getattr(self, self._name(key, "scale"))

    def normalize_all(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.normalize(k, v) for k, v in values.items()}


def fit_from_stores(normalizer: Normalizer, stores: Sequence[EpisodeStore], obs_sources: Mapping[str, str],
                    action_key: str) -> Normalizer:
    """Fit every low-dim key of `normalizer` from store statistics: observations read through `obs_sources` (so a
    sliced key gets its slice's range) and "action" from `action_key`; several stores: the union of their ranges.
    The one place policies, critics and world models take their normalization from."""
    keys = [k for k in normalizer.lowdim_keys if k != "action"]
    sources = parse_obs_sources(keys, {k: v for k, v in obs_sources.items() if k in keys})
    needed = {**{key: source for key, source in sources.items()}, "action": ObsSource(action_key)}
    stats: dict[str, dict[str, np.ndarray]] = {}
    for store in stores:
        per_store_key: dict[str, dict[str, np.ndarray]] = {}  # two observed keys may slice the same store key
        for key, source in needed.items():
            if source.key not in per_store_key:
                per_store_key[source.key] = store.stats(source.key)
            lo, hi = (source.apply(per_store_key[source.key][name]) for name in ("min", "max"))
            if key in stats:
                lo, hi = np.minimum(stats[key]["min"], lo), np.maximum(stats[key]["max"], hi)
            stats[key] = {"min": lo, "max": hi}
    return normalizer.fit(stats)
