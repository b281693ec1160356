"""Record episodes as they happen and commit each one whole to an EpisodeStore, or not at all.

Steps are buffered in memory; the episode reaches the store in one atomic `append_episode` at its end (the
store writes its commit record last), so a crash, Ctrl-C or SIGKILL at any moment leaves every earlier
episode intact and never a half-written one. An episode cut short by Ctrl-C, an exception or an e-stop is
either saved whole and marked `interrupted: <reason>` or discarded, as `on_interrupt` says; a second Ctrl-C
while it is being committed is held back until the commit is done.

Each row is one control step: the observation the action was chosen from (with its timestamp), the action
sent, and the reward that followed, the layout training windows expect.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.data.store import EpisodeStore

ON_INTERRUPT = ("save", "discard")


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done, then deliver it (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


@dataclass
class _Episode:
    meta: dict[str, Any]
    wall_start: float
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    steps: int = 0


class EpisodeRecorder:
    """Buffers the episodes of one or more envs (by index) and commits each to `store` when it ends."""

    def __init__(self, store: EpisodeStore, obs_keys: Sequence[str] | None = None, on_interrupt: str = "save",
                 action_key: str = "action", reward_key: str = "reward", timestamp_key: str = "timestamp",
                 meta: Mapping[str, Any] | None = None):
        if on_interrupt not in ON_INTERRUPT:
            raise ValueError(f"on_interrupt must be one of {ON_INTERRUPT}, got {on_interrupt!r}")
        if not store.writable:
            raise PermissionError(f"{store.path} is open read-only; open it with EpisodeStore.open(path, mode='a') "
                                  f"to record into it")
        self.store = store
        self.obs_keys = None if obs_keys is None else tuple(obs_keys)
        self.on_interrupt = on_interrupt
        self.step_keys = (action_key, reward_key, timestamp_key)
        if len(set(self.step_keys)) != 3:
            raise ValueError(f"action, reward and timestamp keys must differ, got {self.step_keys}")
        self.meta = dict(meta or {})
        self._open: dict[int, _Episode] = {}
        if self.obs_keys is not None:
            self._check_keys(self.obs_keys)

    def _check_keys(self, obs_keys: Sequence[str]) -> None:
        clash = sorted(set(obs_keys) & set(self.step_keys))
        if clash:
            raise ValueError(f"observation keys {clash} clash with the recorder's step keys {self.step_keys}; "
                             f"pass other action_key/reward_key/timestamp_key names")
        want = {*obs_keys, *self.step_keys}
        have = set(self.store.keys)
        if have and have != want:
            raise KeyError(f"store {self.store.path} holds keys {sorted(have)} but this recorder writes "
                           f"{sorted(want)}; record into a new store or pick matching obs_keys")

    # ------------------------------------------------------------------ one episode
    def recording(self, env: int = 0) -> bool:
        return env in self._open

    @property
    def open_envs(self) -> list[int]:
        return sorted(self._open)

    def start(self, env: int = 0, **meta: Any) -> None:
        """Begin buffering a new episode for `env` (its per-episode metadata: seed, task, operator...)."""
        if env in self._open:
            raise RuntimeError(f"env {env} is already recording an episode; finish() or discard() it first")
        self._open[env] = _Episode(meta={**self.meta, **meta}, wall_start=time.time())

    def add(self, obs: Mapping[str, np.ndarray], action: np.ndarray, reward: float, env: int = 0,
            timestamp: float | None = None) -> None:
        """One step: the observation the action was chosen from, the action, the reward that followed."""
        episode = self._open.get(env)
        if episode is None:
            raise RuntimeError(f"env {env} is not recording; call start(env={env}) first")
        if self.obs_keys is None:
            self.obs_keys = tuple(obs)
            self._check_keys(self.obs_keys)
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation is missing recorded key(s) {missing}; it has {sorted(obs)}")
        if timestamp is None:
            timestamp = getattr(obs, "timestamp", None)
        if timestamp is None:
            raise ValueError("a recorded step needs a timestamp: pass an Observation or timestamp=")
        action_key, reward_key, timestamp_key = self.step_keys
        row = {k: np.array(obs[k]) for k in self.obs_keys}
        row[action_key] = np.asarray(action, np.float32)
        row[reward_key] = np.float32(reward)
        row[timestamp_key] = np.float64(timestamp)
        for key, value in row.items():
            episode.columns.setdefault(key, []).append(value)
        episode.steps += 1

    def finish(self, env: int = 0, *, success: bool, reason: str, interrupted: str | None = None) -> int | None:
        """End `env`'s episode and commit it whole; returns its index in the store (None if it had no step).

        `interrupted` (a reason) marks an abnormal end, which `on_interrupt` may turn into a discard."""
        if env not in self._open:
            raise RuntimeError(f"env {env} is not recording; nothing to finish")
        with deferred_sigint():  # from here on the episode is either committed whole or dropped, never lost midway
            episode = self._open.pop(env)
            if episode.steps == 0 or (interrupted is not None and self.on_interrupt == "discard"):
                return None
            times = episode.columns[self.step_keys[2]]
            data = {key: np.stack(values) for key, values in episode.columns.items()}
            meta = {**episode.meta, "success": bool(success), "reason": reason, "interrupted": interrupted,
                    "t_start": float(times[0]), "t_end": float(times[-1]), "wall_start": episode.wall_start}
            return self.store.append_episode(data, **meta)

    def discard(self, env: int = 0) -> None:
        """Drop `env`'s buffered episode (re-record)."""
        if self._open.pop(env, None) is None:
            raise RuntimeError(f"env {env} is not recording; nothing to discard")

    def interrupt(self, reason: str, success: bool = False) -> list[int]:
        """End every open episode as interrupted: saved whole and marked, or discarded (`on_interrupt`)."""
        saved = []
        for env in self.open_envs:
            index = self.finish(env, success=success, reason="interrupted", interrupted=reason)
            if index is not None:
                saved.append(index)
        return saved
