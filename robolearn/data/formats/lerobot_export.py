"""EpisodeStore -> a LeRobot v3.0 dataset folder (what LeRobot's LeRobotDataset(repo_id, root=...) loads).

- Store keys become features of the same name (`rename` maps any other way); uint8 (T, H, W, 3) keys become
  `video` features, encoded as LeRobot does (AV1 yuv420p by default, `video_codec="h264"` or "hevc" by choice;
  lerobot_video.py), many episodes per mp4; every other key a numeric feature in the data parquet files (a
  per-step scalar, shape (), gets LeRobot's shape [1], and an import brings it back as (1,)).
  Names in info.json come from the store's `lerobot` attrs where the store was imported from LeRobot.
- Each frame's task is the episode's `task` metadata (else the store's task name); a store imported with a
  per-step `task_index` key gets its task table back. Episodes keep their order; frames get timestamps
  frame_index / fps.
- Files roll over as LeRobot's do: a new data parquet past `data_file_mb`, a new mp4 past `video_file_mb`, a new
  chunk folder every `chunks_size` files. meta/stats.json: lerobot_stats.py.

Built in a temporary sibling folder and renamed into place when complete (output.building); `overwrite`
replaces only another LeRobot dataset (a folder with meta/info.json).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from robolearn.data.formats import lerobot_meta as meta
from robolearn.data.formats.lerobot_columns import from_numpy
from robolearn.data.formats.lerobot_stats import frame_stats, numeric_stats, sample_rows
from robolearn.data.formats.lerobot_video import VideoWriter, default_codec
from robolearn.data.formats.output import building, check_separate
from robolearn.data.store import EpisodeStore

MB = 1 << 20


def is_camera(spec_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and len(spec_shape) == 3 and spec_shape[-1] == 3


def export_lerobot(store: EpisodeStore | str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = False,
                   video_codec: str | None = None, robot_type: str | None = None,
                   rename: dict[str, str] | None = None, chunks_size: int = meta.CHUNKS_SIZE,
                   data_file_mb: float = meta.DATA_FILE_MB, video_file_mb: float = meta.VIDEO_FILE_MB,
                   progress: bool = True) -> Path:
    """Write `store` as a LeRobot v3.0 dataset folder at `dest`; returns `dest`. See the module docstring."""
    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    dest = Path(dest)
    check_separate(store.path, dest)
    layout = _Layout(store, rename or {}, robot_type, video_codec or default_codec())
    with building(dest, overwrite=overwrite, owned=meta.is_lerobot_dataset,
                  kind="LeRobot dataset (a folder with meta/info.json)") as tmp:
        tmp.mkdir()
        layout.write(tmp, chunks_size, data_file_mb * MB, video_file_mb * MB, progress)
    return dest


class _Layout:
    """What the export will write, decided (and refused) before any file exists."""

    def __init__(self, store: EpisodeStore, rename: dict[str, str], robot_type: str | None, codec: str):
        self.store, self.codec = store, codec
        if store.n_episodes == 0:
            raise ValueError(f"{store.path} has no episodes; there is nothing to export")
        self.origin = store.attrs.get("lerobot") or {}
        fps = store.fps or self.origin.get("fps")
        if not fps or not math.isfinite(fps) or float(fps) != round(fps):
            raise ValueError(f"{store.path}: LeRobot needs a whole-number fps and the store's is {fps!r}; set it when "
                             f"importing (--fps)")
        self.fps = int(round(fps))
        self.robot_type = robot_type or self.origin.get("robot_type")
        unknown = sorted(set(rename) - set(store.keys))
        if unknown:
            raise KeyError(f"rename names keys {unknown} that {store.path} does not have; it has {store.keys}")
        per_step_tasks = "task_index" in store.keys and bool(self.origin.get("tasks"))
        self.keys = [k for k in store.keys if not (per_step_tasks and k == "task_index")]
        self.names = {k: rename.get(k, k) for k in self.keys}
        clash = sorted(n for n in self.names.values() if n in meta.DEFAULT_FEATURES)
        if clash:
            raise ValueError(f"store keys named {clash} clash with LeRobot's own columns of those names; pass "
                             f"rename={{...}} to export them under other names")
        if len(set(self.names.values())) != len(self.names):
            raise ValueError(f"rename gives two keys one name: {self.names}")
        specs = store.specs
        self.cameras = [k for k in self.keys if is_camera(tuple(specs[k].shape), np.dtype(specs[k].dtype))]
        self.numeric = [k for k in self.keys if k not in self.cameras]
        self.task_texts = self._tasks(per_step_tasks)

    def _tasks(self, per_step: bool) -> list[list[str] | np.ndarray]:
        """Per episode: the task text of each frame (an array), or one text for all of them (a one-item list)."""
        known = [t for _, t in sorted(((int(k), v) for k, v in self.origin.get("tasks", {}).items()))]
        self.tasks: list[str] = list(known)
        out: list[Any] = []
        for i in range(self.store.n_episodes):
            info = self.store.episode_meta(i)
            if per_step:
                table = np.asarray(known, dtype=object)
                out.append(table[self.store.read("task_index", *self.store.episode_bounds(i))])
                continue
            text = info.get("task") or (info.get("tasks") or [None])[0] or self.store.task or ""
            out.append([str(text)])
            if text not in self.tasks:
                self.tasks.append(str(text))
        return out

    # ------------------------------------------------------------------------------------------ writing
    def write(self, root: Path, chunks_size: int, data_limit: float, video_limit: float, progress: bool) -> None:
        store, index_of = self.store, {t: i for i, t in enumerate(self.tasks)}
        rows: list[dict[str, Any]] = []
        data_at, writer, data_bytes = (0, 0), None, 0.0
        videos: dict[str, tuple[tuple[int, int], VideoWriter | None]] = {k: ((0, 0), None) for k in self.cameras}
        first_videos: dict[str, Path] = {}
        total = 0
        bookkeeping: dict[str, list[np.ndarray]] = {k: [] for k in meta.DEFAULT_FEATURES}
        try:
            for e in tqdm(range(store.n_episodes), desc=f"export {store.path.name}", unit="ep", disable=not progress):
                arrays = store.episode(e)
                n = len(next(iter(arrays.values())))
                texts = self.task_texts[e]
                task_index = (np.array([index_of[t] for t in texts], np.int64) if isinstance(texts, np.ndarray)
                              else np.full(n, index_of[texts[0]], np.int64))
                columns = {self.names[k]: from_numpy(arrays[k]) for k in self.numeric}
                own = {"timestamp": (np.arange(n) / self.fps).astype(np.float32), "frame_index": np.arange(n),
                       "episode_index": np.full(n, e), "index": np.arange(total, total + n), "task_index": task_index}
                for k, v in own.items():
                    columns[k] = pa.array(v)
                    bookkeeping[k].append(v)
                table = pa.table(columns)
                if writer is not None and data_bytes + table.nbytes > data_limit:
                    writer.close()
                    writer, data_bytes = None, 0.0
                    data_at = meta.next_file(*data_at, chunks_size)
                if writer is None:
                    path = root / meta.DATA_PATH.format(chunk_index=data_at[0], file_index=data_at[1])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(path, table.schema, compression="snappy")
                writer.write_table(table)
                data_bytes += table.nbytes
                row = {"episode_index": e, "tasks": list(dict.fromkeys(str(t) for t in texts)), "length": n,
                       "data/chunk_index": data_at[0], "data/file_index": data_at[1],
                       "dataset_from_index": total, "dataset_to_index": total + n}
                for key in self.cameras:
                    (chunk, file), video = videos[key]
                    if video is None:
                        path = root / meta.VIDEO_PATH.format(video_key=self.names[key], chunk_index=chunk, file_index=file)
                        video = VideoWriter(path, self.fps, *arrays[key].shape[1:3], codec=self.codec)
                        first_videos.setdefault(key, path)
                    start, stop = video.add(arrays[key])
                    row.update({f"videos/{self.names[key]}/chunk_index": chunk,
                                f"videos/{self.names[key]}/file_index": file,
                                f"videos/{self.names[key]}/from_timestamp": start,
                                f"videos/{self.names[key]}/to_timestamp": stop})
                    if video.size_bytes() >= video_limit:
                        video.close()
                        video, (chunk, file) = None, meta.next_file(chunk, file, chunks_size)
                    videos[key] = ((chunk, file), video)
                rows.append(row)
                total += n
        finally:
            if writer is not None:
                writer.close()
            for _, video in videos.values():
                if video is not None:
                    video.close()
        meta.write_episodes(root, rows)
        meta.write_tasks(root, self.tasks)
        features = self._features(first_videos)
        meta.write_json(root / meta.INFO_PATH, self._info(features, total))
        meta.write_json(root / meta.STATS_PATH, self._stats({k: np.concatenate(v) for k, v in bookkeeping.items()}))

    def _features(self, first_videos: dict[str, Path]) -> dict[str, Any]:
        known = self.origin.get("features", {})
        features: dict[str, Any] = {}
        for key in self.keys:
            spec, name = self.store.specs[key], self.names[key]
            shape = list(spec.shape) or [1]
            names = known.get(key, {}).get("names")
            if key in self.cameras:
                names = ["height", "width", "channels"]
                features[name] = {"dtype": "video", "shape": shape, "names": names,
                                  "info": _video_info(first_videos[key], self.fps)}
            else:
                if known.get(key, {}).get("shape") != shape:
                    names = None
                features[name] = {"dtype": np.dtype(spec.dtype).name, "shape": shape, "names": names,
                                  "fps": self.fps}
        for name, feature in meta.DEFAULT_FEATURES.items():
            features[name] = {**feature, "fps": self.fps}
        return features

    def _info(self, features: dict[str, Any], total: int) -> dict[str, Any]:
        return {"codebase_version": meta.CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": self.store.n_episodes, "total_frames": total, "total_tasks": len(self.tasks),
                "chunks_size": meta.CHUNKS_SIZE, "data_files_size_in_mb": meta.DATA_FILE_MB,
                "video_files_size_in_mb": meta.VIDEO_FILE_MB, "fps": self.fps,
                "splits": {"train": f"0:{self.store.n_episodes}"}, "data_path": meta.DATA_PATH,
                "video_path": meta.VIDEO_PATH if self.cameras else None, "features": features}

    def _stats(self, bookkeeping: dict[str, np.ndarray]) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for key in self.numeric:
            stats[self.names[key]] = numeric_stats(self.store.read(key))
        for key in self.cameras:
            stats[self.names[key]] = frame_stats(self.store.read_rows(key, sample_rows(self.store.n_steps)))
        for key, values in bookkeeping.items():
            stats[key] = numeric_stats(values)
        return stats


def _video_info(path: Path, fps: int) -> dict[str, Any]:
    """info.json's `info` of a video feature, as LeRobot's get_video_info reads it from the first file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.codec.canonical_name
        return {"video.height": stream.height, "video.width": stream.width, "video.codec": codec,
                "video.pix_fmt": stream.pix_fmt, "video.is_depth_map": False, "video.fps": fps,
                "video.channels": 3, "has_audio": False}
