"""LeRobot dataset metadata: `meta/info.json`, the episode table and the task table, read (checked) and written.

The v3.0 layout (LeRobot's `lerobot.datasets.utils` and `LeRobotDataset`)::

    meta/info.json                              codebase_version, fps, robot_type, features, data_path, video_path,
                                                chunks_size, total_episodes, total_frames, total_tasks, splits
    meta/tasks.parquet                          one row per task: task_index, the text as the pandas index
    meta/episodes/chunk-XXX/file-YYY.parquet    one row per episode: episode_index, tasks (list of text), length,
                                                data/chunk_index, data/file_index, dataset_from_index,
                                                dataset_to_index, videos/<key>/{chunk_index, file_index,
                                                from_timestamp, to_timestamp}, meta/episodes/{chunk,file}_index
    meta/stats.json                             per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
    data/chunk-XXX/file-YYY.parquet             frames of many episodes, one column per non-video feature
    videos/<key>/chunk-XXX/file-YYY.mp4         frames of many episodes back to back, one file series per camera

v2.0/v2.1 (one parquet and one mp4 per episode, `meta/episodes.jsonl`, `meta/tasks.jsonl`) is read too: its
episode table is rebuilt here in the v3.0 shape (each episode its own data and video file, starting at 0 s).
Every problem is a StoreFormatError naming the file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data.store import StoreFormatError

CODEBASE_VERSION = "v3.0"
READABLE_VERSIONS = ("v2.0", "v2.1", "v3.0")
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
STATS_PATH = "meta/stats.json"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200  # LeRobot's defaults (files per chunk, MB per file)
# the bookkeeping columns every LeRobot dataset has; they are checked on import and rebuilt on export
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
NUMERIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64")


def is_lerobot_dataset(path: str | Path) -> bool:
    """A folder with meta/info.json: what convert auto-detects, and the only thing an export replaces."""
    return (Path(path) / INFO_PATH).is_file()


def next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk holds `chunks_size` files."""
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


# ---------------------------------------------------------------------------------------------- info.json
def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked: a readable version, fps, path templates and a dtype and shape for every feature."""
    path = root / INFO_PATH
    if not path.is_file():
        raise StoreFormatError(f"{path}: missing; a LeRobot dataset folder has meta/info.json")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(info, dict):
        raise StoreFormatError(f"{path}: must hold a JSON object, found {type(info).__name__}")
    version = info.get("codebase_version")
    if version not in READABLE_VERSIONS:
        raise StoreFormatError(f"{path}: codebase_version {version!r} is not supported (readable: "
                               f"{', '.join(READABLE_VERSIONS)}); convert it with LeRobot's own tools first")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise StoreFormatError(f"{path}: fps must be a positive number, found {fps!r}")
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        raise StoreFormatError(f"{path}: 'features' must be a non-empty object of feature name -> dtype/shape")
    for name, feature in features.items():
        _check_feature(path, name, feature)
    for template in ("data_path",):
        if not isinstance(info.get(template), str):
            raise StoreFormatError(f"{path}: {template!r} (the file name template) is missing")
    if any(f["dtype"] == "video" for f in features.values()) and not isinstance(info.get("video_path"), str):
        raise StoreFormatError(f"{path}: features include videos but 'video_path' (their file template) is missing")
    chunks = info.get("chunks_size", CHUNKS_SIZE)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks <= 0:
        raise StoreFormatError(f"{path}: chunks_size must be a positive integer, found {chunks!r}")
    return info


def _check_feature(path: Path, name: str, feature: Any) -> None:
    if not isinstance(feature, dict) or "dtype" not in feature or "shape" not in feature:
        raise StoreFormatError(f"{path}: feature {name!r} has no dtype and shape (each feature needs both)")
    dtype, shape = feature["dtype"], feature["shape"]
    if dtype not in (*NUMERIC_DTYPES, "video", "image", "string"):
        raise StoreFormatError(f"{path}: feature {name!r} has dtype {dtype!r}, which is not a LeRobot dtype "
                               f"(numbers, 'video', 'image' or 'string')")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise StoreFormatError(f"{path}: feature {name!r} has shape {shape!r}; a shape is a list of positive integers")
    if dtype in ("video", "image") and (len(shape) != 3 or 3 not in (shape[0], shape[-1])):
        raise StoreFormatError(f"{path}: {dtype} feature {name!r} has shape {shape}; camera shapes are "
                               f"[height, width, 3] or [3, height, width]")
    if "/" in name or not name:
        raise StoreFormatError(f"{path}: feature name {name!r} is empty or holds '/'")


def frame_shape(feature: dict[str, Any]) -> tuple[int, int, int]:
    """(height, width, channels) of a camera feature whose shape is HWC or CHW (LeRobot names say which)."""
    shape, names = feature["shape"], feature.get("names") or []
    channels_first = (list(names[:1]) in (["channels"], ["channel"])) or (shape[0] == 3 and shape[-1] != 3)
    return (shape[1], shape[2], shape[0]) if channels_first else tuple(shape)


# ---------------------------------------------------------------------------------------------- tasks
def read_tasks(root: Path, info: dict[str, Any]) -> dict[int, str]:
    """task_index -> task text (v3.0 meta/tasks.parquet, v2 meta/tasks.jsonl)."""
    if info["codebase_version"] != CODEBASE_VERSION:
        rows = _read_jsonl(root / "meta/tasks.jsonl")
        return {int(r["task_index"]): str(r["task"]) for r in rows}
    path = root / TASKS_PATH
    table = read_parquet(path)
    index_cols = _pandas_index_columns(table)
    text_col = next((c for c in ("task", *index_cols) if _is_text(table, c)), None)
    if text_col is None or "task_index" not in table.column_names:
        raise StoreFormatError(f"{path}: needs a task_index column and the task text (a 'task' column or the "
                               f"pandas index); found columns {table.column_names}")
    indices, texts = table.column("task_index").to_pylist(), table.column(text_col).to_pylist()
    return {int(i): str(t) for i, t in zip(indices, texts)}


def _is_text(table: pa.Table, column: str) -> bool:
    if column not in table.column_names:
        return False
    kind = table.schema.field(column).type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _pandas_index_columns(table: pa.Table) -> list[str]:
    raw = (table.schema.metadata or {}).get(b"pandas")
    if not raw:
        return []
    try:
        return [c for c in json.loads(raw).get("index_columns", []) if isinstance(c, str)]
    except (ValueError, AttributeError):
        return []


def write_tasks(root: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame (task text as the index), so `pd.read_parquet`
    restores the index that LeRobotDataset looks task text up in."""
    index = "__index_level_0__"
    pandas_meta = {
        "index_columns": [index],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": index, "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), (index, pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    table = pa.table({"task_index": list(range(len(tasks))), index: tasks}, schema=schema)
    (root / TASKS_PATH).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / TASKS_PATH)


