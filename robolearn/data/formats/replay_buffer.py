"""Reading and checking a diffusion_policy replay buffer (zarr v2 or v3, folder or .zip) before anything is written.

Everything an import trusts is checked up front, each with its own message naming the file and key: numeric
dtypes, one time axis of the same length in every array, integer strictly increasing `meta/episode_ends` that end
exactly at that length, and every chunk the arrays' shapes declare. zarr reads a missing chunk as the fill value,
so a lost chunk file would otherwise import as zeros without a word.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync

from robolearn.data.formats import source_errors
from robolearn.data.store import StoreFormatError


def open_replay_buffer(source: Path) -> zarr.Group:
    """The buffer's root group, read-only; StoreFormatError when it lacks data/ and meta/episode_ends."""
    if source.suffix == ".zip":
        store = zarr.storage.ZipStore(source, mode="r")
    else:
        store = zarr.storage.LocalStore(source, read_only=True)
    try:
        group = zarr.open_group(store=store, mode="r")
    except Exception as err:  # zarr raises several types for a path that is not a group
        raise StoreFormatError(f"{source} is not a zarr group ({err}); expected a diffusion_policy replay "
                               f"buffer with groups data/ and meta/") from err
    if "data" not in group or "meta" not in group or "episode_ends" not in group["meta"]:
        raise StoreFormatError(f"{source} is not a diffusion_policy replay buffer: expected groups data/ and "
                               f"meta/ with meta/episode_ends")
    if not isinstance(group["meta/episode_ends"], zarr.Array):
        raise StoreFormatError(f"{source}: meta/episode_ends is a group; it must be a 1-D integer array")
    return group


def is_replay_buffer(path: Path) -> bool:
    """Whether `path` is a diffusion_policy replay buffer folder (what an export may replace)."""
    if not path.is_dir():
        return False
    try:
        open_replay_buffer(path)
    except StoreFormatError:
        return False
    return True


def check_arrays(source: Path, arrays: dict[str, zarr.Array]) -> int:
    """Numeric dtypes and one shared time axis; returns its length."""
    lengths = {}
    for key, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise StoreFormatError(f"{source}: data/{key} has dtype {arr.dtype}; only numeric arrays (bool, int, "
                                   f"float) can be imported. Leave it out with keys=[...]")
        if arr.ndim == 0:
            raise StoreFormatError(f"{source}: data/{key} is a scalar; replay buffer arrays have a time axis first")
        if 0 in arr.shape[1:]:
            raise StoreFormatError(f"{source}: data/{key} has per-step shape {arr.shape[1:]}, which holds no "
                                   f"values; leave it out with keys=[...]")
        lengths[key] = arr.shape[0]
    first = next(iter(lengths))
    for key, n in lengths.items():
        if n != lengths[first]:
            raise StoreFormatError(f"{source}: data/{key} has {n} steps but data/{first} has {lengths[first]}; "
                                   f"every array of a replay buffer has one row per step")
    return lengths[first]


def read_episode_ends(group: zarr.Group, source: Path, lengths: dict[str, int]) -> np.ndarray:
    """meta/episode_ends as int64, checked: 1-D, integer, strictly increasing from > 0, ending at every array's length."""
    raw = group["meta/episode_ends"]
    if raw.dtype.kind not in "iu":
        raise StoreFormatError(f"{source}: meta/episode_ends has dtype {raw.dtype}; episode ends are integer step "
                               f"counts (int64), so this file was written wrongly")
    ends = np.asarray(raw[:], dtype=np.int64)
    if ends.ndim != 1 or len(ends) == 0:
        raise StoreFormatError(f"{source}: meta/episode_ends must be a non-empty 1-D array, got shape {ends.shape}")
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        bad = int(np.argmax(np.diff(ends, prepend=0) <= 0))
        raise StoreFormatError(f"{source}: episode {bad} is empty or episode_ends is not increasing "
                               f"(ends[{bad}] = {ends[bad]})")
    for key, n in lengths.items():
        if n != ends[-1]:
            raise StoreFormatError(f"{source}: data/{key} has {n} steps but episode_ends ends at {ends[-1]}")
    return ends


def reading(source: Path) -> contextlib.AbstractContextManager[None]:
    return source_errors.reading(source, "a diffusion_policy replay buffer",
                                 "the dataset is damaged: copy or download it again")


def check_members(source: Path, group: zarr.Group) -> None:
    """Every entry under data/ must be an array: one whose .zarray is lost would silently drop out of the import."""
    arrays = {name for name, _ in group["data"].arrays()}
    stray = sorted(name for name in sync(_children(group.store, "data")) - arrays
                   if not name.startswith(".") and name != "zarr.json")  # v2 and v3 metadata files
    if stray:
        raise StoreFormatError(f"{source}: data/{stray[0]} is not a readable zarr array (its metadata file is "
                               f"missing or damaged); copy or download the dataset again")


async def _children(store: zarr.abc.store.Store, prefix: str) -> set[str]:
    return {key async for key in store.list_dir(prefix)}


async def _listing(store: zarr.abc.store.Store, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def check_chunks(source: Path, name: str, arr: zarr.Array) -> None:
    """Every chunk the array's shape declares must be stored (see the module docstring for why)."""
    grid = arr.cdata_shape
    if 0 in grid:
        return
    present = sync(_listing(arr.store_path.store, f"{arr.store_path.path}/"))
    for coords in itertools.product(*(range(n) for n in grid)):
        key = arr.metadata.encode_chunk_key(coords)
        if f"{arr.store_path.path}/{key}" not in present:
            first = coords[0] * arr.chunks[0]
            last = min(arr.shape[0], first + arr.chunks[0]) - 1
            raise StoreFormatError(f"{source}: {name} is missing chunk {key} (steps {first}..{last}); zarr would "
                                   f"read it as the fill value {arr.fill_value!r}, not data. Copy or download the "
                                   f"dataset again; if its writer skips chunks equal to the fill value (zarr 3 "
                                   f"does by default, as did robolearn exports before this check), import it "
                                   f"with allow_missing_chunks=True")
