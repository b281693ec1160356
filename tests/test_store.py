"""EpisodeStore: exact round trips, crash safety against a really killed / interrupted writer process, and the
errors users get for bad paths and bad episodes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.store import EpisodeStore, StoreFormatError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PUSHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht_cchi_v7_replay.zarr"


def make_episode(i: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "state": rng.normal(size=(length, 3)).astype(np.float32) * (i + 1),
        "action": rng.uniform(-5, 5, size=(length, 2)).astype(np.float32),
        "img": rng.integers(0, 256, size=(length, 12, 10, 3), dtype=np.uint8),
    }


@pytest.fixture()
def written(tmp_path):
    """A store with 4 episodes of different lengths (one of them a single step), plus what was written."""
    rng = np.random.default_rng(0)
    lengths = [17, 1, 40, 9]
    episodes = [make_episode(i, n, rng) for i, n in enumerate(lengths)]
    metas = [{"success": bool(i % 2), "operator": f"op{i}", "score": 0.5 * i} for i in range(len(lengths))]
    store = EpisodeStore.create(tmp_path / "demo.zarr", fps=10.0, task="unit", attrs={"robot": "sim"})
    for i, (ep, meta) in enumerate(zip(episodes, metas)):
        assert store.append_episode(ep, **meta) == i
    return tmp_path / "demo.zarr", episodes, metas, lengths


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(written):
    path, episodes, metas, lengths = written
    store = EpisodeStore.open(path)  # read-only reopen
    assert not store.writable
    assert store.n_episodes == len(store) == 4
    assert store.n_steps == sum(lengths) == 67
    np.testing.assert_array_equal(store.episode_lengths, lengths)
    np.testing.assert_array_equal(store.episode_ends, np.cumsum(lengths))
    assert store.episode_ends.dtype == np.int64
    assert sorted(store.keys) == ["action", "img", "state"]
    assert store.specs["img"].shape == (12, 10, 3) and store.specs["img"].dtype == "uint8"
    assert store.specs["state"].shape == (3,) and store.specs["state"].dtype == "float32"
    assert store.fps == 10.0 and store.task == "unit" and store.attrs == {"robot": "sim"}
    for i, (want, meta) in enumerate(zip(episodes, metas)):
        got = store.episode(i)
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            assert got[key].shape == want[key].shape, key
            assert np.array_equal(got[key], want[key]), (i, key)
        assert store.episode_meta(i) == {"length": lengths[i], **meta}
        start, stop = store.episode_bounds(i)
        assert (start, stop) == (sum(lengths[:i]), sum(lengths[:i + 1]))
    # negative indices count from the end, like a list
    assert np.array_equal(store.episode(-1)["img"], episodes[-1]["img"])
    assert np.array_equal(store.episode(2, keys=["action"])["action"], episodes[2]["action"])
    assert list(store.episode(2, keys=["action"])) == ["action"]
    # iterating yields the episodes in order
    assert [len(ep["state"]) for ep in store.episodes()] == lengths


def test_read_rows_equals_fancy_indexing(written):
    path, episodes, _, _ = written
    store = EpisodeStore.open(path)
    full = {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
    rows = np.array([66, 0, 17, 17, 3, 40, 18, 0, 65])  # unsorted, repeated, both ends, across episodes
    for key in full:
        got = store.read_rows(key, rows)
        assert got.dtype == full[key].dtype
        assert np.array_equal(got, full[key][rows]), key
    grid = np.array([[1, 2, 3], [60, 17, 1]])  # row arrays of any shape keep their shape
    assert np.array_equal(store.read_rows("img", grid), full["img"][grid])
    assert np.array_equal(store.read("action", 10, 30), full["action"][10:30])
    with pytest.raises(IndexError, match=r"rows out of range \[0, 67\)"):
        store.read_rows("state", np.array([0, 67]))
    with pytest.raises(IndexError, match="out of range"):
        store.read_rows("state", np.array([-1]))


def test_stats_match_numpy(written):
    path, episodes, _, _ = written
    store = EpisodeStore.open(path)
    for key in ("state", "action", "img"):
        data = np.concatenate([ep[key] for ep in episodes]).astype(np.float64)
        stats = store.stats(key)
        assert stats["min"].shape == data.shape[1:]
        np.testing.assert_array_equal(stats["min"], data.min(axis=0))
        np.testing.assert_array_equal(stats["max"], data.max(axis=0))
        np.testing.assert_allclose(stats["mean"], data.mean(axis=0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats["std"], data.std(axis=0), rtol=1e-6, atol=1e-6)


def test_reopen_for_append_keeps_old_episodes(written):
    path, episodes, _, lengths = written
    store = EpisodeStore.open(path, mode="a")
    extra = make_episode(9, 5, np.random.default_rng(9))
    assert store.append_episode(extra, note="later") == 4
    store = EpisodeStore.open(path)
    assert store.n_episodes == 5 and store.n_steps == sum(lengths) + 5
    for i, want in enumerate([*episodes, extra]):
        got = store.episode(i)
        assert all(np.array_equal(got[k], want[k]) for k in want), i
    assert store.episode_meta(4) == {"length": 5, "note": "later"}


def test_bulk_append_with_commit_every(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [make_episode(i, 3 + i, rng) for i in range(7)]
    store = EpisodeStore.create(tmp_path / "bulk.zarr")
    assert store.append_episodes(((ep, {"i": i}) for i, ep in enumerate(episodes)), commit_every=3) == list(range(7))
    store = EpisodeStore.open(tmp_path / "bulk.zarr")
    assert store.n_episodes == 7
    for i, want in enumerate(episodes):
        assert np.array_equal(store.episode(i)["img"], want["img"])
        assert store.episode_meta(i)["i"] == i


# ---------------------------------------------------------------------------------------------- crash safety
# The writer process and the checks share this code, so "the content of episode i" is defined once.
EPISODE_SRC = textwrap.dedent("""
    import numpy as np

    _BASE = np.random.default_rng(1234).integers(0, 256, size=(230, 96, 96, 3), dtype=np.uint8)

    def crash_episode(i):
        length = 200 + (i * 7) % 30  # lengths differ so episodes straddle zarr chunks at varying offsets
        img = _BASE[:length] + np.uint8(i % 256)  # wraps modulo 256: different, incompressible per episode
        state = np.arange(length, dtype=np.float32)[:, None] + np.array([0.0, 1000.0 * i], np.float32)
        return {"img": img, "state": state}