# ---------------------------------------------------------------------------------------------- episodes
def read_episodes(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per episode in episode_index order, with v3.0 column names (v2 tables are translated)."""
    if info["codebase_version"] != CODEBASE_VERSION:
        return _v2_episodes(root, info)
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise StoreFormatError(f"{root / EPISODES_DIR}: no chunk-*/file-*.parquet files; the episode table is missing")
    rows: list[dict[str, Any]] = []
    for path in files:
        table = read_parquet(path)
        table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        missing = [c for c in ("episode_index", "length", "tasks", "data/chunk_index", "data/file_index")
                   if c not in table.column_names]
        missing += [f"videos/{k}/{c}" for k, f in info["features"].items() if f["dtype"] == "video"
                    for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
                    if f"videos/{k}/{c}" not in table.column_names]
        if missing:
            raise StoreFormatError(f"{path}: the episode table lacks columns {missing}")
        for row in table.to_pylist():
            row["_file"] = path
            rows.append(row)
    return _ordered(rows, root / EPISODES_DIR)


def _v2_episodes(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    path = root / "meta/episodes.jsonl"
    rows = _read_jsonl(path)
    for row in rows:
        if not isinstance(row.get("episode_index"), int) or not isinstance(row.get("length"), int):
            raise StoreFormatError(f"{path}: each line needs integer episode_index and length, found {row}")
        row["_file"] = path
        row.setdefault("tasks", [])
        row["_v2"] = True
    return _ordered(rows, path)


def _ordered(rows: list[dict[str, Any]], where: Path) -> list[dict[str, Any]]:
    rows.sort(key=lambda r: r["episode_index"])
    seen = [r["episode_index"] for r in rows]
    if len(set(seen)) != len(seen):
        raise StoreFormatError(f"{where}: episode_index values repeat ({sorted({e for e in seen if seen.count(e) > 1})[:5]})")
    for row in rows:
        if not isinstance(row["length"], int) or row["length"] <= 0:
            raise StoreFormatError(f"{row['_file']}: episode {row['episode_index']} has length {row['length']!r}")
        if isinstance(row.get("tasks"), str):
            row["tasks"] = [row["tasks"]]
    return rows


def data_file(root: Path, info: dict[str, Any], episode: dict[str, Any]) -> Path:
    if episode.get("_v2"):
        chunk = episode["episode_index"] // info.get("chunks_size", CHUNKS_SIZE)
        return root / info["data_path"].format(episode_chunk=chunk, episode_index=episode["episode_index"])
    return root / info["data_path"].format(chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"])


def video_file(root: Path, info: dict[str, Any], episode: dict[str, Any], key: str) -> tuple[Path, float]:
    """The mp4 holding `key`'s frames of `episode`, and the time in it where the episode starts."""
    if episode.get("_v2"):
        chunk = episode["episode_index"] // info.get("chunks_size", CHUNKS_SIZE)
        return root / info["video_path"].format(episode_chunk=chunk, video_key=key,
                                                episode_index=episode["episode_index"]), 0.0
    path = root / info["video_path"].format(video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"],
                                            file_index=episode[f"videos/{key}/file_index"])
    return path, float(episode[f"videos/{key}/from_timestamp"])


def write_episodes(root: Path, rows: list[dict[str, Any]]) -> None:
    """The episode table in one file (LeRobot starts another past 100 MB; a table of 1000s of episodes is ~1 MB)."""
    for row in rows:
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------- file readers
def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise StoreFormatError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StoreFormatError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from err



def read_parquet_schema(path: Path) -> pa.Schema:
    if not path.is_file():
        raise StoreFormatError(f"{path}: missing")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StoreFormatError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from err


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise StoreFormatError(f"{path}: missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise StoreFormatError(f"{path}: line {n} is not valid JSON ({err})") from err
        if not isinstance(row, dict):
            raise StoreFormatError(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows
