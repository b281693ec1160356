"""Where Windows reads each key from: RAM, a frame file on disk (camera keys), or the store's zarr chunks.

- "ram": every key read into memory once;
- "disk": low-dim keys in RAM (small), camera keys (uint8 H x W x C) from their frame file (frame_file.py:
  one LZ4 blob per frame, memory-mapped, so a random window decodes only the frames it uses);
- "none": every key read from the store's zarr chunks at each batch (no memory, no derived file);
- "auto": "ram" when all keys take less than half of the available memory, else "disk"; one log line says
  which and why. `ROBOLEARN_RAM_BUDGET_MB` replaces "half of the available memory" (to test, or to leave
  room for other jobs).
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from robolearn.data.frame_file import FrameFile
from robolearn.data.store import EpisodeStore

log = logging.getLogger("robolearn.data")
MODES = ("auto", "ram", "disk", "none")


def available_ram() -> int:
    """Bytes of memory available now (Linux's MemAvailable; elsewhere the free pages)."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def ram_budget() -> int:
    override = os.environ.get("ROBOLEARN_RAM_BUDGET_MB")
    return int(float(override) * (1 << 20)) if override else available_ram() // 2


def is_camera(store: EpisodeStore, key: str) -> bool:
    spec = store.specs[key]
    return np.dtype(spec.dtype) == np.uint8 and len(spec.shape) == 3


def _mb(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MB"


def plan(store: EpisodeStore, keys: tuple[str, ...], cache: str) -> tuple[dict[str, np.ndarray], dict[str, FrameFile]]:
    """({key: its rows in RAM}, {camera key: its FrameFile}); keys in neither are read from the store."""
    if cache not in MODES:
        raise ValueError(f"cache must be one of {', '.join(MODES)}, got {cache!r}")
    if cache == "none":
        return {}, {}
    sizes = {k: store.array(k).dtype.itemsize * int(np.prod(store.array(k).shape[1:])) * store.n_steps for k in keys}
    cameras = [k for k in keys if is_camera(store, k)]
    if cache == "auto":
        budget, needed = ram_budget(), sum(sizes.values())
        cache = "ram" if needed < budget or not cameras else "disk"
        where = "in RAM" if cache == "ram" else \
            f"low-dim keys in RAM, camera keys {cameras} ({_mb(sum(sizes[k] for k in cameras))}) from frame files on disk"
        (log.info if cache == "ram" else log.warning)(
            "windows of %s: %s (the keys need %s, the RAM budget is %s: %s)", store.path.name, where,
                    _mb(needed), _mb(budget), "ROBOLEARN_RAM_BUDGET_MB" if os.environ.get(
                        "ROBOLEARN_RAM_BUDGET_MB") else "half the available memory")
    if cache == "ram":
        return {k: store.read(k) for k in keys}, {}
    return {k: store.read(k) for k in keys if k not in cameras}, {k: FrameFile(store, k) for k in cameras}
