"""Import of LeRobot datasets our exporter did not write (built by hand per the v3.0 and v2.1 layouts), and every
bad input as a one-line error naming the file and the problem, with nothing left behind at the destination."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robolearn.data.formats.lerobot import import_lerobot
from robolearn.data.store import StoreFormatError
from tests.lerobot_fixtures import (
    CAM,
    HAND_LENGTHS,
    HAND_TASKS,
    PSNR_FLOOR,
    encode_video,
    frames,
    hand_episode,
    psnr,
    write_handmade_v3,
    write_handmade_v21,
)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return write_handmade_v3(tmp_path_factory.mktemp("hand") / "so100_pick")


def test_handmade_v3_layout_imports_exactly(handmade, tmp_path):
    store = import_lerobot(handmade, tmp_path / "out.zarr", task="pick", progress=False)
    assert list(store.episode_lengths) == HAND_LENGTHS and store.fps == 10.0 and store.task == "pick"
    lerobot = store.attrs["lerobot"]
    assert lerobot["robot_type"] == "so100" and lerobot["codebase_version"] == "v3.0"
    assert lerobot["tasks"] == {"0": HAND_TASKS[0], "1": HAND_TASKS[1]}
    assert lerobot["features"]["observation.state"]["names"] == ["x", "y", "z"]
    assert sorted(store.keys) == sorted(["observation.state", "action", "next.reward", CAM, "task_index"])
    for e in range(len(HAND_LENGTHS)):
        want, got = hand_episode(e), store.episode(e)
        for key in ("observation.state", "action", "next.reward", "task_index"):
            expected = want[key].reshape(len(want[key]), -1) if key in ("next.reward", "task_index") else want[key]
            assert got[key].dtype == expected.dtype and np.array_equal(got[key], expected.reshape(got[key].shape)), key
        # frame-exact in every episode, including those starting mid-file and in the second chunk
        assert got[CAM].shape == (HAND_LENGTHS[e], 64, 96, 3)
        assert psnr(got[CAM], want[CAM]) >= PSNR_FLOOR, e
        assert psnr(got[CAM][1:], want[CAM][:-1]) < PSNR_FLOOR, e
        meta = store.episode_meta(e)
        assert meta["source_episode"] == e and meta["task"] == HAND_TASKS[want["task_index"][0]]
    assert store.episode_meta(3)["tasks"] == [HAND_TASKS[1], HAND_TASKS[0]]


def test_v21_layout_imports(tmp_path):
    store = import_lerobot(write_handmade_v21(tmp_path / "aloha"), tmp_path / "out.zarr", progress=False)
    assert list(store.episode_lengths) == [5, 8] and store.attrs["lerobot"]["codebase_version"] == "v2.1"
    assert np.array_equal(store.episode(1)["observation.state"], np.ones((8, 2), np.float32))
    assert psnr(store.read(CAM), frames(13)) >= PSNR_FLOOR
    assert store.episode_meta(0)["task"] == "fold the towel"


def test_image_features_inside_parquet(tmp_path, handmade):
    import io

    from PIL import Image

    root = tmp_path / "images"
    shutil.copytree(handmade, root)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.wrist"] = {"dtype": "image", "shape": [64, 96, 3],
                                                    "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    pictures = {}
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        cells, index = [], table.column("index").to_numpy()
        for i in index:
            pictures[int(i)] = frames(1, start=int(i))[0][..., ::-1].copy()
            buffer = io.BytesIO()
            Image.fromarray(pictures[int(i)]).save(buffer, format="PNG")
            cells.append({"bytes": buffer.getvalue(), "path": None})
        pq.write_table(table.append_column("observation.images.wrist", pa.array(cells)), path)
    store = import_lerobot(root, tmp_path / "out.zarr", progress=False)
    want = np.stack([pictures[i] for i in range(sum(HAND_LENGTHS))])
    assert np.array_equal(store.read("observation.images.wrist"), want)  # PNG: lossless


# ---------------------------------------------------------------------------------------------- bad inputs
def _edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def _rewrite_parquet(path, change):
    pq.write_table(change(pq.read_table(path)), path)


def _shorter_video(root):
    path = root / f"videos/{CAM}/chunk-001/file-000.mp4"
    encode_video(path, [hand_episode(4)[CAM][:3]])  # episode 4 has 5 frames


def _mpeg4_video(root):
    path = root / f"videos/{CAM}/chunk-000/file-001.mp4"
    encode_video(path, [hand_episode(3)[CAM]], codec="mpeg4")


def _off_grid(root):
    def change(table):
        times = table.column("timestamp").to_numpy().copy()
        times[5] += 0.003
        return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(times))
    _rewrite_parquet(root / "data/chunk-000/file-000.parquet", change)


def _episode_length(root):
    def change(table):
        lengths = table.column("length").to_pylist()
        lengths[1] += 1
        return table.set_column(table.schema.get_field_index("length"), "length", pa.array(lengths))
    _rewrite_parquet(root / "meta/episodes/chunk-000/file-000.parquet", change)


CASES = {
    "missing info.json": (lambda r: (r / "meta/info.json").unlink(), "meta/info.json: missing"),
    "corrupt info.json": (lambda r: (r / "meta/info.json").write_text("{\"fps\": 10,"), "meta/info.json: not valid JSON"),
    "feature without dtype": (lambda r: _edit_json(r / "meta/info.json", lambda i: i["features"]["action"].pop("dtype")),
                              "meta/info.json: feature 'action' has no dtype and shape"),
    "feature without shape": (lambda r: _edit_json(r / "meta/info.json", lambda i: i["features"][CAM].pop("shape")),
                              f"meta/info.json: feature '{CAM}' has no dtype and shape"),
    "unsupported version": (lambda r: _edit_json(r / "meta/info.json", lambda i: i.update(codebase_version="v1.6")),
                            "meta/info.json: codebase_version 'v1.6' is not supported"),
    "no fps": (lambda r: _edit_json(r / "meta/info.json", lambda i: i.update(fps=0)),
               "meta/info.json: fps must be a positive number, found 0"),
    "row counts": (_episode_length, "data/chunk-000/file-000.parquet: has 15 rows but the episode table puts 16 rows"),
    "timestamps off the grid": (_off_grid, "data/chunk-000/file-000.parquet: episode 0 frame 5 has timestamp 0.503000 s, "
                                           "off the 1/10 s grid by more than LeRobot's tolerance (0.0001 s)"),
    "video shorter than its episode": (_shorter_video, f"videos/{CAM}/chunk-001/file-000.mp4: the video ends at 0.2000 s "
                                                       f"but a frame at 0.3000 s is needed"),
    "unknown codec": (_mpeg4_video, f"videos/{CAM}/chunk-000/file-001.mp4: video codec 'mpeg4' is not supported"),
    "missing task table": (lambda r: (r / "meta/tasks.parquet").unlink(), "meta/tasks.parquet: missing"),
    "corrupt data file": (lambda r: (r / "data/chunk-001/file-000.parquet").write_bytes(b"PAR1 not really"),
                          "data/chunk-001/file-000.parquet: not a readable parquet file"),
    "missing video": (lambda r: (r / f"videos/{CAM}/chunk-000/file-000.mp4").unlink(),
                      f"videos/{CAM}/chunk-000/file-000.mp4: missing (episode 0's '{CAM}' frames)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_left(case, handmade, tmp_path):
    damage, message = CASES[case]
    root = tmp_path / "src"
    shutil.copytree(handmade, root)
    damage(root)
    with pytest.raises(StoreFormatError) as info:
        import_lerobot(root, tmp_path / "out" / "store.zarr", progress=False)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(root)), text
    assert message in text, text
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []  # nothing half-written


def test_source_problems_before_anything(tmp_path, handmade):
    with pytest.raises(FileNotFoundError, match="no LeRobot dataset folder at"):
        import_lerobot(tmp_path / "nowhere", tmp_path / "out.zarr")
    with pytest.raises(ValueError, match="lies inside the source"):
        import_lerobot(handmade, handmade / "out.zarr")
    (tmp_path / "taken.zarr").mkdir()
    (tmp_path / "taken.zarr" / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        import_lerobot(handmade, tmp_path / "taken.zarr", progress=False)
