"""Every import and export refuses a destination that overlaps its source (same path, inside it, containing it,
through a symlink or `..`), and with overwrite replaces only an output of its own format; the source is never
changed, and whatever was refused is left as it was."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_convert_kill import native_store, tree_hash, write_dp, write_rm

from robolearn.data.formats.diffusion_policy import export_diffusion_policy, import_diffusion_policy
from robolearn.data.formats.robomimic import export_robomimic, import_robomimic


def run(op: str, src: Path, dst: Path, overwrite: bool = True):
    if op == "import_dp":
        return import_diffusion_policy(src, dst, overwrite=overwrite, progress=False)
    if op == "import_rm":
        return import_robomimic(src, dst, overwrite=overwrite, progress=False)
    return (export_diffusion_policy if op == "export_dp" else export_robomimic)(src, dst, overwrite=overwrite)


def source(op: str, tmp: Path) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    if op == "import_dp":
        return write_dp(folder / "src.zarr", n_episodes=3)
    if op == "import_rm":
        return write_rm(folder / "src.hdf5", n_demos=2)
    return native_store(folder / "src.zarr", n_episodes=2).path


OPS = ["import_dp", "import_rm", "export_dp", "export_rm"]


@pytest.mark.parametrize("op", OPS)
def test_destination_overlapping_the_source_is_refused(tmp_path, op):
    src = source(op, tmp_path)
    before = tree_hash(src)
    (tmp_path / "other").mkdir()
    os.symlink(src, tmp_path / "link")
    cases = [(src, "is the source itself"), (tmp_path / "other" / ".." / "data" / src.name, "is the source itself"),
             (tmp_path / "link", "is the source itself"), (src.parent, "contains the source"),
             (tmp_path, "contains the source")]
    if src.is_dir():
        cases.append((src / "data" / "inside.zarr", "lies inside the source"))
    for dst in cases:
        with pytest.raises(ValueError) as info:
            run(op, src, dst[0])
        message = str(info.value)
        assert f"destination {dst[0]} {dst[1]} {src}" in message, message
        assert "choose a destination outside it" in message
        assert tree_hash(src) == before, dst
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]  # nothing written beside it either


@pytest.mark.parametrize("op", OPS)
def test_existing_destination_needs_overwrite(tmp_path, op):
    src = source(op, tmp_path)
    dst = tmp_path / ("out.hdf5" if op == "export_rm" else "out.zarr")
    run(op, src, dst)
    before = tree_hash(dst)
    with pytest.raises(FileExistsError, match=f"{dst.name} (already )?exists; .*pass overwrite=True"):
        run(op, src, dst, overwrite=False)
    assert tree_hash(dst) == before


def user_things(tmp: Path) -> dict[str, Path]:
    """Destinations that are not outputs of any format here: a folder of notes, a text file, a dp zarr, a store."""
    notes = tmp / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    (tmp / "notes.txt").write_text("keep me too")
    return {"folder": notes, "file": tmp / "notes.txt", "replay buffer": write_dp(tmp / "buffer.zarr", n_episodes=2),
            "store": native_store(tmp / "store.zarr", n_episodes=1).path}


@pytest.mark.parametrize("op,owned,kind", [
    ("import_dp", "store", "EpisodeStore"), ("import_rm", "store", "EpisodeStore"),
    ("export_dp", "replay buffer", r"diffusion_policy replay buffer \(a zarr with data/ and meta/episode_ends\)"),
    ("export_rm", None, "HDF5 file"),
])
def test_overwrite_replaces_only_its_own_format(tmp_path, op, owned, kind):
    src = source(op, tmp_path)
    for name, dst in user_things(tmp_path).items():
        if name == owned:
            continue
        before = tree_hash(dst)
        with pytest.raises((ValueError, FileExistsError), match=f"{dst} exists and is not an? {kind}; refusing to replace it"):
            run(op, src, dst)
        assert tree_hash(dst) == before, name
    # its own format is replaced, with the new episodes (the source has 3 buffer episodes, 2 demos, 2 episodes)
    if op.startswith("import"):
        assert run(op, src, tmp_path / "store.zarr").n_episodes == (3 if op == "import_dp" else 2)
    elif op == "export_dp":
        assert import_diffusion_policy(run(op, src, tmp_path / "buffer.zarr"), tmp_path / "back.zarr",
                                       progress=False).n_episodes == 2
    else:
        hdf5 = write_rm(tmp_path / "old.hdf5", n_demos=5)
        assert import_robomimic(run(op, src, hdf5), tmp_path / "back.zarr", progress=False).n_episodes == 2


def test_replaced_outputs_hold_the_new_data(tmp_path):
    src = write_dp(tmp_path / "src.zarr", n_episodes=3)
    dst = tmp_path / "out.zarr"
    import_diffusion_policy(write_dp(tmp_path / "old.zarr", n_episodes=7), dst, progress=False)
    store = import_diffusion_policy(src, dst, overwrite=True, progress=False)
    assert store.path == dst and store.n_episodes == 3
    assert np.array_equal(store.read("state"), np.arange(45, dtype=np.float32).reshape(15, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr", "out.zarr", "src.zarr"]


def test_empty_folder_is_not_something_to_keep(tmp_path):
    (tmp_path / "out.zarr").mkdir()
    store = import_diffusion_policy(write_dp(tmp_path / "src.zarr", n_episodes=2), tmp_path / "out.zarr",
                                    progress=False)
    assert store.n_episodes == 2
