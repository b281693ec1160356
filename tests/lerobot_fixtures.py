"""Test data for the LeRobot format tests: smooth moving camera frames (so PSNR separates codec error from a wrong
frame or colour order), stores to export, and a v3.0 dataset written by hand per LeRobot's layout with pyarrow and
PyAV alone (not with our exporter), so the importer is checked against the specification and not only against
our own writer."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data.store import EpisodeStore

# dB: at crf 30 these 64x96 frames come back at ~37 (AV1), ~34.5 (H.264), ~36 (HEVC); one frame off ~24, swapped colours ~12
PSNR_FLOOR = 32.0


def frames(n: int, height: int = 64, width: int = 96, start: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3) frames of three smooth waves moving at different speeds, one per channel."""
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / height, x / width
    t = np.arange(start, start + n)[:, None, None] / 20
    r = 128 + 90 * np.sin(2 * np.pi * (x + t))
    g = 128 + 90 * np.sin(2 * np.pi * (y - 0.5 * t))
    b = 128 + 60 * np.cos(2 * np.pi * (x - y + t))
    return np.stack([r, g, b], -1).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def make_store(path: Path, lengths=(12, 7, 20), camera: bool = True, fps: float | None = 10.0) -> EpisodeStore:
    """A store like a recorded task: state, action, a (3, 2) keypoint array, a bool flag, optionally a camera."""
    rng = np.random.default_rng(0)
    start = 0
    with EpisodeStore.build(path, fps=fps, task="pusht") as store:
        for i, n in enumerate(lengths):
            data = {"observation.state": rng.normal(size=(n, 2)).astype(np.float32),
                    "action": rng.normal(size=(n, 2)).astype(np.float32),
                    "keypoint": rng.normal(size=(n, 3, 2)).astype(np.float32),
                    "done": (np.arange(n) == n - 1).reshape(n, 1),
                    "steps": np.arange(n, dtype=np.int32)}
            if camera:
                data["image"] = frames(n, start=start)
            store.append_episode(data, task=f"push the T to goal {i % 2}")
            start += n
    return EpisodeStore.open(path)


# ---------------------------------------------------------------------------------------------- by hand, v3.0
FPS = 10
HAND_LENGTHS = [6, 9, 4, 7, 5]
HAND_TASKS = ["pick the cube", "place the cube"]
DATA_FILES = {(0, 0): [0, 1], (0, 1): [2, 3], (1, 0): [4]}            # chunks_size 2: a second chunk
VIDEO_FILES = {(0, 0): [0, 1, 2], (0, 1): [3], (1, 0): [4]}           # episodes 1 and 2 start mid-file
CAM = "observation.images.cam"


def hand_episode(e: int) -> dict[str, np.ndarray]:
    n = HAND_LENGTHS[e]
    base = sum(HAND_LENGTHS[:e])
    task_index = np.full(n, e % 2, np.int64)
    if e == 3:
        task_index[4:] = 0  # the task changes within this episode
    return {"observation.state": (np.arange(base, base + n)[:, None] * [1.0, 0.5, -2.0]).astype(np.float32),
            "action": np.stack([np.sin(np.arange(n) + e), np.cos(np.arange(n) + e)], 1).astype(np.float32),
            "next.reward": (np.arange(n) == n - 1).astype(np.float32),
            CAM: frames(n, start=base), "task_index": task_index}


