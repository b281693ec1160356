"""LeRobot datasets (v3.0; v2.0/v2.1 too) -> EpisodeStore. Export: lerobot_export.py.

Mapping (datasets/README.md, "LeRobot datasets"):

- every numeric feature becomes the store key of the same name (`observation.state` stays `observation.state`,
  `action` stays `action`), with its dtype and its info.json shape as the per-step shape ((1,) stays (1,));
- `video` and `image` features become uint8 (T, H, W, 3) keys of the same name: video frames are decoded at
  `from_timestamp + timestamp` of each frame, within LeRobot's 1e-4 s tolerance (lerobot_video.py);
- LeRobot's bookkeeping columns are checked and not stored: `timestamp` (on the 1/fps grid within 1e-4 s),
  `frame_index` (0..length-1), `episode_index`, `index`; `task_index` becomes the episode's task text
  (episode metadata `task`, and `tasks`, the episode table's list) and is stored per step as the key
  `task_index` (in every episode) when it changes within any episode; `string` features are kept per episode in metadata;
- store attrs `lerobot`: codebase_version, fps, robot_type, the info.json features, the task table, the source.

Everything is checked before the store is created except the video frames, which are decoded while it is built;
any failure deletes the half-built store (EpisodeStore.build), so `dest` holds the complete import or what it
held before.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from robolearn.data.formats import lerobot_meta as meta
from robolearn.data.formats.lerobot_columns import images_to_numpy, to_numpy
from robolearn.data.formats.lerobot_video import TOLERANCE_S, decode_frames, video_codec
from robolearn.data.formats.output import check_separate, new_store
from robolearn.data.store import EpisodeStore, StoreFormatError

BOOKKEEPING = tuple(meta.DEFAULT_FEATURES)


def import_lerobot(source: str | os.PathLike, dest: str | os.PathLike, *, task: str | None = None,
                   overwrite: bool = False, progress: bool = True, tolerance_s: float = TOLERANCE_S,
                   origin: dict[str, Any] | None = None) -> EpisodeStore:
    """Copy the LeRobot dataset folder `source` into a new EpisodeStore at `dest` (see the module docstring).

    `task` is the robolearn task name recorded in the store; `origin` (e.g. {"repo_id": ..., "revision": ...}
    from robolearn.data.hub) is kept in the store attrs. Returns the opened store."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"no LeRobot dataset folder at {source}")
    check_separate(source, dest)
    plan = _Plan(source, tolerance_s)
    attrs = {"format": "lerobot", "imported_from": str(source.resolve()),
             "lerobot": {"codebase_version": plan.info["codebase_version"], "fps": plan.info["fps"],
                         "robot_type": plan.info.get("robot_type"), "features": plan.info["features"],
                         "tasks": {str(k): v for k, v in sorted(plan.tasks.items())}, **(origin or {})}}
    with new_store(dest, overwrite=overwrite, fps=float(plan.info["fps"]), task=task, attrs=attrs) as out:
        out.append_episodes(plan.episodes(progress), commit_every=32)
    return EpisodeStore.open(dest)


