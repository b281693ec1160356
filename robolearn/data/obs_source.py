"""Where each observation key is read from in an EpisodeStore: a store key, optionally a slice of its last axis.

One imported dataset serves several tasks this way. The Push-T replay buffer stores `img` and a 5-D `state`
([agent_x, agent_y, block_x, block_y, block_angle]); the image task observes `image` and `agent_pos`, which
are `img` and `state[0:2]`. Mapping names (and slicing) at read time keeps a single copy of the data on disk,
and lets the policy and the environment use the environment's own key names.

A source is written `key` or `key[start:stop]` (non-negative integers, either may be left out as in Python).
Only the last axis is sliced, so a low-dim vector keeps its layout and an image can drop channels, and the
slice is never empty so every observation keeps a per-step shape.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from robolearn.env import ArraySpec

if TYPE_CHECKING:
    from robolearn.data.store import EpisodeStore

_SOURCE = re.compile(r"^(?P<key>[^\[\]\s]+)(?:\[(?P<start>\d*):(?P<stop>\d*)\])?$")


@dataclass(frozen=True)
class ObsSource:
    """Store key `key`, last axis sliced to [start, stop) (None: from the beginning / to the end)."""

    key: str
    start: int | None = None
    stop: int | None = None

    @property
    def sliced(self) -> bool:
        return self.start is not None or self.stop is not None

    def __str__(self) -> str:
        if not self.sliced:
            return self.key
        return f"{self.key}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"

    def bounds(self, size: int) -> tuple[int, int]:
        """The concrete [start, stop) on a last axis of `size`, refusing ranges that leave the axis or are empty
        (Python would silently clip them, hiding a wrong config until the policy sees the wrong numbers)."""
        start = 0 if self.start is None else self.start
        stop = size if self.stop is None else self.stop
        if stop > size:
            raise ValueError(f"observation source {str(self)!r}: slice stop {stop} is out of range for "
                             f"{self.key!r}, whose last axis has {size} entries")
        if start >= stop:
            raise ValueError(f"observation source {str(self)!r}: slice [{start}:{stop}] is empty; "
                             f"start must be below stop (and below {size})")
        return start, stop

    def spec(self, store_spec: ArraySpec) -> ArraySpec:
        """Per-step shape and dtype of this source, given the store key's spec."""
        if not self.sliced:
            return store_spec
        if not store_spec.shape:
            raise ValueError(f"observation source {str(self)!r}: {self.key!r} holds scalars (per-step shape ()), "
                             f"which have no axis to slice")
        start, stop = self.bounds(store_spec.shape[-1])
        return ArraySpec((*store_spec.shape[:-1], stop - start), store_spec.dtype)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Slice the last axis of rows (or statistics) read from the store key; a view, never a copy."""
        if not self.sliced:
            return values
        start, stop = self.bounds(values.shape[-1])
        return values[..., start:stop]


def parse_obs_source(text: str) -> ObsSource:
    """`"img"` -> ObsSource("img"); `"state[0:2]"` -> ObsSource("state", 0, 2); bad syntax raises ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"an observation source must be a string like 'state' or 'state[0:2]', got {text!r}")
    match = _SOURCE.match(text.strip())
    if match is None:
        raise ValueError(f"bad observation source {text!r}: expected a store key, optionally with a slice of its "
                         f"last axis written [start:stop] in non-negative integers, e.g. 'img' or 'state[0:2]'")
    start, stop = match["start"], match["stop"]
    return ObsSource(match["key"], int(start) if start else None, int(stop) if stop else None)


def parse_obs_sources(obs_keys: Sequence[str], obs_sources: Mapping[str, str]) -> dict[str, ObsSource]:
    """The source of every observed key (a key without an entry is read from the store key of the same name).

    Entries for keys the task does not observe are refused: they are almost always a misspelt key whose
    intended mapping would otherwise be silently ignored."""
    unknown = sorted(set(obs_sources) - set(obs_keys))
    if unknown:
        raise ValueError(f"obs_sources names {unknown}, which are not observed keys; obs_keys is {list(obs_keys)}")
    return {key: parse_obs_source(obs_sources[key]) if key in obs_sources else ObsSource(key) for key in obs_keys}


def resolve_obs_keys(obs_keys: Sequence[str], obs_shapes: Mapping[str, object],
                     obs_sources: Mapping[str, str]) -> list[str]:
    """The keys a model reads: `obs_keys`, or when empty those of `obs_shapes` (filled in from a store), sorted.
    Both given must name the same keys, and every `obs_sources` entry must name one of them."""
    if obs_shapes and obs_keys and sorted(obs_keys) != sorted(obs_shapes):
        raise ValueError(f"obs_keys {list(obs_keys)} and obs_shapes keys {sorted(obs_shapes)} differ")
    keys = list(obs_keys or sorted(obs_shapes))
    parse_obs_sources(keys, obs_sources)
    return keys


def store_obs_specs(store: EpisodeStore, obs_keys: Sequence[str], obs_sources: Mapping[str, str],
                    reader: str = "the model") -> dict[str, ArraySpec]:
    """Per-step spec of each observed key as read from `store` through `obs_sources` (slices checked here)."""
    sources = parse_obs_sources(obs_keys, obs_sources)
    specs = store.specs
    missing = sorted({s.key for s in sources.values()} - set(specs))
    if missing:
        raise KeyError(f"store {store.path} lacks keys {missing} that {reader} needs (observations {list(obs_keys)}); "
                       f"it has {store.keys}")
    return {key: source.spec(specs[source.key]) for key, source in sources.items()}


def action_dim_of(store: EpisodeStore, action_key: str) -> int:
    """The store's action vector size; actions must be vectors (per-step shape (action_dim,))."""
    if action_key not in store.specs:
        raise KeyError(f"store {store.path} has no action key {action_key!r}; it has {store.keys}")
    shape = store.specs[action_key].shape
    if len(shape) != 1:
        raise ValueError(f"actions {action_key!r} in {store.path} must be vectors (per-step shape (action_dim,)), "
                         f"got {shape}")
    return int(shape[0])
