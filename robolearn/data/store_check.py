"""Integrity of an EpisodeStore: the cheap checks every open runs (metadata only), the guard that turns a missing
chunk file into an error instead of silent zeros, and the full `verify` that reads every byte.

The record (root attribute `robolearn`) and the arrays are written separately, so a damaged or hand-edited
store can disagree with itself; without these checks a record longer than the arrays reads as rows of zeros.
Arrays longer than the record are legal: an append killed mid-episode leaves uncommitted rows past the last
committed step (the next append overwrites them), and keys are resized one after another.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robolearn.data.store_errors import StoreFormatError

if TYPE_CHECKING:
    import zarr

    from robolearn.data.store import EpisodeStore

FIX = "the store is damaged or was edited by hand: restore it from a backup, or import/collect it again"


def check_record(path: Path, record: dict[str, Any]) -> None:
    """The record's own shape: keys with numeric dtypes, episodes with positive integer lengths."""
    keys, episodes = record.get("keys"), record.get("episodes")
    fps, task, attrs = record.get("fps"), record.get("task"), record.get("attrs", {})
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps)
                            or fps <= 0):
        raise StoreFormatError(f"store {path}: the record's fps is {fps!r}, not a positive number or null; {FIX}")
    if task is not None and not isinstance(task, str):
        raise StoreFormatError(f"store {path}: the record's task is {task!r}, not a name or null; {FIX}")
    if not isinstance(attrs, dict):
        raise StoreFormatError(f"store {path}: the record's 'attrs' is {type(attrs).__name__}, not a mapping; {FIX}")
    if not isinstance(keys, dict):
        raise StoreFormatError(f"store {path}: the record's 'keys' is {type(keys).__name__}, not a mapping; {FIX}")
    if not isinstance(episodes, list):
        raise StoreFormatError(f"store {path}: the record's 'episodes' is {type(episodes).__name__}, not a list; "
                               f"{FIX}")
    for key, spec in keys.items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise StoreFormatError(f"store {path}: key {key!r} has per-step shape {shape!r} in the record, not a "
                                   f"list of sizes; {FIX}")
        try:
            dtype = np.dtype(spec.get("dtype"))
        except TypeError as err:
            raise StoreFormatError(f"store {path}: key {key!r} has dtype {spec.get('dtype')!r}, which is not a "
                                   f"numpy dtype ({err}); {FIX}") from err
        if dtype.kind not in "biuf":
            raise StoreFormatError(f"store {path}: key {key!r} has dtype {dtype} in the record; stores hold numeric "
                                   f"arrays only; {FIX}")
    if episodes and not keys:
        raise StoreFormatError(f"store {path}: the record lists {len(episodes)} episodes but no keys; {FIX}")
    for i, episode in enumerate(episodes):
        length = episode.get("length") if isinstance(episode, dict) else None
        if not isinstance(episode, dict):
            raise StoreFormatError(f"store {path}: episode {i} in the record is {type(episode).__name__}, not a "
                                   f"mapping of metadata; {FIX}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise StoreFormatError(f"store {path}: episode {i} has length {length!r} ({type(length).__name__}); "
                                   f"episode ends must be integers; {FIX}")
        if length < 1:
            raise StoreFormatError(f"store {path}: episode {i} has length {length}; episode ends must increase "
                                   f"(every episode has at least one step); {FIX}")


def check_arrays(path: Path, record: dict[str, Any], root: zarr.Group) -> dict[str, zarr.Array]:
    """Open each listed key's array (metadata only) and check it against the record; returns the arrays."""
    n_steps = sum(ep["length"] for ep in record["episodes"])
    group = _node(path, root, "data")
    if hasattr(group, "dtype"):
        raise StoreFormatError(f"store {path}: data/ is an array, not the group of the keys' arrays; {FIX}")
    arrays = {}
    for key, spec in record["keys"].items():
        arr = _node(path, group, key, f"key {key!r} is listed in the record but ")
        if not hasattr(arr, "dtype"):
            raise StoreFormatError(f"store {path}: data/{key} is a group, not an array; {FIX}")
        want = np.dtype(spec["dtype"])
        if arr.dtype != want:
            raise StoreFormatError(f"store {path}: key {key!r} holds dtype {arr.dtype} but the record says {want}; "
                                   f"{FIX}")
        if tuple(arr.shape[1:]) != tuple(spec["shape"]):
            raise StoreFormatError(f"store {path}: key {key!r} holds per-step shape {tuple(arr.shape[1:])} but the "
                                   f"record says {tuple(spec['shape'])}; {FIX}")
        if not all(isinstance(c, int) and c >= 1 for c in arr.chunks):
            raise StoreFormatError(f"store {path}: key {key!r} has chunk shape {arr.chunks} in data/{key}/zarr.json; "
                                   f"chunks hold at least one row; {FIX}")
        if arr.shape[0] < n_steps:
            raise StoreFormatError(f"store {path}: key {key!r} has {arr.shape[0]} rows but the record's episodes "
                                   f"end at step {n_steps} (the record is longer than the array); {FIX}")
        arrays[key] = arr
    return arrays


