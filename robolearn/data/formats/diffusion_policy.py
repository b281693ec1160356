"""diffusion_policy replay-buffer zarr (`data/<key>` time-major arrays + `meta/episode_ends`) <-> EpisodeStore.

Import keeps every array and episode boundary exactly. Image arrays (N, H, W, C) stored as float 0..255 (as in
the Push-T release) become uint8, but only after checking every value is an integer in range, so nothing is
rounded; other dtypes are kept as they are.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from robolearn.data.store import EpisodeStore, StoreFormatError


def _looks_like_image(arr: zarr.Array) -> bool:
    return arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] >= 8 and arr.shape[2] >= 8


def _as_uint8_image(key: str, block: np.ndarray) -> np.ndarray:
    if block.dtype == np.uint8:
        return block
    if block.min() < 0 or block.max() > 255 or not np.array_equal(block, np.round(block)):
        raise ValueError(f"image key {key!r} has values that are not integers in 0..255; "
                         f"import it without conversion with keep_dtypes=True")
    return block.astype(np.uint8)


def read_episode_ends(group: zarr.Group, source: Path, lengths: dict[str, int]) -> np.ndarray:
    ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
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


def import_diffusion_policy(source: str | os.PathLike, dest: str | os.PathLike, *, task: str | None = None,
                            fps: float | None = None, keys: list[str] | None = None,
                            rename: dict[str, str] | None = None, keep_dtypes: bool = False,
                            overwrite: bool = False, progress: bool = True) -> EpisodeStore:
    """Copy a diffusion_policy zarr (zarr v2 or v3, directory or .zip) into a new EpisodeStore at `dest`."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no diffusion_policy dataset at {source}")
    store = zarr.storage.ZipStore(source, mode="r") if source.suffix == ".zip" else zarr.storage.LocalStore(source, read_only=True)
    group = zarr.open_group(store=store, mode="r")
    if "data" not in group or "meta" not in group or "episode_ends" not in group["meta"]:
        raise StoreFormatError(f"{source} is not a diffusion_policy replay buffer: expected groups data/ and "
                               f"meta/ with meta/episode_ends")
    data = group["data"]
    available = sorted(name for name, _ in data.arrays())
    keys = keys or available
    missing = sorted(set(keys) - set(available))
    if missing:
        raise KeyError(f"{source}: data/ has no arrays {missing}; it has {available}")
    rename = rename or {}
    ends = read_episode_ends(group, source, {k: data[k].shape[0] for k in keys})
    images = {k for k in keys if _looks_like_image(data[k]) and not keep_dtypes}

    def episodes() -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        begin = 0
        for i, end in enumerate(tqdm(ends, desc=f"import {source.name}", unit="ep", disable=not progress)):
            arrays = {}
            for key in keys:
                block = data[key][begin:end]
                arrays[rename.get(key, key)] = _as_uint8_image(key, block) if key in images else block
            yield arrays, {"source": f"diffusion_policy:{source.name}", "source_episode": i}
            begin = int(end)

    out = EpisodeStore.create(dest, fps=fps, task=task, overwrite=overwrite,
                              attrs={"imported_from": str(source.resolve()), "format": "diffusion_policy"})
    try:
        out.append_episodes(episodes(), commit_every=32)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # a half-imported copy is worse than none: the source is intact
        raise
    return out


def export_diffusion_policy(store: EpisodeStore, dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a store as a diffusion_policy replay buffer (zarr v2, so diffusion_policy's zarr-2 reader opens it)."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
    group = zarr.open_group(dest, mode="w", zarr_format=2)
    data = group.require_group("data")
    for key in store.keys:
        src = store.array(key)
        arr = data.create_array(key, shape=(store.n_steps, *src.shape[1:]), dtype=src.dtype,
                                chunks=src.chunks, overwrite=True)
        block = src.chunks[0] * 16
        for start in range(0, store.n_steps, block):
            arr[start:start + block] = store.read(key, start, start + block)
    ends = group.require_group("meta").create_array("episode_ends", shape=(store.n_episodes,), dtype=np.int64,
                                                     overwrite=True)
    ends[:] = store.episode_ends
    return dest
