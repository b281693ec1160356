"""Export a store to LeRobot v3.0 and import it back: numbers exact, frames within codec error (a PSNR floor that a
frame off by one or swapped colour channels falls below), episodes, tasks and fps kept; the files LeRobot reads
(info.json, stats.json, tasks and episode tables) as its loader expects them."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.cli import main
from robolearn.data.formats.lerobot import import_lerobot
from robolearn.data.formats.lerobot_export import export_lerobot
from robolearn.data.store import EpisodeStore
from tests.lerobot_fixtures import PSNR_FLOOR, make_store, psnr

NUMERIC = ["observation.state", "action", "keypoint", "done", "steps"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    store = make_store(root / "a.zarr")
    export_lerobot(store, root / "lr", progress=False)
    return store, root / "lr", import_lerobot(root / "lr", root / "b.zarr", progress=False)


def test_numbers_come_back_exactly_with_episodes_tasks_and_fps(exported):
    store, _, back = exported
    assert list(back.episode_lengths) == list(store.episode_lengths) == [12, 7, 20]
    for key in NUMERIC:
        a, b = store.read(key), back.read(key)
        if a.ndim == 1:  # a per-step scalar is LeRobot's shape [1]; it comes back with that axis
            a = a[:, None]
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), key
    assert back.fps == 10.0 and back.attrs["lerobot"]["fps"] == 10
    assert [back.episode_meta(i)["task"] for i in range(3)] == [f"push the T to goal {i % 2}" for i in range(3)]
    assert [back.episode_meta(i)["tasks"] for i in range(3)] == [[f"push the T to goal {i % 2}"] for i in range(3)]
    assert "task_index" not in back.keys  # one task per episode: kept as metadata only


def test_frames_come_back_within_codec_error_and_the_floor_catches_wrong_frames(exported):
    store, _, back = exported
    a, b = store.read("image"), back.read("image")
    assert b.dtype == np.uint8 and b.shape == a.shape
    got = psnr(a, b)
    print(f"AV1 round trip PSNR {got:.1f} dB")
    assert got >= PSNR_FLOOR
    assert psnr(a[1:], b[:-1]) < PSNR_FLOOR  # every frame one later
    assert psnr(a, b[..., ::-1]) < PSNR_FLOOR  # RGB read as BGR
    for e in range(store.n_episodes):  # each episode's own frames, also where it starts mid-file
        lo, hi = store.episode_bounds(e)
        assert psnr(a[lo:hi], b[lo:hi]) >= PSNR_FLOOR


def test_files_as_lerobot_reads_them(exported):
    store, lr, _ = exported
    info = json.loads((lr / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == 3
    assert info["total_frames"] == 39 and info["total_tasks"] == 2 and info["splits"] == {"train": "0:3"}
    assert info["features"]["image"]["dtype"] == "video" and info["features"]["image"]["shape"] == [64, 96, 3]
    assert info["features"]["image"]["info"]["video.codec"] == "av1"
    assert info["features"]["image"]["info"]["video.pix_fmt"] == "yuv420p"
    assert info["features"]["keypoint"] == {"dtype": "float32", "shape": [3, 2], "names": None, "fps": 10}
    assert info["features"]["done"]["dtype"] == "bool" and info["features"]["done"]["shape"] == [1]
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])
    stats = json.loads((lr / "meta/stats.json").read_text())
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert np.allclose(stats["action"]["mean"], store.read("action").mean(0)) and stats["action"]["count"] == [39]
    assert np.array(stats["image"]["mean"]).shape == (3, 1, 1) and 0 <= np.min(stats["image"]["min"]) <= 1
    assert np.array(stats["keypoint"]["q50"]).shape == (3, 2)
    tasks = pq.read_table(lr / "meta/tasks.parquet")
    index_column = json.loads(tasks.schema.metadata[b"pandas"])["index_columns"][0]  # pandas restores the index
    assert tasks.column(index_column).to_pylist() == ["push the T to goal 0", "push the T to goal 1"]
    episodes = pq.read_table(lr / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 12), (12, 19), (19, 39)]
    assert [e["videos/image/from_timestamp"] for e in episodes] == [0.0, 1.2, 1.9]
    data = pq.read_table(lr / "data/chunk-000/file-000.parquet")
    assert data.column("index").to_pylist() == list(range(39))
    assert data.column("timestamp").to_pylist()[12:14] == [0.0, pytest.approx(0.1)]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_other_codecs(tmp_path, codec):
    store = make_store(tmp_path / "a.zarr", lengths=(5, 6))
    export_lerobot(store, tmp_path / "lr", video_codec=codec, progress=False)
    back = import_lerobot(tmp_path / "lr", tmp_path / "b.zarr", progress=False)
    assert psnr(back.read("image"), store.read("image")) >= PSNR_FLOOR
    assert json.loads((tmp_path / "lr/meta/info.json").read_text())["features"]["image"]["info"]["video.codec"] == codec


def test_files_roll_over_into_new_files_and_chunks(tmp_path):
    store = make_store(tmp_path / "a.zarr", lengths=(5, 6, 4, 7))
    # a new data and video file after every episode, two files per chunk: chunk-001 appears
    export_lerobot(store, tmp_path / "lr", video_codec="h264", chunks_size=2, data_file_mb=1e-6, video_file_mb=1e-6,
                   progress=False)
    assert sorted(p.relative_to(tmp_path / "lr").as_posix() for p in (tmp_path / "lr").rglob("*.mp4")) == [
        "videos/image/chunk-000/file-000.mp4", "videos/image/chunk-000/file-001.mp4",
        "videos/image/chunk-001/file-000.mp4", "videos/image/chunk-001/file-001.mp4"]
    assert len(list((tmp_path / "lr/data").rglob("*.parquet"))) == 4
    back = import_lerobot(tmp_path / "lr", tmp_path / "b.zarr", progress=False)
    assert np.array_equal(back.read("action"), store.read("action"))
    assert psnr(back.read("image"), store.read("image")) >= PSNR_FLOOR


def test_reexport_of_an_import_keeps_names_tasks_and_robot_type(tmp_path):
    from tests.lerobot_fixtures import write_handmade_v3

    first = import_lerobot(write_handmade_v3(tmp_path / "hand"), tmp_path / "a.zarr", progress=False)
    export_lerobot(first, tmp_path / "lr", video_codec="h264", progress=False)
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["robot_type"] == "so100"
    assert info["features"]["observation.state"]["names"] == ["x", "y", "z"]
    again = import_lerobot(tmp_path / "lr", tmp_path / "b.zarr", progress=False)
    assert np.array_equal(again.read("task_index"), first.read("task_index"))  # per-step tasks, same table
    assert again.attrs["lerobot"]["tasks"] == first.attrs["lerobot"]["tasks"]
    for key in ("observation.state", "action", "next.reward"):
        assert np.array_equal(again.read(key), first.read(key))


def test_export_refusals(tmp_path):
    store = make_store(tmp_path / "a.zarr", lengths=(3,), camera=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="taken exists; pass overwrite=True"):
        export_lerobot(store, tmp_path / "taken", progress=False)
    with pytest.raises(ValueError, match="taken exists and is not a LeRobot dataset"):
        export_lerobot(store, tmp_path / "taken", overwrite=True, progress=False)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="clash with LeRobot's own columns"):
        export_lerobot(store, tmp_path / "x", rename={"steps": "index"}, progress=False)
    with pytest.raises(ValueError, match="lies inside the source"):
        export_lerobot(store, tmp_path / "a.zarr" / "lr", progress=False)
    no_fps = make_store(tmp_path / "c.zarr", lengths=(3,), camera=False, fps=None)
    with pytest.raises(ValueError, match="LeRobot needs a whole-number fps and the store's is None"):
        export_lerobot(no_fps, tmp_path / "y", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "c.zarr", "taken"]  # nothing half-written
    export_lerobot(store, tmp_path / "lr", progress=False)
    export_lerobot(store, tmp_path / "lr", overwrite=True, progress=False)  # replaces its own kind


def test_cli_round_trip_with_h264(tmp_path, capsys):
    make_store(tmp_path / "a.zarr", lengths=(4, 5))
    assert main(["convert", str(tmp_path / "a.zarr"), str(tmp_path / "lr"), "--to", "lerobot",
                 "--video-codec", "h264"]) == 0
    assert main(["convert", str(tmp_path / "lr"), str(tmp_path / "b.zarr"), "--task", "pusht"]) == 0  # auto-detected
    back = EpisodeStore.open(tmp_path / "b.zarr")
    assert back.task == "pusht" and back.n_episodes == 2
    assert main(["convert", str(tmp_path / "lr"), str(tmp_path / "c.zarr"), "--from", "lerobot"]) == 0


@pytest.mark.parametrize("argv, says", [
    (["{a}", "{out}", "--video-codec", "h264"], "--video-codec applies to an export to LeRobot (--to lerobot)"),
    (["{a}", "{out}", "--to", "lerobot", "--revision", "v3.0"], "--revision names the Hub revision of a LeRobot"),
    (["{lr}", "{out}", "--fps", "30"], "--fps: a LeRobot dataset carries its own fps (meta/info.json)"),
    (["{lr}", "{out}", "--revision", "v3.0"], "--revision applies to a Hub repo id, and {lr} is a local path"),
    (["{a}", "{out}", "--revision", "v3.0"], "--revision applies to LeRobot datasets from the Hugging Face Hub"),
])
def test_cli_refusals_are_one_line(tmp_path, capsys, argv, says):
    make_store(tmp_path / "a.zarr", lengths=(3,), camera=False)
    export_lerobot(tmp_path / "a.zarr", tmp_path / "lr", progress=False)
    names = {"a": tmp_path / "a.zarr", "lr": tmp_path / "lr", "out": tmp_path / "out"}
    assert main(["convert", *(arg.format(**names) for arg in argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says.format(**names) in err[0], err
    assert not (tmp_path / "out").exists()
