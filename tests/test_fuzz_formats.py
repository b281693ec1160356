"""Fuzzing convert: diffusion_policy zarr and robomimic HDF5 sources that are truncated, garbled, missing files or
retyped import (Python API and `robolearn convert`) either as the source reads or with a one-line error; the source
never changes, and the destination is either absent (no temporary sibling left) or a complete store that passes
verify(). Exports of damaged stores follow the same rule, and overlapping paths are refused with nothing changed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robolearn.cli import expected_errors, main
from robolearn.data.formats.diffusion_policy import import_diffusion_policy
from robolearn.data.formats.robomimic import export_robomimic, import_robomimic
from robolearn.data.store import EpisodeStore, StoreFormatError
from tests.fuzzing import json_paths

FUZZ = settings(max_examples=int(os.environ.get("ROBOLEARN_FUZZ_EXAMPLES", 25)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same cases on every CI run
HOSTILE = [-1, 0, 2.5, 10**12, "7", "", None, True, [3], {"a": 1}, "<U4", "|O", "<f8", "<i4", ">f4"]
ENDS = [5, 9, 14]
FLIPS = st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6)


class Quiet(dict):
    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing case: keep it short
        return f"<{len(self)} reference arrays>"


# ---------------------------------------------------------------------------------------------- sources
def write_dp(path: Path) -> Path:
    """A zarr v2 replay buffer as diffusion_policy writes it, with a float 0..255 image key (imported as uint8)."""
    rng = np.random.default_rng(0)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    data = group.require_group("data")
    data.create_array("state", shape=(14, 3), dtype="f4", chunks=(4, 3))[:] = rng.normal(size=(14, 3))
    data.create_array("img", shape=(14, 8, 8, 3), dtype="f4", chunks=(5, 8, 8, 3))[:] = rng.integers(0, 256, (14, 8, 8, 3))
    group.require_group("meta").create_array("episode_ends", shape=(3,), dtype="i8", chunks=(3,))[:] = ENDS
    return path


def write_store(path: Path) -> Path:
    rng = np.random.default_rng(1)
    with EpisodeStore.build(path, fps=20.0, task="Lift") as store:
        for n in (4, 6, 3):
            store.append_episode({"action": rng.normal(size=(n, 2)).astype(np.float32),
                                  "eef": rng.normal(size=(n, 3)).astype(np.float32),
                                  "agentview_image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)})
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    store = write_store(folder / "native.zarr")
    return {"dp": write_dp(folder / "src.zarr"), "rm": export_robomimic(store, folder / "src.hdf5"), "store": store}


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory) -> dict[str, Quiet]:
    out = tmp_path_factory.mktemp("reference")
    dp = import_diffusion_policy(sources["dp"], out / "dp.zarr", progress=False)
    rm = import_robomimic(sources["rm"], out / "rm.zarr", progress=False)
    return {name: Quiet({k: s.read(k) for k in s.keys} | {"ends": s.episode_ends}) for name, s in (("dp", dp),
                                                                                                     ("rm", rm))}


def tree_digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def fresh_copy(src: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, folder / src.name)
    return folder / src.name


def message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def leftovers(dst: Path) -> list[str]:
    return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}."))


def contents(store: EpisodeStore) -> dict[str, np.ndarray]:
    return {k: store.read(k) for k in store.keys} | {"ends": store.episode_ends}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(x.dtype == b[k].dtype and np.array_equal(x, b[k]) for k, x in a.items())


def convert_or_fail_cleanly(kind: str, src: Path, tmp_path: Path, capsys, expected, may_change: bool) -> None:
    """`expected`: the unmutated import. With `may_change` (bytes garbled in a format without checksums: zarr v2
    blosc chunks, HDF5 datasets, array metadata) the source may read as other numbers, even differently from one
    read to the next (blosc decodes parts of a damaged chunk), so a successful import need only be a complete,
    verified store."""
    before = tree_digest(src)
    dst = tmp_path / "out" / "store.zarr"
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir()
    importer = import_diffusion_policy if kind == "dp" else import_robomimic
    try:
        result = contents(importer(src, dst, progress=False))
    except expected_errors() as err:
        result = None
        assert message(err).strip(), f"{type(err).__name__} without a message"
        assert str(src) in message(err) or src.name in message(err), f"the error does not name the source: {err}"
        assert not dst.exists() and leftovers(dst) == [], "a failed import left files behind"
    if result is not None:
        EpisodeStore.open(dst).verify()
        assert leftovers(dst) == []
        if not may_change:
            assert same(result, expected), "the import differs from the unmutated source's"
    capsys.readouterr()
    code = main(["convert", str(src), str(dst.with_name("cli.zarr")), "--from", "diffusion_policy" if kind == "dp"
                 else "robomimic"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line and not line.startswith("import ")]
    if may_change:  # a damaged chunk may decode differently this time: only the CLI's own contract holds
        result = {} if code == 0 else None
    assert code == (0 if result is not None else 2) and len(lines) == (0 if result is not None else 1), lines
    if result is not None:
        assert may_change or same(contents(EpisodeStore.open(dst.with_name("cli.zarr"))), result)
        EpisodeStore.open(dst.with_name("cli.zarr")).verify()
    else:  # besides the progress bar ("import NAME: ...")
        assert lines[0].startswith("robolearn convert: error: ") and not dst.with_name("cli.zarr").exists()
        assert leftovers(dst.with_name("cli.zarr")) == []
    assert tree_digest(src) == before, "the import changed its source"


def files_of(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.stat().st_size)


# ---------------------------------------------------------------------------------------------- diffusion_policy
@FUZZ
@given(data=st.data(), how=st.sampled_from(["truncate", "garble", "delete"]), fraction=st.floats(0, 1, exclude_max=True),
       flips=FLIPS)
def test_damaged_replay_buffer_files(sources, reference, tmp_path, capsys, data, how, fraction, flips):
    src = fresh_copy(sources["dp"], tmp_path)
    name = data.draw(st.sampled_from(files_of(sources["dp"])))
    raw = bytearray((src / name).read_bytes())
    if how == "delete":
        (src / name).unlink()
    elif how == "truncate":
        (src / name).write_bytes(raw[:int(len(raw) * fraction)])
    else:
        for where, xor in flips:
            raw[int(where * len(raw))] ^= xor
        (src / name).write_bytes(bytes(raw))
    # a garbled chunk or .zarray may decode to other numbers: zarr v2 chunks carry no checksum to tell
    convert_or_fail_cleanly("dp", src, tmp_path, capsys, reference["dp"], may_change=how != "delete")


@FUZZ
@given(data=st.data(), value=st.sampled_from(HOSTILE))
def test_retyped_replay_buffer_metadata(sources, reference, tmp_path, capsys, data, value):
    src = fresh_copy(sources["dp"], tmp_path)
    name = data.draw(st.sampled_from([f for f in files_of(sources["dp"]) if Path(f).name.startswith(".z")]))
    document = json.loads((src / name).read_text())
    where = data.draw(st.sampled_from(list(json_paths(document))[1:] or [()]))
    target = document
    for key in where[:-1]:
        target = target[key]
    if where:
        target[where[-1]] = value
    else:
        document = value
    (src / name).write_text(json.dumps(document))
    convert_or_fail_cleanly("dp", src, tmp_path, capsys, reference["dp"], may_change=True)


@pytest.mark.parametrize("ends", [[5.0, 9.0, 14.0], ["5", "9", "14"], [-5, 9, 14], [5, 9, 2**40], [9, 5, 14],
                                  [[5, 9, 14]], [], [5, 9, 13], [5, 9, 15], [0, 9, 14], [True, True, True]],
                         ids=str)
def test_retyped_episode_ends(sources, reference, tmp_path, capsys, ends):
    src = fresh_copy(sources["dp"], tmp_path)
    value = np.asarray(ends)
    meta = zarr.open_group(src / "meta", mode="r+", zarr_format=2)
    del meta["episode_ends"]
    meta.create_array("episode_ends", shape=value.shape, dtype=value.dtype)[...] = value
    convert_or_fail_cleanly("dp", src, tmp_path, capsys, reference["dp"], may_change=False)


@pytest.mark.parametrize("key, value", [("state", np.full((14, 3), "ab")), ("state", np.zeros((14, 3), bool)),
                                        ("state", np.zeros((13, 3), np.float32)), ("state", np.float32(1.0)),
                                        ("img", np.full((14, 8, 8, 3), 0.5, np.float32)),
                                        ("img", np.full((14, 8, 8, 3), 300, np.float32))], ids=str)
def test_retyped_replay_buffer_arrays(sources, reference, tmp_path, capsys, key, value):
    src = fresh_copy(sources["dp"], tmp_path)
    data = zarr.open_group(src / "data", mode="r+", zarr_format=2)
    del data[key]
    data.create_array(key, shape=value.shape, dtype=value.dtype)[...] = value
    convert_or_fail_cleanly("dp", src, tmp_path, capsys, reference["dp"], may_change=True)


# ---------------------------------------------------------------------------------------------- robomimic
@FUZZ
@given(how=st.sampled_from(["truncate", "garble"]), fraction=st.floats(0, 1, exclude_max=True), flips=FLIPS)
def test_damaged_robomimic_file(sources, reference, tmp_path, capsys, how, fraction, flips):
    src = fresh_copy(sources["rm"], tmp_path)
    raw = bytearray(src.read_bytes())
    if how == "truncate":
        src.write_bytes(raw[:int(len(raw) * fraction)])
    else:
        for where, xor in flips:
            raw[int(where * len(raw))] ^= xor
        src.write_bytes(bytes(raw))
    # HDF5 datasets carry no checksum here either: garbled data bytes import as what they read
    convert_or_fail_cleanly("rm", src, tmp_path, capsys, reference["rm"], may_change=how == "garble")


def replace(file: h5py.File, name: str, value) -> None:
    del file[name]
    if value is not None:
        file[name] = value


RM_EDITS = {
    "no actions": lambda f: replace(f, "data/demo_1/actions", None),
    "no obs key": lambda f: replace(f, "data/demo_0/obs/eef", None),
    "no next_obs key": lambda f: replace(f, "data/demo_2/next_obs/eef", None),
    "no demo": lambda f: replace(f, "data/demo_1", None),
    "no data": lambda f: replace(f, "data", None),
    "no mask": lambda f: replace(f, "mask/train", None),
    "string actions": lambda f: replace(f, "data/demo_0/actions", np.full((4, 2), "x", "S1")),
    "scalar actions": lambda f: replace(f, "data/demo_0/actions", 1.0),
    "short obs": lambda f: replace(f, "data/demo_0/obs/eef", np.zeros((3, 3), np.float32)),
    "wide obs": lambda f: replace(f, "data/demo_1/obs/eef", np.zeros((6, 4), np.float32)),
    "float64 obs": lambda f: replace(f, "data/demo_0/obs/eef", f["data/demo_0/obs/eef"][()].astype(np.float64)),
    "half dones": lambda f: replace(f, "data/demo_0/dones", np.full(4, 0.5)),
    "nan rewards": lambda f: replace(f, "data/demo_0/rewards", np.full(4, np.nan)),
    "2-D rewards": lambda f: replace(f, "data/demo_0/rewards", np.zeros((4, 2))),
    "shifted next_obs": lambda f: replace(f, "data/demo_0/next_obs/eef", np.zeros((4, 3), np.float32)),
    "obs group": lambda f: (replace(f, "data/demo_0/obs/eef", None), f.create_group("data/demo_0/obs/eef")),
    "demo as dataset": lambda f: replace(f, "data/demo_2", np.zeros(3)),
    "stray group": lambda f: f.create_group("data/notes"),
    "mask of ints": lambda f: replace(f, "mask/valid", np.arange(3)),
    "mask of unknown demo": lambda f: replace(f, "mask/valid", np.array([b"demo_9"])),
}
RM_ATTRS = {"num_samples": ["x", -1, 2.5, np.arange(3), b"\xff"], "model_file": [np.arange(3), b"\xff\xfe", 3],
            "env_args": ["{", "[]", 3, b"\xff", np.arange(2)], "total": ["x", -1, np.arange(2), 2.5]}


@pytest.mark.parametrize("edit", RM_EDITS)
def test_edited_robomimic_file(sources, reference, tmp_path, capsys, edit):
    src = fresh_copy(sources["rm"], tmp_path)
    with h5py.File(src, "r+") as f:
        RM_EDITS[edit](f)
    convert_or_fail_cleanly("rm", src, tmp_path, capsys, reference["rm"], may_change=False)


@pytest.mark.parametrize("attr", RM_ATTRS)
def test_retyped_robomimic_attributes(sources, reference, tmp_path, capsys, attr):
    for value in RM_ATTRS[attr]:
        src = fresh_copy(sources["rm"], tmp_path)
        with h5py.File(src, "r+") as f:
            (f["data/demo_1"] if attr in ("num_samples", "model_file") else f["data"]).attrs[attr] = value
        convert_or_fail_cleanly("rm", src, tmp_path, capsys, reference["rm"], may_change=False)


# ---------------------------------------------------------------------------------------------- exports
@FUZZ
@given(data=st.data(), to=st.sampled_from(["diffusion_policy", "robomimic"]),
       how=st.sampled_from(["truncate", "garble", "delete"]), flips=FLIPS)
def test_exports_of_a_damaged_store(sources, tmp_path, capsys, data, to, how, flips):
    src = fresh_copy(sources["store"], tmp_path)
    name = data.draw(st.sampled_from(files_of(sources["store"])))
    raw = bytearray((src / name).read_bytes())
    if how == "delete":
        (src / name).unlink()
    elif how == "truncate":
        (src / name).write_bytes(raw[:len(raw) // 2])
    else:
        for where, xor in flips:
            raw[int(where * len(raw))] ^= xor
        (src / name).write_bytes(bytes(raw))
    before = tree_digest(src)
    dst = tmp_path / "out" / ("export.zarr" if to == "diffusion_policy" else "export.hdf5")
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir()
    capsys.readouterr()
    code = main(["convert", str(src), str(dst), "--to", to])
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    if code == 0:  # the store read whole (its chunks carry checksums): the export holds what it reads
        back = (import_diffusion_policy if to == "diffusion_policy" else import_robomimic)(
            dst, tmp_path / "out" / "back.zarr", progress=False)
        store = EpisodeStore.open(src)
        assert np.array_equal(back.episode_ends, store.episode_ends)
        assert all(np.array_equal(back.read(k), store.read(k)) for k in store.keys)
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("robolearn convert: error: "), lines
        assert not dst.exists() and leftovers(dst) == []
    assert tree_digest(src) == before, "the export changed its store"


# ---------------------------------------------------------------------------------------------- overlapping paths
DIRECTIONS = {"dp": ["--from", "diffusion_policy"], "rm": ["--from", "robomimic"],
              "store-dp": ["--to", "diffusion_policy"], "store-rm": ["--to", "robomimic"]}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout", ["same", "dotdot", "symlink", "inside", "parent", "symlinked parent"])
def test_overlapping_paths_are_refused_with_nothing_changed(sources, tmp_path, capsys, direction, layout):
    src = fresh_copy(sources[direction.split("-")[0]], tmp_path)
    top = src.parent
    os.symlink(src, top / "link")
    os.symlink(top, tmp_path / "toplink")
    (top / "sub").mkdir()
    dst = {"same": src, "dotdot": top / "sub" / ".." / src.name, "symlink": top / "link",
           "inside": src / "data" / "out.zarr", "parent": top, "symlinked parent": tmp_path / "toplink"}[layout]
    if layout == "inside" and src.is_file():
        dst = top / "link" / "out.zarr"  # a path "inside" a file: refused all the same
    before = {str(p): p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))}
    capsys.readouterr()
    assert main(["convert", str(src), str(dst), "--overwrite", *DIRECTIONS[direction]]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("robolearn convert: error: destination "), lines
    assert "choose a destination outside it" in lines[0], lines
    assert {str(p): p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))} == before


# ---------------------------------------------------------------------------------------------- what fuzzing found
def test_damaged_sources_are_named(sources, tmp_path):
    src = fresh_copy(sources["rm"], tmp_path)
    src.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(StoreFormatError, match=f"{src} could not be read as a robomimic HDF5 file \\(OSError: .*truncated"):
        import_robomimic(src, tmp_path / "a.zarr", progress=False)
    for attr, value, error in [("num_samples", "x", r"demo_1.attrs\['num_samples'\] is 'x'; it must be a non-negative"),
                               ("total", 2.5, r"data.attrs\['total'\] is 2.5; it must be a non-negative")]:
        src = fresh_copy(sources["rm"], tmp_path)
        with h5py.File(src, "r+") as f:
            (f["data/demo_1"] if attr == "num_samples" else f["data"]).attrs[attr] = value
        with pytest.raises(StoreFormatError, match=f"{src}: {error}"):
            import_robomimic(src, tmp_path / "a.zarr", progress=False)
    src = fresh_copy(sources["dp"], tmp_path)
    (src / "data" / "img" / ".zarray").unlink()  # used to import without the img key
    with pytest.raises(StoreFormatError, match=f"{src}: data/img is not a readable zarr array"):
        import_diffusion_policy(src, tmp_path / "a.zarr", progress=False)
    src = fresh_copy(sources["dp"], tmp_path)
    (src / "data" / "state" / ".zarray").write_text("{")
    with pytest.raises(StoreFormatError, match=f"{src} could not be read as a diffusion_policy replay buffer"):
        import_diffusion_policy(src, tmp_path / "a.zarr", progress=False)
    assert not (tmp_path / "a.zarr").exists()


def test_per_step_shape_with_a_zero_size_is_refused(sources, tmp_path):
    with pytest.raises(ValueError, match=r"key 'empty' has per-step shape \(0, 2\), which holds no values"), \
            EpisodeStore.build(tmp_path / "s.zarr") as store:  # it used to build a store that could not be opened
        store.append_episode({"empty": np.zeros((3, 0, 2), np.float32), "action": np.ones((3, 2), np.float32)})
    assert not (tmp_path / "s.zarr").exists()
    src = fresh_copy(sources["dp"], tmp_path)
    replace_in = json.loads((src / "data" / "img" / ".zarray").read_text())
    (src / "data" / "img" / ".zarray").write_text(json.dumps({**replace_in, "shape": [14, 0, 8, 3]}))
    with pytest.raises(StoreFormatError, match=r"data/img has per-step shape \(0, 8, 3\), which holds no values"):
        import_diffusion_policy(src, tmp_path / "a.zarr", progress=False)
