"""EpisodeStore: demonstrations as time-major zarr v3 arrays, one per key, appended episode by episode.

Layout on disk::

    store.zarr/
      zarr.json        root attributes = the commit record: format, version, keys, episodes (length + metadata)
      data/<key>       (total_steps, *shape) arrays, chunked along time

Crash safety: every file is written to a temporary name and renamed into place (rename is atomic on POSIX),
and an append writes the new rows first and the commit record last. Rows past the committed step count are
invisible to readers and overwritten by the next append, so a crash or Ctrl-C mid-episode loses at most that
episode and never touches earlier ones.

Writers: one per store, enforced by a lock file (store_lock.py); `close()` or a `with` block releases it.
New stores are made with `EpisodeStore.build` (store_build.py), which names a store only once it is complete.
Every open checks the record against the arrays' metadata, and new stores write every chunk (even all-zero
ones) so that a missing chunk file is an error rather than silent zeros, and compress them with zstd's content
checksum so that a garbled chunk is an error rather than other numbers (store_check.py; `verify()` reads all).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from robolearn.data import store_check
from robolearn.data.store_build import INCOMPLETE, build_store, is_episode_store
from robolearn.data.store_errors import StoreFormatError, StoreIncompleteError, StoreLockedError
from robolearn.data.store_lock import LOCK_NAME, StoreLock
from robolearn.env import ArraySpec

__all__ = ["EpisodeStore", "StoreFormatError", "StoreIncompleteError", "StoreLockedError", "AtomicLocalStore"]

FORMAT = "robolearn.episode_store"
VERSION = 1
_CHUNK_BYTES = 1 << 20  # ~1 MiB per chunk: few files for low-dim keys, cheap random access to image frames
_MAX_CHUNK_STEPS = 8192


_WRITE_EVERY_CHUNK = {"write_empty_chunks": True}  # zarr skips all-zero chunks by default; then a lost file reads as 0
# zarr's default zstd has no checksum: a garbled chunk often decodes to other values without a word; with the
# frame's content checksum it fails to decode instead (older stores without it still read)
_CHECKED_ZSTD = ZstdCodec(level=0, checksum=True)


class AtomicLocalStore(LocalStore):
    """A zarr LocalStore whose every write is all-or-nothing (temp file + rename).

    `on_missing(key)` (set by EpisodeStore for stores that write every chunk) is told of each read that finds no
    file, and raises where that is damage; reads that find their file pay nothing for it."""

    on_missing: Callable[[str], None] | None = None

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_dir(prefix):
            if not (prefix == "" and key == LOCK_NAME):  # the write lock is not a zarr node
                yield key

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Buffer | None:
        value = await super().get(key, prototype, byte_range)
        if value is None and self.on_missing is not None:
            self.on_missing(key)
        return value

    async def set(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value.as_buffer_like())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class EpisodeStore:
    """Build with `EpisodeStore.build(path)`, open with `EpisodeStore.open(path, mode="r"|"a")`.

    A writable handle holds the store's write lock until `close()` (or the end of its `with` block)."""

    def __init__(self, root: zarr.Group, path: Path, writable: bool, lock: StoreLock | None = None):
        self._root = root
        self.path = path
        self.writable = writable
        self._lock = lock
        self._interrupted = False
        self._record: dict[str, Any] = dict(root.attrs["robolearn"])
        store_check.check_record(path, self._record)
        self._arrays: dict[str, zarr.Array] = {}
        if self._record["keys"]:
            self._arrays = store_check.check_arrays(path, self._record, root)
        self._guard = store_check.ChunkGuard(path, {k: a.chunks[0] for k, a in self._arrays.items()})
        if self.all_chunks_written:
            root.store.on_missing = self._guard.missing  # the guard holds no reference back to this handle
        self._ends = np.cumsum([ep["length"] for ep in self._record["episodes"]], dtype=np.int64)
        self._guard.n_steps = self.n_steps

    # ------------------------------------------------------------------ opening
    @classmethod
    def build(cls, path: str | os.PathLike, *, replace: bool = False,
              **create_kwargs: Any) -> contextlib.AbstractContextManager[EpisodeStore]:
        """`with EpisodeStore.build(path, fps=..., task=...) as store:` a new store, written under a temporary name
        and renamed into place when the block ends normally (deleted if it raises). See store_build.py."""
        return build_store(cls, path, replace=replace, **create_kwargs)

    @classmethod
    def create(cls, path: str | os.PathLike, *, fps: float | None = None, task: str | None = None,
               overwrite: bool = False, attrs: Mapping[str, Any] | None = None) -> EpisodeStore:
        """A new empty store written in place (prefer `build`, which names it only once complete)."""
        path = Path(path)
        if path.exists() and any(p.name != LOCK_NAME for p in path.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{path} already exists; open it with EpisodeStore.open(path, mode='a') "
                                      f"to append, or pass overwrite=True to replace it")
            if not is_episode_store(path):
                raise FileExistsError(f"{path} exists and is not an EpisodeStore; overwrite=True replaces stores "
                                      f"only, so nothing was deleted: move it away or choose another path")
        path.mkdir(parents=True, exist_ok=True)
        lock = StoreLock.acquire(path)  # before clearing: never overwrite a store someone is appending to
        try:
            for entry in path.iterdir():  # zarr's mode="w" would delete the lock file too
                if entry.name != LOCK_NAME:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            root = zarr.open_group(store=AtomicLocalStore(path), mode="a", zarr_format=3)
            root.require_group("data")
            root.attrs["robolearn"] = {
                "format": FORMAT, "version": VERSION, "fps": fps, "task": task, "created": time.time(),
                "attrs": dict(attrs or {}), "keys": {}, "episodes": [],
                "all_chunks_written": True,  # missing chunk files are damage (older stores skipped all-zero ones)
            }
            return cls(root, path, writable=True, lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no episode store at {path}")
        if mode == "r":
            return cls._open(path, mode, lock=None)
        if not (path / "zarr.json").is_file():  # refuse a non-store before leaving a lock file in it
            cls._open(path, "r", lock=None)
        lock = StoreLock.acquire(path)  # before reading the record: the previous writer's last commit is final
        try:
            return cls._open(path, mode, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open(cls, path: Path, mode: str, lock: StoreLock | None) -> EpisodeStore:
        try:
            root = zarr.open_group(store=AtomicLocalStore(path, read_only=mode == "r"), mode="r" if mode == "r" else "r+")
        except Exception as err:  # zarr raises several types for a folder that is not a group
            raise StoreFormatError(f"{path} is not a zarr group ({err})") from err
        record = root.attrs.get("robolearn")
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            hint = ""
            if "meta" in root and "episode_ends" in root["meta"]:
                hint = " It looks like a diffusion_policy replay buffer: import it with `robolearn convert`."
            raise StoreFormatError(f"{path} is not a robolearn EpisodeStore (no '{FORMAT}' record).{hint}")
        version = record.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise StoreFormatError(f"{path}: the record's version is {version!r}, not an integer; "
                                   f"{store_check.FIX}")
        if version > VERSION:
            raise StoreFormatError(f"{path} was written by a newer robolearn (store version {record['version']}, "
                                   f"this one reads up to {VERSION}); upgrade robolearn")
        if INCOMPLETE in root.attrs:
            raise StoreIncompleteError(f"{path} is an incomplete store (an import or collection that never finished: "
                                       f"{root.attrs[INCOMPLETE]}); delete it and import/collect again")
        return cls(root, path, writable=mode == "a", lock=lock)

    def close(self) -> None:
        """Release the write lock; the handle can still read. Idempotent."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.writable = False

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(self) -> dict[str, Any]:
        """Read every committed byte (see store_check.verify); a report dict, or StoreFormatError listing problems."""
        return store_check.verify(self)

    # ------------------------------------------------------------------ reading
    @property
    def keys(self) -> list[str]:
        return list(self._record["keys"])

    @property
    def specs(self) -> dict[str, ArraySpec]:
        return {k: ArraySpec(tuple(v["shape"]), v["dtype"]) for k, v in self._record["keys"].items()}

    @property
    def fps(self) -> float | None:
        return self._record.get("fps")

    @property
    def task(self) -> str | None:
        return self._record.get("task")

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._record.get("attrs", {}))

    @property
    def all_chunks_written(self) -> bool:
        """True for stores that write all-zero chunks too, where a missing chunk file is damage."""
        return bool(self._record.get("all_chunks_written", False))

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """Exclusive end step of each episode (the diffusion_policy convention)."""
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def episode_meta(self, index: int) -> dict[str, Any]:
        return dict(self._record["episodes"][self._check_episode(index)])

    def episode_bounds(self, index: int) -> tuple[int, int]:
        i = self._check_episode(index)
        return (int(self._ends[i - 1]) if i else 0), int(self._ends[i])

    def episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        start, stop = self.episode_bounds(index)
        return {k: self.read(k, start, stop) for k in (keys or self.keys)}

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.episode(i)

    def array(self, key: str) -> zarr.Array:
        """The raw zarr array of a key; only its first `n_steps` rows are committed data."""
        self._check_key(key)
        return self._arrays[key]

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_steps if stop is None else min(stop, self.n_steps)
        arr = self.array(key)
        try:
            return arr[start:stop]
        except StoreFormatError:
            raise
        except Exception as err:  # codecs raise their own types for a garbled or truncated chunk
            raise store_check.damaged(self.path, key, err) from err

    def read_rows(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Gather arbitrary (committed) rows of a key, reading each needed chunk once."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_steps):
            raise IndexError(f"rows out of range [0, {self.n_steps}) for key {key!r}")
        unique, inverse = np.unique(rows, return_inverse=True)
        arr = self.array(key)
        try:
            block = arr.get_orthogonal_selection((unique,))
        except StoreFormatError:
            raise
        except Exception as err:  # as in read()
            raise store_check.damaged(self.path, key, err) from err
        return block[inverse.reshape(rows.shape)]

    def stats(self, key: str) -> dict[str, np.ndarray]:
        """Per-dimension min, max, mean and std over all committed steps (computed chunk by chunk)."""
        arr = self.array(key)
        n = self.n_steps
        if n == 0:
            raise ValueError(f"store {self.path} has no episodes; statistics of {key!r} are undefined")
        rows = max(1, (64 << 20) // (math.prod(arr.shape[1:]) * arr.dtype.itemsize))  # ~64 MiB per block
        step = max(arr.chunks[0], rows - rows % arr.chunks[0])
        lo = hi = None
        total = np.zeros(arr.shape[1:], np.float64)
        total_sq = np.zeros(arr.shape[1:], np.float64)
        for s in range(0, n, step):
            block = self.read(key, s, min(n, s + step)).astype(np.float64)
            bmin, bmax = block.min(axis=0), block.max(axis=0)
            lo = bmin if lo is None else np.minimum(lo, bmin)
            hi = bmax if hi is None else np.maximum(hi, bmax)
            total += block.sum(axis=0)
            total_sq += np.square(block).sum(axis=0)
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - np.square(mean), 0.0))
        return {"min": lo, "max": hi, "mean": mean, "std": std}

    # ------------------------------------------------------------------ writing
    def append_episode(self, data: Mapping[str, np.ndarray], **meta: Any) -> int:
        """Append one episode atomically; returns its index. `meta` is JSON-serializable per-episode metadata."""
        return self.append_episodes([(data, meta)])[-1]

    def append_episodes(self, episodes: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
                        commit_every: int = 1) -> list[int]:
        """Append (data, meta) pairs, committing every `commit_every` episodes (bulk imports use more)."""
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only (or was closed); open it with mode='a' to append")
        if self._interrupted:
            raise RuntimeError(f"an earlier append to {self.path} was interrupted; its writes may still be "
                               f"landing, so close() this handle and reopen the store (EpisodeStore.open(path, "
                               f"'a')) to append again")
        indices: list[int] = []
        pending: list[dict[str, Any]] = []
        written = self.n_steps
        try:
            for data, meta in episodes:
                arrays = self._validate(data)
                length = len(next(iter(arrays.values())))
                record = _episode_record(length, meta)  # checked before any row is written
                for key, value in arrays.items():
                    arr = self._writer(key)
                    if arr.shape[0] != written + length:
                        arr.resize((written + length, *arr.shape[1:]))
                    arr[written:written + length] = value
                written += length
                pending.append(record)
                indices.append(self.n_episodes + len(pending) - 1)
                if len(pending) >= commit_every:
                    self._commit(pending)
                    pending = []
            if pending:
                self._commit(pending)
        except (KeyboardInterrupt, SystemExit):
            # zarr finishes I/O in a background thread: a late chunk write could land on the rows the next
            # append reuses, so this handle stops appending. Committed episodes are untouched either way.
            self._interrupted = True
            raise
        return indices

    def set_attrs(self, **attrs: Any) -> None:
        """Update store-level user attributes (e.g. provenance) without touching episodes."""
        record = dict(self._record)
        record["attrs"] = {**record.get("attrs", {}), **attrs}
        self._write_record(record)

    def _commit(self, new_episodes: list[dict[str, Any]]) -> None:
        record = dict(self._record)
        record["episodes"] = [*record["episodes"], *new_episodes]
        self._write_record(record)

    def _write_record(self, record: dict[str, Any]) -> None:
        self._root.attrs["robolearn"] = record  # one atomic file write: the commit point
        self._record = record
        self._ends = np.cumsum([ep["length"] for ep in record["episodes"]], dtype=np.int64)
        self._guard.n_steps = self.n_steps

    def _validate(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not data:
            raise ValueError("an episode needs at least one key")
        arrays = {k: np.asarray(v) for k, v in data.items()}
        lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all keys of an episode must have the same number of steps, got {lengths}")
        if next(iter(lengths.values())) == 0:
            raise ValueError(f"empty episode (0 steps) for keys {sorted(arrays)}; nothing to append")
        for key, value in arrays.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(np.argwhere(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))[0, 0])
                raise ValueError(f"key {key!r} has NaN or infinite values (first at step {bad} of the episode)")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"key {key!r} has dtype {value.dtype}; stores hold numeric arrays only")
            if 0 in value.shape[1:]:  # zarr can neither chunk nor write it: the store could not be read back
                raise ValueError(f"key {key!r} has per-step shape {value.shape[1:]}, which holds no values; leave "
                                 f"the key out")
        known = self._record["keys"]
        if not known:
            self._define_keys(arrays)
            return arrays
        missing, extra = sorted(set(known) - set(arrays)), sorted(set(arrays) - set(known))
        if missing or extra:
            raise KeyError(f"episode keys do not match the store: missing {missing}, unexpected {extra}")
        for key, value in arrays.items():
            want = known[key]
            if tuple(value.shape[1:]) != tuple(want["shape"]) or value.dtype != np.dtype(want["dtype"]):
                raise ValueError(f"key {key!r}: got per-step shape {value.shape[1:]} dtype {value.dtype}, the store "
                                 f"holds shape {tuple(want['shape'])} dtype {want['dtype']} (convert explicitly)")
        return arrays

    def _define_keys(self, arrays: Mapping[str, np.ndarray]) -> None:
        group = self._root["data"]
        for key, value in arrays.items():
            if "/" in key or not key:
                raise ValueError(f"invalid key {key!r}: use a non-empty name without '/'")
            step_bytes = max(1, value[0].nbytes)
            chunk_steps = int(min(_MAX_CHUNK_STEPS, max(1, _CHUNK_BYTES // step_bytes)))
            self._arrays[key] = group.create_array(key, shape=(0, *value.shape[1:]), dtype=value.dtype,
                                                   chunks=(chunk_steps, *value.shape[1:]), overwrite=True,
                                                   compressors=_CHECKED_ZSTD, config=_WRITE_EVERY_CHUNK)
            self._guard.chunk_rows[key] = chunk_steps
        record = dict(self._record)
        record["keys"] = {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.name} for k, v in arrays.items()}
        self._write_record(record)

    def _writer(self, key: str) -> zarr.Array:
        """The key's array set to write every chunk (zarr's write config is per handle, not stored on disk)."""
        arr = self._arrays[key]
        if not arr._async_array._config.write_empty_chunks:
            arr = zarr.Array(AsyncArray(metadata=arr.metadata, store_path=arr.store_path, config=_WRITE_EVERY_CHUNK))
            self._arrays[key] = arr
        return arr

    # ------------------------------------------------------------------ helpers
    def _check_key(self, key: str) -> None:
        if key not in self._record["keys"]:
            raise KeyError(f"store {self.path} has no key {key!r}; it has {self.keys}")

    def _check_episode(self, index: int) -> int:
        n = self.n_episodes
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"episode {index} out of range: store {self.path} has {n} episodes")
        return i

    def __len__(self) -> int:
        return self.n_episodes

    def __repr__(self) -> str:
        return (f"EpisodeStore({str(self.path)!r}, episodes={self.n_episodes}, steps={self.n_steps}, "
                f"keys={self.keys})")


def _episode_record(length: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    record = {"length": int(length)}
    for key, value in meta.items():
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"episode metadata {key!r} is {value}; metadata must be finite")
        record[key] = value
    return record
