"""`ReplayRunner`: the recorded actions of an episode, sent again one per control period through the same loop."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robolearn.data.store import EpisodeStore
from robolearn.env import EnvSpec


def recorded_actions(store: EpisodeStore, episode: int, spec: EnvSpec, action_key: str = "action") -> np.ndarray:
    """The actions of one stored episode, checked against what `spec`'s env takes."""
    if not 0 <= episode < store.n_episodes:
        raise IndexError(f"episode {episode} does not exist: {store.path} holds episodes 0..{store.n_episodes - 1}")
    if action_key not in store.specs:
        raise KeyError(f"{store.path} has no {action_key!r} key to replay; it has {store.keys}")
    mode, recorded_mode = spec.extra.get("action_mode"), store.attrs.get("action_mode")
    if recorded_mode is not None and mode is not None and recorded_mode != mode:
        raise ValueError(f"{store.path} was recorded with action_mode {recorded_mode!r}, this rig runs {mode!r}: "
                         f"replaying would send the numbers with another meaning")
    actions = np.asarray(store.episode(episode, keys=[action_key])[action_key], np.float32)
    if actions.ndim != 2 or actions.shape[1] != spec.action_dim:
        raise ValueError(f"episode {episode} of {store.path} holds actions of shape {actions.shape[1:]}, "
                         f"this env takes ({spec.action_dim},)")
    return actions


class ReplayRunner:
    """A ChunkRunner that plays back fixed actions for one env; run the loop with max_steps = len(actions)."""

    def __init__(self, actions: np.ndarray):
        self.actions = np.asarray(actions, np.float32)
        if self.actions.ndim != 2 or len(self.actions) == 0:
            raise ValueError(f"actions must be a non-empty (steps, action_dim) array, got shape {self.actions.shape}")
        self._next = 0

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        if len(observations) != 1:
            raise ValueError(f"a replay drives one env; got {len(observations)}")
        self._next = 0

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Open loop: what the robot does now does not change what was recorded."""

    def act(self) -> np.ndarray:
        if self._next >= len(self.actions):
            raise IndexError(f"the replay has only {len(self.actions)} actions; run the loop for that many steps")
        action = self.actions[self._next]
        self._next += 1
        return action[None]

    def close(self) -> None:
        """No actions are left to send after close (act raises) until the next reset."""
        self._next = len(self.actions)