def _node(path: Path, group: zarr.Group, name: str, context: str = "") -> Any:
    """A child of `group` read from its zarr.json; a missing or damaged file is a StoreFormatError naming it."""
    where = f"{group.path}/{name}".lstrip("/")
    if not (path / where / "zarr.json").is_file():
        missing = f"{where}/zarr.json" if (path / where).exists() else where
        raise StoreFormatError(f"store {path}: {context}{missing} is missing; {FIX}")
    try:
        return group[name]
    except Exception as err:  # zarr and json raise many types for a damaged metadata file
        raise StoreFormatError(f"store {path}: {where}/zarr.json is damaged ({type(err).__name__}: {err}); "
                               f"{FIX}") from err


def damaged(path: Path, key: str, err: Exception) -> StoreFormatError:
    """A read of committed rows that failed in zarr (a garbled or truncated chunk fails its codec's checks)."""
    return StoreFormatError(f"store {path}: key {key!r} does not read back ({type(err).__name__}: {err}); run "
                            f"`robolearn info {path} --verify` to list every damaged chunk; {FIX}")


class ChunkGuard:
    """Raises for a missing chunk file that holds committed rows, in a store whose every chunk was written.

    zarr reads a missing chunk as the fill value (zeros). New stores write every chunk, so there a missing
    file is damage. The store calls this only when a read finds nothing, so intact reads cost nothing."""

    def __init__(self, path: Path, chunk_rows: dict[str, int]):
        self.path, self.chunk_rows, self.n_steps = path, chunk_rows, 0

    def missing(self, store_key: str) -> None:
        parts = store_key.split("/")  # data/<key>/c/<i>/0/...: zarr v3's default chunk key encoding
        if len(parts) < 4 or parts[0] != "data" or parts[2] != "c" or parts[1] not in self.chunk_rows:
            return
        rows = self.chunk_rows[parts[1]]
        start = int(parts[3]) * rows
        if start < self.n_steps:  # a chunk past the committed rows is legitimately absent (the next append's)
            raise StoreFormatError(f"store {self.path}: chunk file {store_key} is missing (rows {start}-"
                                   f"{min(start + rows, self.n_steps) - 1} of key {parts[1]!r}); {FIX}")


def verify(store: EpisodeStore) -> dict[str, Any]:
    """Read every committed chunk of every key: it must exist (where the store writes every chunk), decode and,
    for floats, be finite. Returns a report; raises StoreFormatError listing every problem found.

    Works on a fresh read-only open of the path, so the record on disk (not this handle's copy) is checked."""
    store = type(store).open(store.path)
    problems: list[str] = []
    report: dict[str, Any] = {"path": str(store.path), "episodes": store.n_episodes, "steps": store.n_steps,
                              "all_chunks_written": store.all_chunks_written, "keys": {}}
    n = store.n_steps
    for key in store.keys:
        arr = store.array(key)
        rows = arr.chunks[0]
        n_chunks = math.ceil(n / rows)
        unwritten = 0
        for i in range(n_chunks):
            start, stop = i * rows, min(n, (i + 1) * rows)
            chunk_key = arr.metadata.encode_chunk_key((i, *([0] * (arr.ndim - 1))))
            where = f"key {key!r} rows {start}-{stop - 1} (file data/{key}/{chunk_key})"
            if not (store.path / "data" / key / chunk_key).is_file():
                if store.all_chunks_written:
                    problems.append(f"{where}: the chunk file is missing")
                else:
                    unwritten += 1  # older stores skipped all-zero chunks: they read as zeros, as written
                continue
            try:
                block = arr[start:stop]
            except Exception as err:  # codecs raise their own types for garbled bytes
                problems.append(f"{where}: does not decode ({type(err).__name__}: {err})")
                continue
            if block.dtype.kind == "f" and not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))[0, 0])
                problems.append(f"{where}: NaN or infinite values (first at row {bad})")
        report["keys"][key] = {"chunks": n_chunks, "chunk_rows": rows, "unwritten_zero_chunks": unwritten,
                               "uncommitted_rows": max(0, arr.shape[0] - n)}
    if problems:
        raise StoreFormatError(f"store {store.path} failed verification ({len(problems)} problem"
                               f"{'s' if len(problems) > 1 else ''}):\n  - " + "\n  - ".join(problems) + f"\n{FIX}")
    return report
