"""EpisodeStore.build: a store is named only once complete; a failed build leaves nothing, replacing keeps the old
store until the new one is in place, and nothing that is not a store is ever deleted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robolearn.data.store import EpisodeStore, StoreFormatError, StoreIncompleteError, StoreLockedError
from robolearn.data.store_build import remove_stale_builds

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def episode(value: float, n: int = 5) -> dict[str, np.ndarray]:
    return {"state": np.full((n, 2), value, np.float32), "action": np.full((n, 1), value, np.float32)}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_build_names_the_store_only_when_complete(tmp_path):
    path = tmp_path / "new.zarr"
    with EpisodeStore.build(path, fps=10.0, task="unit", attrs={"source": "test"}) as store:
        assert not path.exists()  # nothing at the real name while building
        [tmp] = siblings(path)
        assert tmp.startswith(f".new.zarr.building-{os.getpid()}")
        meta = json.loads((tmp_path / tmp / "zarr.json").read_text())
        assert meta["attributes"]["incomplete"]["pid"] == os.getpid()
        with pytest.raises(StoreIncompleteError, match=r"incomplete store .*delete it and import/collect again"):
            EpisodeStore.open(tmp_path / tmp)
        store.append_episode(episode(1.0), success=True)
    assert siblings(path) == []  # the temporary name is gone
    assert store.path == path and not store.writable  # closed: the write lock is released
    done = EpisodeStore.open(path)
    assert done.n_episodes == 1 and done.fps == 10.0 and done.task == "unit" and done.attrs == {"source": "test"}
    assert done.episode_meta(0) == {"length": 5, "success": True}
    assert "incomplete" not in json.loads((path / "zarr.json").read_text())["attributes"]
    EpisodeStore.open(path, mode="a").close()  # the lock was released by build


def test_failed_build_leaves_nothing(tmp_path):
    path = tmp_path / "new.zarr"
    with pytest.raises(RuntimeError, match="importer broke"):
        with EpisodeStore.build(path) as store:
            store.append_episode(episode(1.0))
            raise RuntimeError("importer broke")
    assert not path.exists() and siblings(path) == []


def test_build_refuses_existing_without_replace(tmp_path):
    path = tmp_path / "old.zarr"
    with EpisodeStore.build(path) as store:
        store.append_episode(episode(1.0))
    with pytest.raises(FileExistsError, match=r"old.zarr already exists; pass replace=True"):
        with EpisodeStore.build(path):
            pytest.fail("the block must not run")
    assert EpisodeStore.open(path).n_episodes == 1 and siblings(path) == []
    with pytest.raises(TypeError, match="replace=True"):
        with EpisodeStore.build(path, overwrite=True):
            pytest.fail("the block must not run")
    empty = tmp_path / "empty"
    empty.mkdir()
    with EpisodeStore.build(empty) as store:  # an empty folder holds nothing to lose
        store.append_episode(episode(2.0))
    assert EpisodeStore.open(empty).n_episodes == 1


def test_build_never_replaces_something_that_is_not_a_store(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for path in (photos, afile):
        with pytest.raises(FileExistsError, match=rf"{path.name} exists and is not an EpisodeStore; refusing"):
            with EpisodeStore.build(path, replace=True):
                pytest.fail("the block must not run")
    assert (photos / "cat.jpg").read_bytes() == b"meow" and afile.read_text() == "keep me"
    # create(overwrite=True) no longer deletes non-stores either
    with pytest.raises(FileExistsError, match="photos exists and is not an EpisodeStore"):
        EpisodeStore.create(photos, overwrite=True)
    assert (photos / "cat.jpg").read_bytes() == b"meow"


def test_replace_keeps_old_until_new_is_complete(tmp_path):
    path = tmp_path / "data.zarr"
    with EpisodeStore.build(path) as store:
        store.append_episodes([(episode(1.0), {}), (episode(2.0), {})])
    with pytest.raises(ValueError, match="NaN"):
        with EpisodeStore.build(path, replace=True) as store:
            store.append_episode(episode(3.0))
            assert EpisodeStore.open(path).n_episodes == 2  # readers still see the old store
            store.append_episode(episode(float("nan")))
    old = EpisodeStore.open(path)
    assert old.n_episodes == 2 and old.read("state")[-1, 0] == 2.0 and siblings(path) == []
    with EpisodeStore.build(path, replace=True) as store:
        store.append_episode(episode(3.0, n=7))
    new = EpisodeStore.open(path)
    assert new.n_episodes == 1 and new.n_steps == 7 and new.read("state")[0, 0] == 3.0
    assert siblings(path) == []  # the old store was deleted after the swap


def test_replace_refuses_a_store_being_written(tmp_path):
    path = tmp_path / "busy.zarr"
    with EpisodeStore.build(path) as store:
        store.append_episode(episode(1.0))
    with EpisodeStore.open(path, mode="a"):
        with pytest.raises(StoreLockedError, match=rf"busy.zarr is being written by pid {os.getpid()}"):
            with EpisodeStore.build(path, replace=True):
                pytest.fail("the block must not run")
    assert EpisodeStore.open(path).n_episodes == 1 and siblings(path) == []


def test_stale_builds_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "data.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its pid is free (reuse within the test is vanishingly unlikely)
    stale = tmp_path / f".data.zarr.building-{dead_pid}-abc123"
    EpisodeStore.create(stale).append_episode(episode(1.0))
    live = tmp_path / f".data.zarr.building-{os.getpid()}-def456"  # this process: maybe building right now
    live.mkdir()
    other = tmp_path / f".other.zarr.building-{dead_pid}"  # another store's leftover is not ours to judge
    other.mkdir()
    old = tmp_path / f".data.zarr.old-{dead_pid}"  # an interrupted replace: the only copy while data.zarr is absent
    old.mkdir()
    with EpisodeStore.build(path) as store:
        store.append_episode(episode(2.0))
    assert not stale.exists() and live.exists() and other.exists() and old.exists()
    assert remove_stale_builds(path) == [old]  # data.zarr exists now: the old copy is garbage
    assert siblings(path) == sorted([live.name, other.name])


def test_killed_build_leaves_no_store_and_is_cleaned_next_time(tmp_path):
    path = tmp_path / "data.zarr"
    code = ("import os, sys, numpy as np\n"
            "from robolearn.data.store import EpisodeStore\n"
            "with EpisodeStore.build(sys.argv[1]) as s:\n"
            "    s.append_episode({'x': np.ones((3, 1), np.float32)})\n"
            "    os._exit(3)\n")  # dies mid-build without cleanup, like a SIGKILL
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, "-c", code, str(path)], env=env).returncode == 3
    assert not path.exists()
    [left] = siblings(path)
    with pytest.raises(StoreIncompleteError, match=r"incomplete store"):
        EpisodeStore.open(tmp_path / left)
    assert issubclass(StoreIncompleteError, StoreFormatError)
    with EpisodeStore.build(path) as store:
        store.append_episode(episode(1.0))
    assert siblings(path) == [] and EpisodeStore.open(path).n_episodes == 1
