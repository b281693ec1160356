"""One writer per store: a second writer (another process or another handle) is refused with the holder's name;
readers are never blocked; the OS frees the lock of a killed holder."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.store import EpisodeStore, StoreLockedError
from robolearn.data.store_lock import LOCK_NAME

PROJECT_ROOT = Path(__file__).resolve().parents[1]

HOLDER_SRC = """
import sys, numpy as np
from robolearn.data.store import EpisodeStore
store = EpisodeStore.open(sys.argv[1], mode="a")
store.append_episode({"x": np.full((4, 2), 7.0, np.float32)})
print("holding", flush=True)
sys.stdin.readline()  # hold the lock until told (or killed)
"""


def episode(value: float = 1.0, n: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 2), value, np.float32)}


@pytest.fixture()
def path(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr") as store:
        store.append_episode(episode())
    return tmp_path / "s.zarr"


def start_holder(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_SRC, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line != "holding\n":
        proc.kill()
        pytest.fail(f"holder did not start: {line!r} {proc.communicate()[1]}")
    return proc


def test_second_process_is_refused_and_killed_holder_frees_the_lock(path):
    proc = start_holder(path)
    try:
        for attempt in (lambda: EpisodeStore.open(path, mode="a"),
                        lambda: EpisodeStore.create(path, overwrite=True),
                        lambda: EpisodeStore.build(path, replace=True).__enter__()):
            with pytest.raises(StoreLockedError) as info:
                attempt()
            msg = str(info.value)
            assert f"store {path} is being written by pid {proc.pid} on {socket.gethostname()} since " in msg
            assert "(command: -c" in msg and "one writer per store" in msg
            assert "this process" not in msg
        assert issubclass(StoreLockedError, RuntimeError)
        reader = EpisodeStore.open(path)  # readers take no lock and see the holder's committed episode
        assert reader.n_episodes == 2 and reader.read("x")[-1, 0] == 7.0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with EpisodeStore.open(path, mode="a") as store:  # the OS released the dead holder's lock
        assert store.append_episode(episode(3.0)) == 2
        info = json.loads((path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["since"]
    assert (path / LOCK_NAME).read_text() == ""  # released: no stale holder named
    assert EpisodeStore.open(path).n_episodes == 3


def test_reader_keeps_working_while_a_writer_appends(path):
    reader = EpisodeStore.open(path)
    with EpisodeStore.open(path, mode="a") as writer:
        writer.append_episode(episode(2.0, n=5000))
        assert reader.n_episodes == 1 and np.array_equal(reader.read("x"), np.ones((3, 2), np.float32))
        assert EpisodeStore.open(path).n_episodes == 2


def test_second_handle_in_the_same_process(path):
    store = EpisodeStore.open(path, mode="a")
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} .* this process: close\(\) the other handle"):
        EpisodeStore.open(path, mode="a")
    store.close()
    store.close()  # idempotent
    with pytest.raises(PermissionError, match=r"read-only \(or was closed\); open it with mode='a'"):
        store.append_episode(episode())
    assert store.read("x").shape == (3, 2)  # a closed handle still reads
    with EpisodeStore.open(path, mode="a") as again:
        again.append_episode(episode())
    # a handle dropped without close() frees the lock too (callers that create, then reopen, rely on it)
    EpisodeStore.create(path.parent / "t.zarr")
    EpisodeStore.open(path.parent / "t.zarr", mode="a").close()


def test_lock_file_is_not_data_and_old_stores_without_one_open(path):
    os.unlink(path / LOCK_NAME)  # as stores written before the lock existed
    store = EpisodeStore.open(path, mode="a")
    assert (path / LOCK_NAME).exists()
    store.append_episode(episode())
    store.close()
    assert [name for name, _ in store._root.members()] == ["data"]  # the store's zarr view hides the lock file
    with pytest.warns(UserWarning, match="robolearn.lock is not recognized"):  # plain zarr warns, and skips it
        assert [name for name, _ in zarr.open_group(path, mode="r").members()] == ["data"]
    assert EpisodeStore.open(path).keys == ["x"]


def test_open_for_append_leaves_no_lock_file_in_a_non_store(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(ValueError, match="photos is not a zarr group"):
        EpisodeStore.open(folder, mode="a")
    assert list(folder.iterdir()) == []


def test_the_command_line_refuses_a_store_another_process_writes(path, tmp_path):
    """Two real processes through the CLI: `robolearn convert --overwrite` into a store being appended to elsewhere
    is one line naming the holder, exit 2, and the holder's episodes are untouched."""
    source = tmp_path / "replay.zarr"
    group = zarr.open_group(source, mode="w", zarr_format=2)
    group.require_group("data").create_array("x", shape=(6, 2), dtype=np.float32)[:] = np.ones((6, 2), np.float32)
    group.require_group("meta").create_array("episode_ends", shape=(1,), dtype=np.int64)[:] = [6]
    proc = start_holder(path)
    try:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "robolearn.cli", "convert", str(source), str(path), "--overwrite"],
                              capture_output=True, text=True, env=env, timeout=120)
    finally:
        proc.kill()
        proc.wait()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("robolearn convert: error: store ") and f"being written by pid {proc.pid}" in lines[0]
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2 and store.read("x")[-1, 0] == 7.0