""")
_ns: dict = {}
exec(EPISODE_SRC, _ns)
crash_episode = _ns["crash_episode"]

WRITER_SRC = EPISODE_SRC + textwrap.dedent("""
    import itertools, signal, sys
    from robolearn.data.store import EpisodeStore

    # A process started in the background by a non-interactive shell (as CI may do) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: restore the interactive behaviour being tested.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    store = EpisodeStore.create(sys.argv[1])
    for i in itertools.count():
        episode = crash_episode(i)
        try:
            store.append_episode(episode, index=i)
        except KeyboardInterrupt:
            print(f"interrupted {i}", flush=True)
            raise
        print(f"done {i}", flush=True)
""")


def run_writer(path: Path, sig: int, delay_fraction: float) -> tuple[int, str, str, int]:
    """Start a writer process, wait for 3 reported appends, signal it while the next append is running.

    Returns (appends reported, rest of stdout, stderr, exit code)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SRC, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=path.parent)
    try:
        times, deadline = [], time.monotonic() + 60
        while len(times) < 3:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early with {proc.wait()}: {proc.stderr.read()}")
            assert line == f"done {len(times)}\n", line
            times.append(time.monotonic())
            assert times[-1] < deadline, "writer too slow"
        # The next append started right after the last report; wait part of one append's duration, then strike.
        time.sleep(delay_fraction * (times[-1] - times[0]) / (len(times) - 1))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported = len(times) + sum(line.startswith("done ") for line in out.splitlines())
    return reported, out, err, proc.returncode


