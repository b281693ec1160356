"""Windows from disk: camera keys through frame files (one LZ4 blob per frame) give the same batches as the RAM
cache; "auto" falls back to them when the keys exceed the RAM budget and says so; a stale frame file is rebuilt."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from robolearn.data.frame_file import FrameFile, frame_file_dir
from robolearn.data.store import EpisodeStore, StoreFormatError
from robolearn.data.windows import Windows, WindowSpec

SPEC = WindowSpec(obs_keys=("image", "agent_pos"), n_obs_steps=2, horizon=8, n_action_steps=4)
SOURCES = {"image": "img", "agent_pos": "state[0:2]"}


def _append(store: EpisodeStore, rng: np.random.Generator, n: int) -> None:
    img = rng.integers(0, 256, size=(n, 12, 10, 3), dtype=np.uint8)
    img[:, :6] = 40  # partly compressible, like a render
    store.append_episode({"img": img, "state": rng.normal(size=(n, 5)).astype(np.float32),
                          "action": rng.normal(size=(n, 2)).astype(np.float32)})


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    with EpisodeStore.build(tmp_path / "s.zarr", fps=10) as built:
        for n in (30, 9, 50, 17):
            _append(built, rng, n)
    return EpisodeStore.open(tmp_path / "s.zarr")


def test_disk_batches_equal_ram_batches(store):
    ram = Windows(store, SPEC, cache="ram", obs_sources=SOURCES)
    disk = Windows(store, SPEC, cache="disk", obs_sources=SOURCES)
    none = Windows(store, SPEC, cache="none", obs_sources=SOURCES)
    assert ram.cached and not disk.cached and not none.cached
    assert set(disk._disk) == {"img"} and set(disk._ram) == {"state", "action"}
    idx = np.random.default_rng(1).integers(0, len(ram), 200)
    batches = [w.gather(idx) for w in (ram, disk, none)]
    for other in batches[1:]:
        for key in SPEC.obs_keys:
            assert other["obs"][key].dtype == batches[0]["obs"][key].dtype
            np.testing.assert_array_equal(other["obs"][key], batches[0]["obs"][key])
        np.testing.assert_array_equal(other["action"], batches[0]["action"])
    assert (store.path.parent / "s.zarr.frames" / "img.lz4").is_file()
    assert not any(p.name.endswith(".frames") for p in store.path.iterdir())  # nothing written inside the store


def test_auto_falls_back_to_disk_over_the_ram_budget_and_logs_it(store, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="robolearn.data"):
        assert Windows(store, SPEC, obs_sources=SOURCES).cached
        assert "in RAM" in caplog.text
        caplog.clear()
        monkeypatch.setenv("ROBOLEARN_RAM_BUDGET_MB", "0.01")  # 10 kB: less than the 106 frames of 360 bytes
        windows = Windows(store, SPEC, obs_sources=SOURCES)
    assert not windows.cached and set(windows._disk) == {"img"}
    line = caplog.text
    assert "camera keys ['img']" in line and "frame files on disk" in line and "ROBOLEARN_RAM_BUDGET_MB" in line
    # low-dim only: nothing to put on disk, so auto keeps it in RAM whatever the budget
    assert Windows(store, WindowSpec(("state",), 2, 8, 4)).cached


def test_a_stale_frame_file_is_rebuilt_after_an_append(tmp_path, store):
    first = FrameFile(store, "img", tmp_path / "frames")
    assert first.read_rows(np.array([5])).shape == (1, 12, 10, 3)
    with EpisodeStore.open(store.path, mode="a") as writable:
        _append(writable, np.random.default_rng(7), 11)
    grown = EpisodeStore.open(store.path)
    again = FrameFile(grown, "img", tmp_path / "frames")
    rows = np.array([[grown.n_steps - 1, 0], [3, grown.n_steps - 11]])
    np.testing.assert_array_equal(again.read_rows(rows), grown.read_rows("img", rows))
    with pytest.raises(IndexError, match="out of range"):
        again.read_rows(np.array([grown.n_steps]))


def test_frame_files_go_to_the_user_cache_when_the_store_folder_is_read_only(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    folder = frame_file_dir(store)
    assert folder.is_relative_to(tmp_path / "cache" / "robolearn" / "frames") and folder.name.startswith("s.zarr-")


def test_unknown_cache_mode_is_refused(store):
    with pytest.raises(ValueError, match="cache must be one of auto, ram, disk, none"):
        Windows(store, SPEC, cache="gpu", obs_sources=SOURCES)


def test_a_garbled_frame_is_an_error_not_other_pixels(store, tmp_path):
    frames = FrameFile(store, "img", tmp_path / "frames")
    first, end = frames._offsets[40], frames._offsets[41]
    data = bytearray(frames.path.read_bytes())
    data[(first + end) // 2] ^= 0x55
    frames.path.write_bytes(bytes(data))
    damaged = FrameFile(store, "img", tmp_path / "frames")  # the header still matches: opened as it is
    np.testing.assert_array_equal(damaged.read_rows(np.array([39, 41])), store.read_rows("img", np.array([39, 41])))
    with pytest.raises(StoreFormatError, match=r"frame file .*img.lz4 is damaged \(frame 40 fails its checksum\); "
                                               r"delete it and it is rebuilt"):
        damaged.read_rows(np.array([[3, 40]]))
