"""Fuzzing EpisodeStores: a store written by robolearn, then truncated, garbled, retyped, emptied of files or given
stray ones, either reads back its original rows exactly (episodes, training windows, verify, `robolearn info
--verify`) or fails with an error the CLI prints as one line naming the store; reading never changes a file."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robolearn.cli import expected_errors, main
from robolearn.data import store as store_module
from robolearn.data.store import EpisodeStore, StoreFormatError
from robolearn.data.windows import Windows, WindowSpec
from tests.fuzzing import json_paths

FUZZ = settings(max_examples=int(os.environ.get("ROBOLEARN_FUZZ_EXAMPLES", 30)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same cases on every CI run
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
HOSTILE = [-1, 0, 2.5, 10**12, 2**63, "7", "", None, True, [3], {"a": 1}, "float32", "<U4", "|O"]
LENGTHS = (6, 4, 7)
SPEC = WindowSpec(obs_keys=("state", "img"), n_obs_steps=2, horizon=4, n_action_steps=2)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Three episodes, a low-dim and an image key, with chunks of a few rows so that every key spans many files."""
    path = tmp_path_factory.mktemp("store") / "demo.zarr"
    rng = np.random.default_rng(0)
    chunk_bytes, store_module._CHUNK_BYTES = store_module._CHUNK_BYTES, 64
    try:
        with EpisodeStore.build(path, fps=10.0, task="fuzz") as store:
            for i, n in enumerate(LENGTHS):
                store.append_episode({"action": rng.normal(size=(n, 2)).astype(np.float32),
                                      "state": rng.normal(size=(n, 3)).astype(np.float32),
                                      "img": rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)},
                                     success=bool(i % 2), operator="fuzz")
    finally:
        store_module._CHUNK_BYTES = chunk_bytes
    return path


class Reference(tuple):
    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing case: keep it short
        return "<the pristine store's rows, episode ends and batches>"


@pytest.fixture(scope="module")
def reference(pristine):
    store = EpisodeStore.open(pristine)
    return Reference(({k: store.read(k) for k in store.keys}, store.episode_ends, batches(store, "ram")))


def batches(store: EpisodeStore, cache: str) -> list[dict]:
    windows = Windows(store, SPEC, cache=cache)
    return list(windows.batches(5, np.random.default_rng(0), drop_last=False))


def same_batches(a: list[dict], b: list[dict]) -> bool:
    flat = [[x["action"], *x["obs"].values()] for x in a], [[y["action"], *y["obs"].values()] for y in b]
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(*flat) for x, y in zip(p, q))


