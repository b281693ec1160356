"""Evaluation videos: H.264 mp4 through imageio's bundled ffmpeg (no system ffmpeg or network needed)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _check_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Return the frames as a list of uint8 HxWx3 arrays of one size, or raise naming the first bad one."""
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write")
    first_shape = None
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frame {i}: expected uint8 HxWx3 RGB, got dtype {f.dtype} shape {f.shape}")
        if first_shape is None:
            first_shape = f.shape
        elif f.shape != first_shape:
            raise ValueError(f"frame {i}: shape {f.shape} differs from frame 0's {first_shape}")
        frames[i] = f
    return frames


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float) -> Path:
    """Write RGB frames as an H.264 mp4, creating parent folders.

    Odd widths/heights are padded by one black row/column because H.264 in yuv420p needs even sizes; frames are
    otherwise written unscaled (imageio would silently resize to multiples of 16).
    """
    import imageio.v2 as imageio

    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive finite number, got {fps}")
    checked = _check_frames(frames)
    h, w = checked[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=2, quality=7,
    )
    try:
        for f in checked:
            writer.append_data(np.pad(f, pad) if h % 2 or w % 2 else f)
    finally:
        writer.close()
    return path


def tile_frames(episodes: Sequence[Sequence[np.ndarray]], cols: int | None = None, gap: int = 4) -> list[np.ndarray]:
    """Tile several episodes' frames into one grid per time step, so one video shows them side by side.

    Shorter episodes hold their last frame; unused grid cells and the `gap`-pixel separators are black.
    """
    if not episodes:
        raise ValueError("no episodes to tile")
    checked = [_check_frames(ep) for ep in episodes]
    shape = checked[0][0].shape
    for i, ep in enumerate(checked):
        if ep[0].shape != shape:
            raise ValueError(f"episode {i}: frame shape {ep[0].shape} differs from episode 0's {shape}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    n = len(checked)
    cols = cols or math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = math.ceil(n / cols)
    h, w = shape[:2]
    grid_h, grid_w = rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap
    length = max(len(ep) for ep in checked)
    out = []
    for t in range(length):
        canvas = np.zeros((grid_h, grid_w, 3), dtype=np.uint8)
        for i, ep in enumerate(checked):
            r, c = divmod(i, cols)
            y, x = r * (h + gap), c * (w + gap)
            canvas[y : y + h, x : x + w] = ep[min(t, len(ep) - 1)]
        out.append(canvas)
    return out