def assert_episodes_intact(store: EpisodeStore, n: int) -> None:
    assert store.n_episodes == n
    for i in range(n):
        want = crash_episode(i)
        got = store.episode(i)
        assert got["img"].dtype == np.uint8 and got["state"].dtype == np.float32
        assert np.array_equal(got["img"], want["img"]), f"episode {i} img corrupted"
        assert np.array_equal(got["state"], want["state"]), f"episode {i} state corrupted"
        assert store.episode_meta(i) == {"length": len(want["img"]), "index": i}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_writer_loses_at_most_the_episode_in_progress(tmp_path, sig):
    # Signal timing is up to the OS scheduler: retry (with the checks on every try) until one signal provably
    # landed inside an append, i.e. after the in-flight episode's first rows were written.
    for attempt, delay_fraction in enumerate([0.4, 0.25, 0.55, 0.15, 0.7]):
        path = tmp_path / f"crash{attempt}.zarr"
        reported, out, err, returncode = run_writer(path, sig, delay_fraction)
        if sig == signal.SIGKILL:
            assert returncode == -signal.SIGKILL, err
        else:
            assert returncode != 0 and "KeyboardInterrupt" in err, (returncode, err)

        store = EpisodeStore.open(path)
        assert reported <= store.n_episodes <= reported + 1  # only the episode in flight may be lost
        n = store.n_episodes
        assert_episodes_intact(store, n)
        if sig == signal.SIGKILL:
            mid_write = max(store.array(k).shape[0] for k in store.keys) > store.n_steps  # uncommitted rows on disk
        else:
            mid_write = f"interrupted {reported}\n" in out  # KeyboardInterrupt came out of append_episode

        # The store stays appendable: the next append replaces the uncommitted rows left by the dead writer.
        store = EpisodeStore.open(path, mode="a")
        assert store.append_episode(crash_episode(n), index=n) == n
        assert_episodes_intact(EpisodeStore.open(path), n + 1)
        if mid_write:
            return
    pytest.fail(f"no {sig!r} landed inside an append in 5 tries; the crash-safety path was not exercised")


# ---------------------------------------------------------------------------------------------- bad input
def test_open_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no episode store at .*nowhere.zarr"):
        EpisodeStore.open(tmp_path / "nowhere.zarr")


def test_open_bad_mode(written):
    with pytest.raises(ValueError, match="mode must be 'r' .* or 'a'"):
        EpisodeStore.open(written[0], mode="w")


