"""diffusion_policy replay buffers <-> EpisodeStore: the real Push-T release imports exactly (float images become
uint8 only when that is lossless), exports round-trip, and malformed buffers are refused with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.formats.diffusion_policy import export_diffusion_policy, import_diffusion_policy
from robolearn.data.store import EpisodeStore, StoreFormatError

PUSHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht_cchi_v7_replay.zarr"
PUSHT_KEYS = ["action", "img", "keypoint", "n_contacts", "state"]
BLOCK = 4096  # compare in blocks: the float32 source images alone are 2.8 GB

needs_pusht = pytest.mark.skipif(not PUSHT.exists(), reason=f"Push-T replay buffer not found at {PUSHT} "
                                                            f"(expected in ../shared/data next to the project)")


@pytest.fixture(scope="session")
def pusht_source():
    if not PUSHT.exists():
        pytest.skip(f"Push-T replay buffer not found at {PUSHT}")
    return zarr.open_group(store=zarr.storage.LocalStore(PUSHT, read_only=True), mode="r")


# `pusht_store` (the release imported once per session) comes from conftest.py: other modules read it too.


def assert_same_blocks(a, b, n: int, key: str) -> None:
    for start in range(0, n, BLOCK):
        x, y = np.asarray(a[start:start + BLOCK]), np.asarray(b[start:start + BLOCK])
        assert x.shape == y.shape, key
        assert np.array_equal(x, y), f"{key} differs in steps {start}..{start + BLOCK}"


# ---------------------------------------------------------------------------------------------- real Push-T
@needs_pusht
def test_pusht_import_keeps_episodes(pusht_store, pusht_source):
    store = pusht_store
    assert store.n_episodes == 206
    assert store.n_steps == 25650
    src_ends = pusht_source["meta/episode_ends"][:]
    assert np.array_equal(store.episode_ends, src_ends)
    assert sorted(store.keys) == PUSHT_KEYS
    assert store.task == "pusht" and store.fps == 10
    assert store.attrs["format"] == "diffusion_policy" and store.attrs["imported_from"] == str(PUSHT.resolve())
    assert store.episode_meta(0) == {"length": int(src_ends[0]), "source": f"diffusion_policy:{PUSHT.name}",
                                     "source_episode": 0}
    assert store.episode_meta(205)["source_episode"] == 205
    assert store.episode_lengths.min() > 0 and store.episode_lengths.sum() == 25650


@needs_pusht
def test_pusht_import_is_exact(pusht_store, pusht_source):
    store = pusht_store
    specs = store.specs
    assert specs["img"].dtype == "uint8" and specs["img"].shape == (96, 96, 3) and specs["img"].is_image
    assert store.array("img").dtype == np.uint8  # stored as uint8 on disk, not just converted on read
    for key in ("action", "state", "keypoint", "n_contacts"):
        src = pusht_source["data"][key]
        assert specs[key].dtype == "float32" and specs[key].shape == src.shape[1:], key
        assert_same_blocks(src, store.array(key), 25650, key)
    # images: the uint8 values equal the float32 source values (which are all integers 0..255)
    src = pusht_source["data/img"]
    assert src.dtype == np.float32 and src.shape == (25650, 96, 96, 3)
    for start in range(0, 25650, BLOCK):
        x = src[start:start + BLOCK]
        y = store.read("img", start, start + BLOCK)
        assert y.dtype == np.uint8
        assert np.array_equal(y.astype(np.float32), x), f"img differs in steps {start}..{start + BLOCK}"
    # and an episode read through the store API is the source slice
    begin, end = store.episode_bounds(100)
    assert np.array_equal(store.episode(100)["keypoint"], pusht_source["data/keypoint"][begin:end])


@needs_pusht
def test_pusht_export_round_trip(pusht_store, tmp_path):
    store = pusht_store
    out = export_diffusion_policy(store, tmp_path / "export.zarr")
    assert out == tmp_path / "export.zarr"
    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == 2  # diffusion_policy reads zarr v2
    assert (out / ".zgroup").exists() and (out / "data" / "img" / ".zarray").exists()
    assert np.array_equal(group["meta/episode_ends"][:], store.episode_ends)
    assert group["meta/episode_ends"].dtype == np.int64
    for key in PUSHT_KEYS:
        assert group["data"][key].dtype == store.array(key).dtype, key
        assert_same_blocks(store.array(key), group["data"][key], store.n_steps, key)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_diffusion_policy(store, out)

    # export -> re-import round trip, on the first 12 real episodes (all keys, uint8 images included)
    part = EpisodeStore.create(tmp_path / "part.zarr")
    part.append_episodes((store.episode(i), {}) for i in range(12))
    export_diffusion_policy(part, tmp_path / "part_export.zarr")
    again = import_diffusion_policy(tmp_path / "part_export.zarr", tmp_path / "again.zarr", progress=False)
    assert np.array_equal(again.episode_ends, store.episode_ends[:12])
    assert again.specs == store.specs
    for i in range(12):
        got, want = again.episode(i), store.episode(i)
        for key in PUSHT_KEYS:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), (i, key)


# ---------------------------------------------------------------------------------------------- synthetic buffers
def write_dp(path: Path, data: dict[str, np.ndarray], ends, *, meta: bool = True, zarr_format: int = 2) -> Path:
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    g = group.require_group("data")
    for key, value in data.items():
        g.create_array(key, shape=value.shape, dtype=value.dtype)[...] = value
    if meta:
        m = group.require_group("meta")
        m.create_array("episode_ends", shape=(len(ends),), dtype=np.int64)[...] = np.asarray(ends, np.int64)
    return path


def synthetic(n: int = 10, float_img: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(n, 16, 16, 3)).astype(np.float32 if float_img else np.uint8)
    return {"action": rng.normal(size=(n, 2)).astype(np.float32), "img": img,
            "count": np.arange(n, dtype=np.int32)}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_synthetic_import_is_exact(tmp_path, zarr_format):
    data = synthetic()
    src = write_dp(tmp_path / "dp.zarr", data, [3, 4, 10], zarr_format=zarr_format)
    store = import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert store.episode_lengths.tolist() == [3, 1, 6]
    assert store.specs["img"].dtype == "uint8" and store.specs["count"].dtype == "int32"
    assert np.array_equal(store.read("img").astype(np.float32), data["img"])
    assert np.array_equal(store.read("action"), data["action"]) and np.array_equal(store.read("count"), data["count"])


def test_keys_and_rename(tmp_path):
    data = synthetic()
    src = write_dp(tmp_path / "dp.zarr", data, [5, 10])
    store = import_diffusion_policy(src, tmp_path / "s.zarr", keys=["img", "action"],
                                    rename={"img": "camera"}, progress=False)
    assert sorted(store.keys) == ["action", "camera"]
    assert np.array_equal(store.read("camera"), data["img"].astype(np.uint8))
    with pytest.raises(KeyError, match=r"data/ has no arrays \['wrist'\]; it has \['action', 'count', 'img'\]"):
        import_diffusion_policy(src, tmp_path / "t.zarr", keys=["action", "wrist"], progress=False)


def test_keep_dtypes_keeps_float_images(tmp_path):
    data = synthetic()
    data["img"][0, 0, 0, 0] = 0.5  # would not survive uint8
    src = write_dp(tmp_path / "dp.zarr", data, [4, 10])
    store = import_diffusion_policy(src, tmp_path / "s.zarr", keep_dtypes=True, progress=False)
    assert store.specs["img"].dtype == "float32" and store.array("img").dtype == np.float32
    assert np.array_equal(store.read("img"), data["img"])


@pytest.mark.parametrize("ends,message", [
    ([4, 4, 10], r"episode 1 is empty or episode_ends is not increasing \(ends\[1\] = 4\)"),
    ([6, 3, 10], r"episode 1 is empty or episode_ends is not increasing \(ends\[1\] = 3\)"),
    ([0, 10], r"episode 0 is empty or episode_ends is not increasing \(ends\[0\] = 0\)"),
    ([4, 8], r"data/\w+ has 10 steps but episode_ends ends at 8"),
    ([4, 12], r"data/\w+ has 10 steps but episode_ends ends at 12"),
    ([], r"meta/episode_ends must be a non-empty 1-D array, got shape \(0,\)"),
])
def test_bad_episode_ends(tmp_path, ends, message):
    src = write_dp(tmp_path / "dp.zarr", synthetic(), ends)
    with pytest.raises(StoreFormatError, match=message):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()  # refused before anything was created


def test_missing_meta_group(tmp_path):
    src = write_dp(tmp_path / "dp.zarr", synthetic(), [10], meta=False)
    with pytest.raises(StoreFormatError, match="is not a diffusion_policy replay buffer: expected groups data/ "
                                               "and meta/ with meta/episode_ends"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no diffusion_policy dataset at .*nothing.zarr"):
        import_diffusion_policy(tmp_path / "nothing.zarr", tmp_path / "s.zarr", progress=False)


@pytest.mark.parametrize("bad", [127.5, -1.0, 256.0])
def test_float_image_that_is_not_uint8_is_refused(tmp_path, bad):
    data = synthetic()
    data["img"][7, 3, 2, 1] = bad
    src = write_dp(tmp_path / "dp.zarr", data, [4, 10])
    with pytest.raises(ValueError, match="image key 'img' has values that are not integers in 0..255; "
                                         "import it without conversion with keep_dtypes=True"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()  # no half-imported store is left behind


def test_import_does_not_overwrite_existing_store(tmp_path):
    src = write_dp(tmp_path / "dp.zarr", synthetic(), [10])
    import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert import_diffusion_policy(src, tmp_path / "s.zarr", overwrite=True, progress=False).n_episodes == 1


# ---------------------------------------------------------------------------------------------- source integrity
def chunked_source(path: Path, zarr_format: int = 2) -> Path:
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.require_group("data").create_array("action", shape=(12, 2), dtype=np.float32, chunks=(4, 2))[:] = \
        np.arange(1, 25, dtype=np.float32).reshape(12, 2)
    ends = group.require_group("meta").create_array("episode_ends", shape=(2,), dtype=np.int64)
    ends[:] = [5, 12]
    return path


@pytest.mark.parametrize("zarr_format,chunk", [(2, "1.0"), (3, "c/1/0")])
def test_missing_chunk_is_an_error_not_zeros(tmp_path, zarr_format, chunk):
    src = chunked_source(tmp_path / "dp.zarr", zarr_format)
    (src / "data" / "action" / chunk).unlink()
    with pytest.raises(StoreFormatError, match=rf"dp.zarr: data/action is missing chunk {chunk} \(steps 4..7\); "
                                               rf"zarr would read it as the fill value 0.0, not data\. Copy or "
                                               rf"download the dataset again; .*allow_missing_chunks=True"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()
    # a writer that skips fill-value chunks on purpose: the user says so, and the fill value is imported
    store = import_diffusion_policy(src, tmp_path / "s.zarr", allow_missing_chunks=True, progress=False)
    assert store.read("action")[4:8].tolist() == [[0, 0]] * 4 and store.read("action")[8, 0] == 17


def test_missing_episode_ends_chunk_is_an_error(tmp_path):
    src = chunked_source(tmp_path / "dp.zarr")
    (src / "meta" / "episode_ends" / "0").unlink()
    with pytest.raises(StoreFormatError, match=r"meta/episode_ends is missing chunk 0 \(steps 0..1\)"):
        import_diffusion_policy(src, tmp_path / "s.zarr", keys=["action"], progress=False)


def test_export_writes_every_chunk_and_imports_back(tmp_path):
    """zarr 3 skips chunks equal to the fill value unless told otherwise; an export writes them all."""
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.append_episodes([({"action": np.zeros((3, 2), np.float32), "done": np.zeros(3, np.uint8)}, {})] * 2)
    out = export_diffusion_policy(store, tmp_path / "dp.zarr")
    group = zarr.open_group(out, mode="r")
    for key in ("action", "done"):
        assert group["data"][key].nchunks_initialized == group["data"][key].nchunks > 0, key
    again = import_diffusion_policy(out, tmp_path / "again.zarr", progress=False)
    assert again.episode_lengths.tolist() == [3, 3] and not again.read("action").any()


def test_float_episode_ends_are_refused(tmp_path):
    src = write_dp(tmp_path / "dp.zarr", synthetic(), [4, 10])
    group = zarr.open_group(src, mode="r+")
    del group["meta/episode_ends"]
    group["meta"].create_array("episode_ends", shape=(2,), dtype=np.float64)[:] = [4.0, 10.0]
    with pytest.raises(StoreFormatError, match=r"dp.zarr: meta/episode_ends has dtype float64; episode ends are "
                                               r"integer step counts"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)


def test_string_array_is_refused_naming_it(tmp_path):
    data = synthetic()
    data["label"] = np.array([b"step"] * 10, dtype="S4")
    src = write_dp(tmp_path / "dp.zarr", data, [4, 10])
    with pytest.raises(StoreFormatError, match=r"dp.zarr: data/label has dtype \|S4; only numeric arrays .* "
                                               r"Leave it out with keys=\[\.\.\.\]"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
    assert import_diffusion_policy(src, tmp_path / "s.zarr", keys=["action"], progress=False).n_steps == 10


def test_arrays_of_different_lengths_are_refused(tmp_path):
    data = synthetic()
    data["count"] = data["count"][:9]
    src = write_dp(tmp_path / "dp.zarr", data, [4, 10])
    with pytest.raises(StoreFormatError, match=r"dp.zarr: data/count has 9 steps but data/action has 10; every "
                                               r"array of a replay buffer has one row per step"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)


def test_episode_ends_group_is_refused(tmp_path):
    src = write_dp(tmp_path / "dp.zarr", synthetic(), [10], meta=False)
    zarr.open_group(src, mode="r+").require_group("meta").require_group("episode_ends")
    with pytest.raises(StoreFormatError, match=r"dp.zarr: meta/episode_ends is a group; it must be a 1-D integer array"):
        import_diffusion_policy(src, tmp_path / "s.zarr", progress=False)