def write_handmade_v3(root: Path, codec: str = "libx264") -> Path:
    """A LeRobot v3.0 folder as its docs describe it: several episodes per parquet and per mp4, two chunks,
    the episode table split over two files with stats/ columns, the task table with a `task` column."""
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"]},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["left", "right"]}},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        CAM: {"dtype": "video", "shape": [64, 96, 3], "names": ["height", "width", "channels"],
              "info": {"video.codec": "h264", "video.pix_fmt": "yuv420p"}},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v3.0", "robot_type": "so100", "total_episodes": len(HAND_LENGTHS),
            "total_frames": sum(HAND_LENGTHS), "total_tasks": 2, "chunks_size": 2, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": "0:5"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": features}
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    pq.write_table(pa.table({"task_index": [0, 1], "task": HAND_TASKS}), root / "meta/tasks.parquet")
    rows = {e: {"episode_index": e, "length": n} for e, n in enumerate(HAND_LENGTHS)}
    starts = np.concatenate([[0], np.cumsum(HAND_LENGTHS)])
    for (chunk, file), episodes in DATA_FILES.items():
        tables = []
        for e in episodes:
            ep, n = hand_episode(e), HAND_LENGTHS[e]
            tables.append(pa.table({
                "observation.state": pa.array(list(ep["observation.state"]), pa.list_(pa.float32())),
                "action": pa.array(list(ep["action"]), pa.list_(pa.float32(), 2)),
                "next.reward": ep["next.reward"], "timestamp": (np.arange(n) / FPS).astype(np.float32),
                "frame_index": np.arange(n), "episode_index": np.full(n, e),
                "index": np.arange(starts[e], starts[e] + n), "task_index": ep["task_index"]}))
            rows[e].update({"data/chunk_index": chunk, "data/file_index": file, "dataset_from_index": int(starts[e]),
                            "dataset_to_index": int(starts[e + 1]),
                            "tasks": [HAND_TASKS[i] for i in dict.fromkeys(ep["task_index"].tolist())]})
        path = root / f"data/chunk-{chunk:03d}/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), path, row_group_size=4)
    for (chunk, file), episodes in VIDEO_FILES.items():
        path = root / f"videos/{CAM}/chunk-{chunk:03d}/file-{file:03d}.mp4"
        spans = encode_video(path, [hand_episode(e)[CAM] for e in episodes], codec)
        for e, (start, stop) in zip(episodes, spans):
            rows[e].update({f"videos/{CAM}/chunk_index": chunk, f"videos/{CAM}/file_index": file,
                            f"videos/{CAM}/from_timestamp": start, f"videos/{CAM}/to_timestamp": stop})
    for file, episodes in enumerate([[0, 1, 2], [3, 4]]):
        table = pa.Table.from_pylist([{**rows[e], "meta/episodes/chunk_index": 0, "meta/episodes/file_index": file,
                                       "stats/action/mean": [0.0, 0.0]} for e in episodes])
        path = root / f"meta/episodes/chunk-000/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    return root


def encode_video(path: Path, episodes: list[np.ndarray], codec: str = "libx264", fps: int = FPS) -> list[tuple]:
    """Episodes back to back in one mp4 (pts = frame number, time base 1/fps); their (from, to) times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spans, count = [], 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options={"g": "2", "crf": "30"})
        stream.width, stream.height = episodes[0].shape[2], episodes[0].shape[1]
        stream.pix_fmt = "yuv420p"
        for ep in episodes:
            spans.append((count / fps, (count + len(ep)) / fps))
            for image in ep:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = count, Fraction(1, fps)
                container.mux(stream.encode(frame))
                count += 1
        container.mux(stream.encode(None))
    return spans


def write_handmade_v21(root: Path) -> Path:
    """LeRobot v2.1: one parquet and one mp4 per episode, meta/episodes.jsonl and meta/tasks.jsonl."""
    lengths = [5, 8]
    features = {"observation.state": {"dtype": "float32", "shape": [2], "names": None},
                CAM: {"dtype": "video", "shape": [64, 96, 3], "names": ["height", "width", "channel"]},
                **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
                   [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                    ("index", "int64"), ("task_index", "int64")]}}
    info = {"codebase_version": "v2.1", "robot_type": "aloha", "fps": FPS, "chunks_size": 1000, "features": features,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold the towel"}) + "\n")
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": ["fold the towel"], "length": n}) + "\n" for e, n in enumerate(lengths)))
    start = 0
    for e, n in enumerate(lengths):
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"observation.state": pa.array(list(np.full((n, 2), e, np.float32)), pa.list_(pa.float32())),
                                 "timestamp": (np.arange(n) / FPS).astype(np.float32), "frame_index": np.arange(n),
                                 "episode_index": np.full(n, e), "index": np.arange(start, start + n),
                                 "task_index": np.zeros(n, np.int64)}), path)
        encode_video(root / f"videos/chunk-000/{CAM}/episode_{e:06d}.mp4", [frames(n, start=start)])
        start += n
    return root