def test_open_folder_that_is_not_a_store(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8not really")
    with pytest.raises(StoreFormatError, match="photos is not a zarr group"):
        EpisodeStore.open(folder)
    with pytest.raises(StoreFormatError, match="photos is not a zarr group"):
        EpisodeStore.open(folder, mode="a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreFormatError, match="empty is not a zarr group"):
        EpisodeStore.open(tmp_path / "empty")
    assert issubclass(StoreFormatError, ValueError)


def test_open_plain_zarr_group_without_record(tmp_path):
    root = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    root.create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(StoreFormatError, match="not a robolearn EpisodeStore .*robolearn.episode_store") as info:
        EpisodeStore.open(tmp_path / "plain.zarr")
    assert "robolearn convert" not in str(info.value)


def test_open_newer_store_version(written):
    path = written[0]
    root = zarr.open_group(path, mode="r+")
    root.attrs["robolearn"] = {**root.attrs["robolearn"], "version": 99}
    with pytest.raises(StoreFormatError, match="newer robolearn .*version 99"):
        EpisodeStore.open(path)


@pytest.mark.skipif(not PUSHT.exists(), reason=f"Push-T replay buffer not found at {PUSHT}")
def test_open_diffusion_policy_dataset_points_to_convert():
    with pytest.raises(StoreFormatError, match="diffusion_policy replay buffer: import it with `robolearn convert`"):
        EpisodeStore.open(PUSHT)  # read-only: the shared dataset is never written


def test_create_does_not_clobber(written, tmp_path):
    path = written[0]
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        EpisodeStore.create(path)
    assert EpisodeStore.open(path).n_episodes == 4  # untouched
    fresh = EpisodeStore.create(path, overwrite=True)
    assert fresh.n_episodes == 0 and fresh.keys == []
    assert EpisodeStore.open(path).n_episodes == 0
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert EpisodeStore.create(empty).n_episodes == 0  # an empty folder is fine


@pytest.fixture()
def store(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.append_episode({"state": np.zeros((4, 3), np.float32), "img": np.zeros((4, 8, 8, 3), np.uint8)})
    return store


def good(n=4):
    return {"state": np.ones((n, 3), np.float32), "img": np.ones((n, 8, 8, 3), np.uint8)}


def test_append_missing_or_extra_key(store):
    ep = good()
    del ep["img"]
    with pytest.raises(KeyError, match=r"missing \['img'\], unexpected \[\]"):
        store.append_episode(ep)
    with pytest.raises(KeyError, match=r"missing \[\], unexpected \['reward'\]"):
        store.append_episode({**good(), "reward": np.zeros(4, np.float32)})
    assert store.n_episodes == 1


def test_append_wrong_dtype_or_shape(store):
    with pytest.raises(ValueError, match=r"key 'state': .*dtype float64, the store holds .*dtype float32"):
        store.append_episode({**good(), "state": np.ones((4, 3), np.float64)})
    with pytest.raises(ValueError, match=r"key 'img': got per-step shape \(8, 8, 4\).*holds shape \(8, 8, 3\)"):
        store.append_episode({**good(), "img": np.ones((4, 8, 8, 4), np.uint8)})
    with pytest.raises(ValueError, match=r"key 'state': got per-step shape \(\)"):
        store.append_episode({**good(), "state": np.ones(4, np.float32)})
    with pytest.raises(TypeError, match="key 'state' has dtype <U1; stores hold numeric arrays only"):
        store.append_episode({**good(), "state": np.full((4, 3), "a")})
    assert store.n_episodes == 1 and store.n_steps == 4


def test_append_empty_or_ragged_episode(store):
    with pytest.raises(ValueError, match="empty episode"):
        store.append_episode(good(0))
    with pytest.raises(ValueError, match="at least one key"):
        store.append_episode({})
    with pytest.raises(ValueError, match="same number of steps.*'state': 4.*'img': 5"):
        store.append_episode({"state": good(4)["state"], "img": good(5)["img"]})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_append_non_finite(store, bad):
    ep = good(6)
    ep["state"][3, 1] = bad
    ep["state"][5, 0] = bad
    with pytest.raises(ValueError, match=r"key 'state' has NaN or infinite values \(first at step 3 "):
        store.append_episode(ep)
    assert store.n_episodes == 1


def test_non_finite_metadata_is_refused_and_nothing_committed(store):
    with pytest.raises(ValueError, match="metadata 'score' is nan"):
        store.append_episode(good(), score=float("nan"))
    assert store.n_episodes == 1 and store.n_steps == 4
    assert store.array("state").shape[0] == 4  # refused before any row was written
    assert store.append_episode(good(2), score=np.float32(0.5)) == 1  # numpy scalars become plain JSON values
    assert EpisodeStore.open(store.path).episode_meta(1) == {"length": 2, "score": 0.5}


def test_bad_key_name_on_first_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "k.zarr")
    with pytest.raises(ValueError, match="invalid key 'obs/state'"):
        store.append_episode({"obs/state": np.zeros((2, 1), np.float32)})


def test_read_only_refuses_append(store):
    ro = EpisodeStore.open(store.path)
    with pytest.raises(PermissionError, match="open it with mode='a'"):
        ro.append_episode(good())
    assert EpisodeStore.open(store.path).n_episodes == 1


def test_episode_index_and_key_errors(store):
    with pytest.raises(IndexError, match="episode 1 out of range: .* has 1 episodes"):
        store.episode(1)
    with pytest.raises(IndexError, match="episode -2 out of range"):
        store.episode_meta(-2)
    with pytest.raises(KeyError, match=r"has no key 'action'; it has \['state', 'img'\]"):
        store.read("action")
    with pytest.raises(KeyError, match="has no key 'action'"):
        store.stats("action")


def test_stats_of_empty_store(tmp_path):
    store = EpisodeStore.create(tmp_path / "e.zarr")
    with pytest.raises(ValueError, match="metadata 'score' is inf"):
        store.append_episode(good(), score=float("inf"))  # defines keys, commits nothing
    assert store.keys == ["state", "img"]
    with pytest.raises(ValueError, match="has no episodes; statistics of 'state' are undefined"):
        store.stats("state")


def test_interrupted_handle_refuses_to_append_until_reopened(store):
    def interrupted_episodes():
        yield good(), {}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.append_episodes(interrupted_episodes(), commit_every=5)
    assert store.n_episodes == 1  # the uncommitted episode is invisible
    with pytest.raises(RuntimeError, match="reopen the store"):
        store.append_episode(good())
    store.close()  # one writer per store: the interrupted handle gives up the write lock first
    reopened = EpisodeStore.open(store.path, mode="a")
    assert reopened.append_episode(good(3)) == 1 and reopened.episode_lengths.tolist() == [4, 3]
