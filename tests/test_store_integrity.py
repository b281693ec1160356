"""A store that disagrees with itself fails on open with the key and the mismatch; a missing chunk file is an error,
not zeros; verify() reads everything. Stores written before every chunk was written keep loading."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.store import EpisodeStore, StoreFormatError

IMG = (32, 32, 4)  # 4 KiB a step: 256 rows per chunk, so a few hundred steps span several chunk files


@pytest.fixture()
def path(tmp_path):
    """Two episodes (300 + 200 steps); `zero` is all zeros, so zarr would skip its chunks unless told not to."""
    rng = np.random.default_rng(0)
    with EpisodeStore.build(tmp_path / "s.zarr") as store:
        for n in (300, 200):
            store.append_episode({"img": rng.integers(0, 256, (n, *IMG), dtype=np.uint8),
                                  "state": rng.normal(size=(n, 3)).astype(np.float32),
                                  "zero": np.zeros((n, *IMG), np.uint8)}, success=True)
    return tmp_path / "s.zarr"


def edit_record(path: Path, **changes) -> None:
    root = zarr.open_group(path, mode="r+")
    root.attrs["robolearn"] = {**root.attrs["robolearn"], **changes}


def record(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["robolearn"]


# ---------------------------------------------------------------------------------------------- checks on open
def test_record_longer_than_arrays(path):
    edit_record(path, episodes=[*record(path)["episodes"], {"length": 10}])
    with pytest.raises(StoreFormatError, match=r"s.zarr: key 'img' has 500 rows but the record's episodes end at "
                                               r"step 510 \(the record is longer than the array\); .*import/collect"):
        EpisodeStore.open(path)


def test_record_shorter_than_arrays_is_an_uncommitted_tail(path):
    # what a writer killed mid-append leaves: rows past the last commit, overwritten by the next append
    edit_record(path, episodes=record(path)["episodes"][:1])
    store = EpisodeStore.open(path)
    assert store.n_steps == 300
    assert {k: v["uncommitted_rows"] for k, v in store.verify()["keys"].items()} == {"img": 200, "state": 200,
                                                                                    "zero": 200}


@pytest.mark.parametrize("length, message", [
    (12.0, r"episode 1 has length 12.0 \(float\); episode ends must be integers"),
    ("12", r"episode 1 has length '12' \(str\); episode ends must be integers"),
    (True, r"episode 1 has length True \(bool\)"),
    (0, r"episode 1 has length 0; episode ends must increase"),
    (-5, r"episode 1 has length -5; episode ends must increase"),
    (None, r"episode 1 has length None"),
])
def test_bad_episode_lengths(path, length, message):
    episodes = record(path)["episodes"]
    episodes[1]["length"] = length
    edit_record(path, episodes=episodes)
    with pytest.raises(StoreFormatError, match=message):
        EpisodeStore.open(path)


def test_episode_entry_that_is_not_a_mapping(path):
    edit_record(path, episodes=[record(path)["episodes"][0], 200])
    with pytest.raises(StoreFormatError, match="episode 1 in the record is int, not a mapping of metadata"):
        EpisodeStore.open(path)
    edit_record(path, episodes={"0": 300})
    with pytest.raises(StoreFormatError, match="the record's 'episodes' is dict, not a list"):
        EpisodeStore.open(path)


def test_key_listed_but_missing(path):
    shutil.rmtree(path / "data" / "state")
    with pytest.raises(StoreFormatError, match=r"key 'state' is listed in the record but data/state is missing"):
        EpisodeStore.open(path)


@pytest.mark.parametrize("dtype", ["<U4", "object", "|S3"])
def test_string_or_object_dtype_in_record(path, dtype):
    keys = record(path)["keys"]
    keys["state"]["dtype"] = dtype
    edit_record(path, keys=keys)
    with pytest.raises(StoreFormatError, match=r"key 'state' has dtype .* in the record; stores hold numeric"):
        EpisodeStore.open(path)


def test_record_disagrees_with_array_dtype_or_shape(path):
    keys = record(path)["keys"]
    edit_record(path, keys={**keys, "state": {"shape": [3], "dtype": "float64"}})
    with pytest.raises(StoreFormatError, match=r"key 'state' holds dtype float32 but the record says float64"):
        EpisodeStore.open(path)
    edit_record(path, keys={**keys, "state": {"shape": [4], "dtype": "float32"}})
    with pytest.raises(StoreFormatError, match=r"key 'state' holds per-step shape \(3,\) but the record says \(4,\)"):
        EpisodeStore.open(path)
    edit_record(path, keys={**keys, "state": {"shape": "3", "dtype": "float32"}})
    with pytest.raises(StoreFormatError, match=r"key 'state' has per-step shape '3' in the record, not a list"):
        EpisodeStore.open(path)


def test_one_array_shorter_than_the_others(path):
    zarr.open_array(path / "data" / "state", mode="r+").resize((450, 3))
    with pytest.raises(StoreFormatError, match=r"key 'state' has 450 rows but the record's episodes end at step 500"):
        EpisodeStore.open(path)
    with pytest.raises(StoreFormatError, match="key 'state' has 450 rows"):
        EpisodeStore.open(path, mode="a")


def test_episodes_without_keys(path):
    edit_record(path, keys={})
    with pytest.raises(StoreFormatError, match="the record lists 2 episodes but no keys"):
        EpisodeStore.open(path)


# ---------------------------------------------------------------------------------------------- chunks
def test_new_stores_write_all_zero_chunks(path):
    assert record(path)["all_chunks_written"] is True
    assert sorted(p.name for p in (path / "data" / "zero" / "c").iterdir()) == ["0", "1"]  # 500 rows / 256


def test_missing_chunk_is_an_error_not_zeros(path):
    chunk = path / "data" / "img" / "c" / "1" / "0" / "0" / "0"  # rows 256-511
    chunk.unlink()
    store = EpisodeStore.open(path)
    assert store.read("img", 0, 256).any()  # other chunks read normally
    message = r"chunk file data/img/c/1/0/0/0 is missing \(rows 256-499 of key 'img'\); .*restore it from a backup"
    for read in (lambda: store.read("img"), lambda: store.episode(1), lambda: store.read_rows("img", np.array([3, 400]))):
        with pytest.raises(StoreFormatError, match=message):
            read()
    with pytest.raises(StoreFormatError, match=r"key 'img' rows 256-499 \(file data/img/c/1/0/0/0\): the chunk file is "
                                               r"missing"):
        store.verify()


def test_store_written_before_every_chunk_was_written_keeps_loading(path):
    # today's main: no `all_chunks_written` in the record, and zarr skipped writing the all-zero chunks
    rec = record(path)
    del rec["all_chunks_written"]
    zarr.open_group(path, mode="r+").attrs["robolearn"] = rec
    for chunk in ("0", "1"):
        (path / "data" / "zero" / "c" / chunk / "0" / "0" / "0").unlink()
    store = EpisodeStore.open(path)
    assert not store.all_chunks_written
    assert np.array_equal(store.read("zero"), np.zeros((500, *IMG), np.uint8))
    report = store.verify()
    assert report["keys"]["zero"]["unwritten_zero_chunks"] == 2 and report["keys"]["img"]["unwritten_zero_chunks"] == 0
    with EpisodeStore.open(path, mode="a") as writer:  # and can still be appended to
        writer.append_episode({"img": np.ones((20, *IMG), np.uint8), "state": np.ones((20, 3), np.float32),
                               "zero": np.zeros((20, *IMG), np.uint8)})
    assert EpisodeStore.open(path).n_steps == 520


def test_appends_within_and_across_chunks_keep_working(tmp_path):
    # the guard must not mistake the next append's not-yet-written chunk for damage
    with EpisodeStore.build(tmp_path / "a.zarr") as store:
        for n in (100, 100, 100, 300):
            store.append_episode({"zero": np.zeros((n, *IMG), np.uint8)})
    store = EpisodeStore.open(tmp_path / "a.zarr")
    assert store.n_steps == 600 and not store.read("zero").any()
    assert store.verify()["keys"]["zero"]["chunks"] == 3


# ---------------------------------------------------------------------------------------------- verify
def test_verify_report_of_a_good_store(path):
    report = EpisodeStore.open(path).verify()
    assert report["path"] == str(path) and report["episodes"] == 2 and report["steps"] == 500
    assert report["all_chunks_written"] is True
    assert report["keys"]["img"] == {"chunks": 2, "chunk_rows": 256, "unwritten_zero_chunks": 0,
                                     "uncommitted_rows": 0}
    assert report["keys"]["state"]["chunks"] == 1


def test_verify_garbled_chunk(path):
    chunk = path / "data" / "img" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # second half overwritten with zeros
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreFormatError, match=r"failed verification \(1 problem\):\n  - key 'img' rows 0-255 "
                                               r"\(file data/img/c/0/0/0/0\): does not decode"):
        EpisodeStore.open(path).verify()


def test_verify_lists_every_problem_and_non_finite_values(path):
    (path / "data" / "zero" / "c" / "1" / "0" / "0" / "0").unlink()
    zarr.open_array(path / "data" / "state", mode="r+")[410, 2] = np.nan  # written behind the store's back
    with pytest.raises(StoreFormatError, match=r"\(2 problems\)") as info:
        EpisodeStore.open(path).verify()
    assert "key 'state' rows 0-499 (file data/state/c/0/0): NaN or infinite values (first at row 410)" in str(info.value)
    assert "key 'zero' rows 256-499 (file data/zero/c/1/0/0/0): the chunk file is missing" in str(info.value)


def test_verify_truncated_record(path):
    meta = (path / "zarr.json").read_text()
    store = EpisodeStore.open(path)
    (path / "zarr.json").write_text(meta[: len(meta) // 2])  # the root metadata cut short on disk
    with pytest.raises(StoreFormatError, match="s.zarr is not a zarr group"):
        store.verify()  # verify re-reads the record from disk, not the handle's copy
    (path / "zarr.json").write_text(meta)
    edit_record(path, episodes=[*record(path)["episodes"], {"length": 3}])
    with pytest.raises(StoreFormatError, match="the record is longer than the array"):
        store.verify()
