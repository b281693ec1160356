"""diffusion_policy replay-buffer zarr (`data/<key>` time-major arrays + `meta/episode_ends`) <-> EpisodeStore.

Import keeps every array and episode boundary exactly. Image arrays (N, H, W, C) stored as float 0..255 (as in
the Push-T release) become uint8, but only after checking every value is an integer in range, so nothing is
rounded; other dtypes are kept as they are. The source is never written to, and `dest` is either the complete
result or what it was before (output.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from robolearn.data.formats.output import building, check_separate, new_store
from robolearn.data.formats.replay_buffer import (
    check_arrays,
    check_chunks,
    check_members,
    is_replay_buffer,
    open_replay_buffer,
    read_episode_ends,
    reading,
)
from robolearn.data.store import EpisodeStore


def _looks_like_image(arr: zarr.Array) -> bool:
    return arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] >= 8 and arr.shape[2] >= 8


def _as_uint8_image(source: Path, key: str, block: np.ndarray) -> np.ndarray:
    if block.dtype == np.uint8:
        return block
    if block.min() < 0 or block.max() > 255 or not np.array_equal(block, np.round(block)):
        raise ValueError(f"{source}: image key {key!r} has values that are not integers in 0..255; "
                         f"import it without conversion with keep_dtypes=True")
    return block.astype(np.uint8)


def import_diffusion_policy(source: str | os.PathLike, dest: str | os.PathLike, *, task: str | None = None,
                            fps: float | None = None, keys: list[str] | None = None,
                            rename: dict[str, str] | None = None, keep_dtypes: bool = False,
                            overwrite: bool = False, progress: bool = True,
                            allow_missing_chunks: bool = False) -> EpisodeStore:
    """Copy a diffusion_policy zarr (zarr v2 or v3, directory or .zip) into a new EpisodeStore at `dest`.

    The source is checked whole before anything is written (replay_buffer.py); the store is built at a temporary
    sibling and renamed into place when complete, and `overwrite` replaces only an existing EpisodeStore."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no diffusion_policy dataset at {source}")
    check_separate(source, dest)
    with reading(source):  # everything the import trusts, checked before anything is written
        group = open_replay_buffer(source)
        check_members(source, group)
        data = group["data"]
        available = sorted(name for name, _ in data.arrays())
        keys = keys or available
        missing = sorted(set(keys) - set(available))
        if missing:
            raise KeyError(f"{source}: data/ has no arrays {missing}; it has {available}")
        rename = rename or {}
        n_steps = check_arrays(source, {k: data[k] for k in keys})
        # episode ends are never all fill value, so their chunks are always required
        check_chunks(source, "meta/episode_ends", group["meta/episode_ends"])
        ends = read_episode_ends(group, source, {k: n_steps for k in keys[:1]})
        if not allow_missing_chunks:
            for key in keys:
                check_chunks(source, f"data/{key}", data[key])
        images = {k for k in keys if _looks_like_image(data[k]) and not keep_dtypes}

    def episodes() -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        begin = 0
        for i, end in enumerate(tqdm(ends, desc=f"import {source.name}", unit="ep", disable=not progress)):
            arrays = {}
            for key in keys:
                with reading(source):
                    block = data[key][begin:end]
                arrays[rename.get(key, key)] = _as_uint8_image(source, key, block) if key in images else block
            yield arrays, {"source": f"diffusion_policy:{source.name}", "source_episode": i}
            begin = int(end)

    with new_store(dest, overwrite=overwrite, fps=fps, task=task,
                   attrs={"imported_from": str(source.resolve()), "format": "diffusion_policy"}) as out:
        out.append_episodes(episodes(), commit_every=32)
    return EpisodeStore.open(dest)


def export_diffusion_policy(store: EpisodeStore | str | os.PathLike, dest: str | os.PathLike,
                            overwrite: bool = False) -> Path:
    """Write a store as a diffusion_policy replay buffer (zarr v2, so diffusion_policy's zarr-2 reader opens it).

    Built at a temporary sibling and renamed into place; `overwrite` replaces only another replay buffer. Every
    chunk is written, even one equal to the fill value, so the import's missing-chunk check accepts the export."""
    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    dest = Path(dest)
    check_separate(store.path, dest)
    with building(dest, overwrite=overwrite, owned=is_replay_buffer,
                  kind="diffusion_policy replay buffer (a zarr with data/ and meta/episode_ends)") as tmp:
        group = zarr.open_group(tmp, mode="w-", zarr_format=2)
        data = group.require_group("data")
        for key in store.keys:
            src = store.array(key)
            arr = data.create_array(key, shape=(store.n_steps, *src.shape[1:]), dtype=src.dtype,
                                    chunks=src.chunks, config={"write_empty_chunks": True})
            block = src.chunks[0] * 16
            for start in range(0, store.n_steps, block):
                arr[start:start + block] = store.read(key, start, start + block)
        ends = group.require_group("meta").create_array("episode_ends", shape=(store.n_episodes,), dtype=np.int64,
                                                         config={"write_empty_chunks": True})
        ends[:] = store.episode_ends
    return dest