def fresh_copy(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy" / pristine.name
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(pristine, target)
    return target


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def read_or_fail_cleanly(path: Path, reference, capsys) -> None:
    """The contract: original rows exactly, or an expected error naming the store; the CLI agrees in one line."""
    rows, ends, ref_batches = reference
    before = tree_digest(path)
    failed_at = None
    try:
        failed_at = "open"
        store = EpisodeStore.open(path)
        failed_at = "verify"
        store.verify()
        failed_at = "read"
        n = store.n_steps
        assert n <= ends[-1] and set(store.keys) <= set(rows), "rows or keys that were never written"
        for key in store.keys:
            got = np.concatenate([store.episode(i, [key])[key] for i in range(store.n_episodes)]) if n else None
            assert n == 0 or np.array_equal(got, rows[key][:n]), f"{key}: rows differ from those written"
        if store.n_episodes:
            cached, uncached = batches(store, "ram"), batches(store, "none")
            assert same_batches(cached, uncached), "cached and uncached windows differ"
            if np.array_equal(store.episode_ends, ends):
                assert same_batches(cached, ref_batches), "windows differ from the original store's"
        failed_at = None
    except expected_errors() as err:
        assert message(err).strip(), f"{type(err).__name__} without a message"
        assert str(path) in message(err), f"the error does not name the store: {message(err)}"
    capsys.readouterr()
    code = main(["info", str(path), "--verify"])
    err_lines = capsys.readouterr().err.splitlines()
    if failed_at in ("open", "verify"):
        assert code == 2 and len(err_lines) == 1, err_lines
        assert err_lines[0].startswith("robolearn info: error: ") and str(path) in err_lines[0], err_lines
    elif failed_at is None:
        assert code == 0 and err_lines == [], err_lines
    assert tree_digest(path) == before, "reading changed the store"


def store_files(pristine: Path) -> list[str]:
    """Every file with bytes to damage (the lock file is empty while nobody writes)."""
    return sorted(str(p.relative_to(pristine)) for p in pristine.rglob("*") if p.is_file() and p.stat().st_size)


# ---------------------------------------------------------------------------------------------- bytes
@FUZZ
@given(data=st.data(), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(pristine, reference, tmp_path, capsys, data, fraction):
    path = fresh_copy(pristine, tmp_path)
    name = data.draw(st.sampled_from(store_files(pristine)))
    raw = (path / name).read_bytes()
    (path / name).write_bytes(raw[:int(len(raw) * fraction)])
    read_or_fail_cleanly(path, reference, capsys)


@FUZZ
@given(data=st.data(),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6))
def test_garbled_files(pristine, reference, tmp_path, capsys, data, flips):
    path = fresh_copy(pristine, tmp_path)
    name = data.draw(st.sampled_from(store_files(pristine)))
    raw = bytearray((path / name).read_bytes())
    for where, xor in flips:
        raw[int(where * len(raw))] ^= xor
    (path / name).write_bytes(bytes(raw))
    read_or_fail_cleanly(path, reference, capsys)


@FUZZ
@given(data=st.data())
def test_deleted_files_and_folders(pristine, reference, tmp_path, capsys, data):
    path = fresh_copy(pristine, tmp_path)
    folders = sorted({str(Path(f).parent) for f in store_files(pristine)} - {"."})
    name = data.draw(st.sampled_from(store_files(pristine) + folders))
    shutil.rmtree(path / name) if (path / name).is_dir() else (path / name).unlink()
    read_or_fail_cleanly(path, reference, capsys)


@FUZZ
@given(data=st.data(), name=st.sampled_from(["zarr.json", "c", "0", "junk", ".tmp-x", "x.json"]),
       content=st.sampled_from([b"", b"{}", b"\x00" * 64, b'{"zarr_format": 3, "node_type": "group"}']))
def test_stray_files(pristine, reference, tmp_path, capsys, data, name, content):
    path = fresh_copy(pristine, tmp_path)
    folders = sorted({str(Path(f).parent) for f in store_files(pristine)} | {"data/stray", "data/img/c/99"})
    folder = path / data.draw(st.sampled_from(folders))
    if (folder / name).exists():
        return  # a stray file never replaces a real one here: that is garbling, tested above
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    read_or_fail_cleanly(path, reference, capsys)


# ---------------------------------------------------------------------------------------------- metadata
def replace_in_json(file: Path, path: tuple, value) -> None:
    document = json.loads(file.read_text())
    if not path:
        document = value
    else:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    file.write_text(json.dumps(document))


def metadata_files(pristine: Path) -> list[str]:
    return [f for f in store_files(pristine) if f.endswith("zarr.json")]


@FUZZ
@given(data=st.data(), value=st.one_of(st.sampled_from(HOSTILE), JSON_VALUES))
def test_retyped_metadata(pristine, reference, tmp_path, capsys, data, value):
    path = fresh_copy(pristine, tmp_path)
    name = data.draw(st.sampled_from(metadata_files(pristine)))
    where = data.draw(st.sampled_from(list(json_paths(json.loads((pristine / name).read_text())))))
    replace_in_json(path / name, where, value)
    read_or_fail_cleanly(path, reference, capsys)


RECORD_FIELDS = [("episodes", 0, "length"), ("episodes", 2, "length"), ("episodes", 1), ("episodes",), ("keys",),
                 ("keys", "img"), ("keys", "img", "dtype"), ("keys", "state", "shape"), ("keys", "state", "shape", 0),
                 ("keys", "img", "shape", 2), ("attrs",), ("fps",), ("task",), ("version",), ("format",),
                 ("all_chunks_written",), ()]


@pytest.mark.parametrize("field", RECORD_FIELDS, ids=lambda f: ".".join(map(str, f)) or "record")
def test_each_record_field_with_hostile_values(pristine, reference, tmp_path, capsys, field):
    for value in HOSTILE:
        path = fresh_copy(pristine, tmp_path)
        replace_in_json(path / "zarr.json", ("attributes", "robolearn", *field), value)
        read_or_fail_cleanly(path, reference, capsys)


@pytest.mark.parametrize("field", [("shape", 0), ("shape", 1), ("data_type",), ("chunk_grid", "configuration",
                                   "chunk_shape", 0), ("chunk_grid", "configuration", "chunk_shape", 1), ("codecs",),
                                   ("fill_value",), ("node_type",)], ids=lambda f: ".".join(map(str, f)))
def test_each_array_field_with_hostile_values(pristine, reference, tmp_path, capsys, field):
    for value in [*HOSTILE, 5, 1, 100, "int32", "float64", "uint8", []]:
        path = fresh_copy(pristine, tmp_path)
        replace_in_json(path / "data" / "state" / "zarr.json", field, value)
        read_or_fail_cleanly(path, reference, capsys)


def test_the_pristine_store_reads_back(pristine, reference, tmp_path, capsys):
    read_or_fail_cleanly(fresh_copy(pristine, tmp_path), reference, capsys)
    assert EpisodeStore.open(pristine).verify()["keys"]["img"]["chunks"] == sum(LENGTHS)  # one image per chunk


# ---------------------------------------------------------------------------------------------- what fuzzing found
def test_garbled_chunk_is_an_error_not_other_numbers(pristine, tmp_path):
    # zarr's default zstd has no checksum: this flip used to decode to different actions without a word
    path = fresh_copy(pristine, tmp_path)
    meta = json.loads((path / "data" / "action" / "zarr.json").read_text())
    assert {"name": "zstd", "configuration": {"level": 0, "checksum": True}} in meta["codecs"]
    chunk = path / "data" / "action" / "c" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 1
    chunk.write_bytes(bytes(raw))
    store = EpisodeStore.open(path)
    for read in (lambda: store.episode(0), lambda: store.read_rows("action", np.array([1])), lambda: store.stats("action")):
        with pytest.raises(StoreFormatError, match=f"store {path}: key 'action' does not read back .*--verify"):
            read()
    with pytest.raises(StoreFormatError, match=r"key 'action' rows 0-7 \(file data/action/c/0/0\): does not decode"):
        store.verify()


@pytest.mark.parametrize("damage, error", [
    (lambda p: (p / "data" / "state" / "zarr.json").write_text("{"), "data/state/zarr.json is damaged"),
    (lambda p: (p / "data" / "zarr.json").write_bytes(b"\xfb"), "data/zarr.json is damaged"),
    (lambda p: (p / "data" / "zarr.json").unlink(), "data/zarr.json is missing"),
    (lambda p: (p / "data" / "img" / "zarr.json").unlink(), "key 'img' is listed in the record but data/img/zarr.json "
                                                            "is missing"),
    (lambda p: replace_in_json(p / "data" / "state" / "zarr.json", ("chunk_grid", "configuration", "chunk_shape", 0),
                               0), r"key 'state' has chunk shape \(0, 3\)"),
    (lambda p: replace_in_json(p / "zarr.json", ("attributes", "robolearn", "version"), "1"),
     "the record's version is '1', not an integer"),
    (lambda p: replace_in_json(p / "zarr.json", ("attributes", "robolearn", "fps"), "10"),
     "the record's fps is '10', not a positive number or null"),
    (lambda p: replace_in_json(p / "zarr.json", ("attributes", "robolearn", "task"), 3), "the record's task is 3"),
    (lambda p: replace_in_json(p / "zarr.json", ("attributes", "robolearn", "attrs"), [1]),
     "the record's 'attrs' is list, not a mapping"),
])
def test_damaged_metadata_is_named(pristine, tmp_path, damage, error):
    path = fresh_copy(pristine, tmp_path)
    damage(path)
    with pytest.raises(StoreFormatError, match=f"{path}: {error}"):
        EpisodeStore.open(path)