class _Plan:
    """The source read and checked up front; `episodes()` then yields (arrays, metadata) in episode order."""

    def __init__(self, root: Path, tolerance_s: float):
        self.root, self.tolerance_s = root, tolerance_s
        self.info = meta.read_info(root)
        self.fps = float(self.info["fps"])
        self.features = self.info["features"]
        self.tasks = meta.read_tasks(root, self.info)
        self.rows = meta.read_episodes(root, self.info)
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.columns = [k for k, f in self.features.items() if f["dtype"] != "video"]
        self._check_data_files()
        self._check_videos()
        self._cached: tuple[Path, pa.Table] | None = None

    def _check_data_files(self) -> None:
        """Each data file holds exactly the rows the episode table puts in it, each episode's rows together."""
        by_file: dict[Path, list[dict[str, Any]]] = {}
        for row in self.rows:
            by_file.setdefault(meta.data_file(self.root, self.info, row), []).append(row)
        self.per_step_tasks = False
        for path, rows in by_file.items():
            names = meta.read_parquet_schema(path).names
            missing = [c for c in (*self.columns, "episode_index") if c not in names]
            if missing:
                raise StoreFormatError(f"{path}: no columns {missing}, which info.json's features list")
            table = meta.read_parquet(path, columns=[c for c in ("episode_index", "task_index") if c in names])
            expected = sum(r["length"] for r in rows)
            if table.num_rows != expected:
                raise StoreFormatError(f"{path}: has {table.num_rows} rows but the episode table puts {expected} "
                                       f"rows in it (episodes {[r['episode_index'] for r in rows][:8]})")
            episode_index = table.column("episode_index").to_numpy()
            for row in rows:
                where = np.flatnonzero(episode_index == row["episode_index"])
                if len(where) != row["length"]:
                    raise StoreFormatError(f"{path}: episode {row['episode_index']} has {len(where)} rows, the "
                                           f"episode table says length {row['length']}")
                if where[-1] - where[0] + 1 != len(where):
                    raise StoreFormatError(f"{path}: episode {row['episode_index']}'s rows are not together")
                row["_data"] = (path, int(where[0]))
                if "task_index" in names:  # a task that changes within an episode is kept per step
                    tasks = table.column("task_index").slice(int(where[0]), len(where))
                    self.per_step_tasks |= len(set(tasks.to_pylist())) > 1

    def _check_videos(self) -> None:
        checked: set[Path] = set()
        for row in self.rows:
            for key in self.video_keys:
                path, _ = meta.video_file(self.root, self.info, row, key)
                if path in checked:
                    continue
                if not path.is_file():
                    raise StoreFormatError(f"{path}: missing (episode {row['episode_index']}'s {key!r} frames)")
                video_codec(path)
                checked.add(path)

    def _table(self, path: Path) -> pa.Table:
        if self._cached is None or self._cached[0] != path:
            self._cached = (path, meta.read_parquet(path))
        return self._cached[1]

    def episodes(self, progress: bool) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        for row in tqdm(self.rows, desc=f"import {self.root.name}", unit="ep", disable=not progress):
            yield self._episode(row)

    def _episode(self, row: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path, start = row["_data"]
        n = row["length"]
        table = self._table(path).slice(start, n)
        self._check_bookkeeping(path, table, row)
        arrays: dict[str, np.ndarray] = {}
        strings: dict[str, list[str]] = {}
        for key in self.columns:
            feature = self.features[key]
            if key in BOOKKEEPING:
                continue
            if feature["dtype"] == "image":
                arrays[key] = images_to_numpy(path, key, table.column(key), feature)
            elif feature["dtype"] == "string":
                strings[key] = [str(v) for v in table.column(key).to_pylist()]
            else:
                arrays[key] = to_numpy(path, key, table.column(key), feature)
        if self.video_keys:
            times = _column(path, table, "timestamp").astype(np.float64)
            for key in self.video_keys:
                video, offset = meta.video_file(self.root, self.info, row, key)
                frames = decode_frames(video, offset + times, self.tolerance_s)
                want = meta.frame_shape(self.features[key])
                if frames.shape[1:] != want:
                    raise StoreFormatError(f"{video}: frames are {frames.shape[1:]} (HxWxC), info.json says "
                                           f"{self.features[key]['shape']} for {key!r}")
                arrays[key] = frames
        task_index = _column(path, table, "task_index") if "task_index" in table.column_names else None
        episode_meta = self._episode_meta(row, path, task_index, strings)
        if self.per_step_tasks:
            arrays["task_index"] = task_index.astype(np.int64)
        if not arrays:
            raise StoreFormatError(f"{path}: episode {row['episode_index']} has no numeric, image or video features "
                                   f"to import")
        return arrays, episode_meta

    def _check_bookkeeping(self, path: Path, table: pa.Table, row: dict[str, Any]) -> None:
        n, episode = row["length"], row["episode_index"]
        if "timestamp" in table.column_names:
            times = _column(path, table, "timestamp").astype(np.float64)
            # each timestamp within tolerance of a multiple of 1/fps, one period after the one before
            ticks = np.round(times[0] * self.fps) + np.arange(n)
            off = np.abs(times - ticks / self.fps) > self.tolerance_s
            if off.any():
                i = int(np.argmax(off))
                raise StoreFormatError(f"{path}: episode {episode} frame {i} has timestamp {times[i]:.6f} s, off the "
                                       f"1/{self.info['fps']} s grid by more than LeRobot's tolerance "
                                       f"({self.tolerance_s} s)")
        if "frame_index" in table.column_names:
            frames = _column(path, table, "frame_index")
            if not np.array_equal(frames, np.arange(n)):
                raise StoreFormatError(f"{path}: episode {episode}'s frame_index does not count 0..{n - 1}")
        if "index" in table.column_names:
            index = _column(path, table, "index")
            if not np.array_equal(np.diff(index), np.ones(n - 1, index.dtype)):
                raise StoreFormatError(f"{path}: episode {episode}'s index column is not consecutive")

    def _episode_meta(self, row: dict[str, Any], path: Path, task_index: np.ndarray | None,
                      strings: dict[str, list[str]]) -> dict[str, Any]:
        tasks = [str(t) for t in (row.get("tasks") or [])]
        if task_index is not None:
            unknown = sorted(set(task_index.tolist()) - set(self.tasks))
            if unknown:
                raise StoreFormatError(f"{path}: episode {row['episode_index']} uses task_index {unknown[:5]}, which "
                                       f"the task table does not list")
            first = self.tasks[int(task_index[0])]
            tasks = tasks or list(dict.fromkeys(self.tasks[int(i)] for i in task_index))
        else:
            first = tasks[0] if tasks else None
        record: dict[str, Any] = {"source": f"lerobot:{self.root.name}", "source_episode": int(row["episode_index"]),
                                  "task": first, "tasks": tasks}
        if strings:
            record["strings"] = strings
        return record


def _column(path: Path, table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise StoreFormatError(f"{path}: column {name!r} has missing (null) values")
    values = to_numpy(path, name, column, {"dtype": "float64" if name == "timestamp" else "int64", "shape": [1]})
    return values.reshape(len(values))
