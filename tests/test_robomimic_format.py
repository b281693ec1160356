"""robomimic HDF5 <-> EpisodeStore: a file in the official layout imports exactly (numeric demo order, float64
low-dim to float32, uint8 images, masks, model_file, states), import -> export -> import is exact, robomimic's own
SequenceDataset reads our exports with the store's values, and malformed files are refused with clear errors."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from robolearn.data.formats.robomimic import export_robomimic, import_robomimic, unpack_array
from robolearn.data.store import EpisodeStore, StoreFormatError

ENV_ARGS = {"env_name": "Lift", "env_version": "1.5.1", "type": 1,
            "env_kwargs": {"has_renderer": False, "control_freq": 20, "robots": ["Panda"],
                           "controller_configs": {"type": "OSC_POSE", "kp": 150, "output_max": [0.05, 0.5]}}}
DEMOS = {"demo_0": 6, "demo_2": 4, "demo_3": 1, "demo_10": 5, "demo_11": 3}  # gaps, and demo_10 sorts after demo_3
MASKS = {"train": ["demo_10", "demo_0", "demo_11", "demo_2"], "valid": ["demo_3"], "20_percent": ["demo_2"]}
LOW_DIM = {"object": (10,), "robot0_eef_pos": (3,)}
IMAGE = (12, 10, 3)
STATE_DIM = 9


def demo_arrays(rng: np.random.Generator, steps: int) -> dict[str, np.ndarray]:
    """One demo as robomimic writes it: obs of T+1 consecutive states, next_obs = obs shifted by one."""
    trajectory = {k: rng.normal(size=(steps + 1, *shape)) for k, shape in LOW_DIM.items()}  # float64
    trajectory["agentview_image"] = rng.integers(0, 256, size=(steps + 1, *IMAGE), dtype=np.uint8)
    return {
        "actions": rng.uniform(-1, 1, size=(steps, 7)), "rewards": (np.arange(steps) == steps - 1).astype(np.float64),
        "dones": (np.arange(steps) == steps - 1).astype(np.int64), "states": rng.normal(size=(steps, STATE_DIM)),
        **{f"obs/{k}": v[:-1] for k, v in trajectory.items()}, **{f"next_obs/{k}": v[1:] for k, v in trajectory.items()},
    }


def write_robomimic(path: Path, *, demos: dict[str, int] = DEMOS, masks: dict[str, list[str]] | None = MASKS,
                    seed: int = 0, edit=None) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A robomimic file in the documented layout; `edit(name, arrays)` may damage a demo before it is written."""
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for name in reversed(list(demos)):  # creation order must not matter
            arrays = demo_arrays(rng, demos[name])
            if edit is not None:
                edit(name, arrays)
            group = data.create_group(name)
            for key, value in arrays.items():
                group.create_dataset(key, data=value)
            group.attrs["num_samples"] = demos[name]
            group.attrs["model_file"] = f"<mujoco model='{name}'><worldbody/></mujoco>"
            written[name] = arrays
        data.attrs["total"] = sum(demos.values())
        data.attrs["env_args"] = json.dumps(ENV_ARGS, indent=4)
        for key, members in (masks or {}).items():
            f.create_dataset(f"mask/{key}", data=np.array(members, dtype="S"))
    return path, written


def quiet_import(*args, **kwargs) -> EpisodeStore:
    return import_robomimic(*args, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------- import
def test_import_official_layout(tmp_path):
    src, written = write_robomimic(tmp_path / "low_dim.hdf5")
    store = quiet_import(src, tmp_path / "s.zarr")
    order = ["demo_0", "demo_2", "demo_3", "demo_10", "demo_11"]
    assert [store.episode_meta(i)["demo"] for i in range(5)] == order
    assert store.episode_lengths.tolist() == [DEMOS[n] for n in order]
    assert store.task == "Lift" and store.fps == 20.0  # from env_args: env_name, env_kwargs.control_freq
    assert sorted(store.keys) == ["action", "agentview_image", "done", "object", "reward", "robot0_eef_pos", "sim_state"]
    specs = store.specs
    assert specs["agentview_image"].dtype == "uint8" and specs["agentview_image"].shape == IMAGE
    assert specs["sim_state"].dtype == "float64" and specs["done"].dtype == "uint8"
    for key in ("object", "robot0_eef_pos", "action", "reward"):
        assert specs[key].dtype == "float32", key
    for i, name in enumerate(order):
        ep, src_ep = store.episode(i), written[name]
        assert np.array_equal(ep["sim_state"], src_ep["states"])  # float64 MuJoCo states kept bit for bit
        assert np.array_equal(ep["agentview_image"], src_ep["obs/agentview_image"])
        assert np.array_equal(ep["action"], src_ep["actions"].astype(np.float32))
        assert np.array_equal(ep["object"], src_ep["obs/object"].astype(np.float32))
        assert np.abs(ep["object"] - src_ep["obs/object"]).max() <= 6e-8 * np.abs(src_ep["obs/object"]).max()
        assert ep["done"].tolist() == src_ep["dones"].tolist() and ep["reward"].tolist() == src_ep["rewards"].tolist()
        meta = store.episode_meta(i)
        assert meta["model_file"] == f"<mujoco model='{name}'><worldbody/></mujoco>"
        assert meta["masks"] == sorted(m for m, members in MASKS.items() if name in members)
        assert meta["source"] == "robomimic:low_dim.hdf5" and meta["length"] == DEMOS[name]
        final = {k: unpack_array(v) for k, v in meta["final_next_obs"].items()}  # the obs after the last action
        assert np.array_equal(final["object"], src_ep["next_obs/object"][-1].astype(np.float32))
        assert final["agentview_image"].dtype == np.uint8
        assert np.array_equal(final["agentview_image"], src_ep["next_obs/agentview_image"][-1])
    assert store.attrs["env_args"] == ENV_ARGS and store.attrs["masks"] == ["20_percent", "train", "valid"]
    assert store.attrs["format"] == "robomimic" and store.attrs["imported_from"] == str(src.resolve())


def test_keep_dtypes_and_obs_keys(tmp_path):
    src, written = write_robomimic(tmp_path / "f.hdf5")
    store = quiet_import(src, tmp_path / "s.zarr", obs_keys=["object"], keep_dtypes=True, task="lift", fps=10)
    assert sorted(store.keys) == ["action", "done", "object", "reward", "sim_state"]
    assert store.specs["object"].dtype == "float64" and store.specs["done"].dtype == "int64"
    assert np.array_equal(store.episode(3)["object"], written["demo_10"]["obs/object"])  # bit for bit
    assert store.task == "lift" and store.fps == 10
    with pytest.raises(KeyError, match=r"demo_0/obs has no keys \['wrist'\]; it has \['agentview_image', 'object', "):
        quiet_import(src, tmp_path / "t.zarr", obs_keys=["object", "wrist"])


# ---------------------------------------------------------------------------------------------- round trip
def test_import_export_import_is_exact(tmp_path):
    (tmp_path / "a").mkdir()
    src, written = write_robomimic(tmp_path / "a" / "lift.hdf5", masks={**MASKS, "empty_filter": []})
    first = quiet_import(src, tmp_path / "first.zarr")
    (tmp_path / "b").mkdir()
    out = export_robomimic(first, tmp_path / "b" / "lift.hdf5")  # same file name: per-episode `source` matches
    assert out == tmp_path / "b" / "lift.hdf5"
    again = quiet_import(out, tmp_path / "again.zarr")

    assert again.specs == first.specs and np.array_equal(again.episode_ends, first.episode_ends)
    for key in first.keys:
        got, want = again.read(key), first.read(key)
        assert got.dtype == want.dtype and np.array_equal(got, want), key
    for i in range(first.n_episodes):
        assert again.episode_meta(i) == first.episode_meta(i)  # demo names, masks, model_file, final_next_obs
    strip = lambda attrs: {k: v for k, v in attrs.items() if k != "imported_from"}  # noqa: E731
    assert strip(again.attrs) == strip(first.attrs) and again.attrs["env_args"] == ENV_ARGS
    assert (again.task, again.fps) == (first.task, first.fps)

    # the exported file itself: documented layout, original next_obs (float32) and masks, nothing lost
    with h5py.File(out, "r") as f:
        assert sorted(f["data"]) == sorted(DEMOS) and f["data"].attrs["total"] == sum(DEMOS.values())
        assert json.loads(f["data"].attrs["env_args"]) == ENV_ARGS
        for name, src_ep in written.items():
            g = f["data"][name]
            assert g.attrs["num_samples"] == DEMOS[name] and g["dones"].dtype == np.int64
            for key in ("object", "agentview_image"):
                assert np.array_equal(g["next_obs"][key][()], src_ep[f"next_obs/{key}"].astype(g["obs"][key].dtype))
        masks = {k: sorted(v.decode() for v in f["mask"][k][()]) for k in f["mask"]}
        assert masks == {k: sorted(v) for k, v in {**MASKS, "empty_filter": []}.items()}


def test_next_obs_keep_mode_round_trips(tmp_path):
    def unshifted(name, arrays):
        if name == "demo_2":
            arrays["next_obs/object"] = arrays["next_obs/object"] + 1.0  # e.g. a real-robot file
    src, written = write_robomimic(tmp_path / "f.hdf5", edit=unshifted)
    with pytest.raises(StoreFormatError, match=r"demo_2/next_obs/object is not demo_2/obs/object shifted by one step "
                                               r"\(first difference at step 0\); import with next_obs='keep'"):
        quiet_import(src, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
    store = quiet_import(src, tmp_path / "s.zarr", next_obs="keep")
    assert "next_obs.object" in store.keys and "final_next_obs" not in store.episode_meta(1)
    assert np.array_equal(store.episode(1)["next_obs.object"], written["demo_2"]["next_obs/object"].astype(np.float32))
    out = export_robomimic(store, tmp_path / "out.hdf5")
    with h5py.File(out, "r") as f:
        assert "next_obs.object" not in f["data/demo_2/obs"]
        assert np.array_equal(f["data/demo_2/next_obs/object"][()], store.episode(1)["next_obs.object"])


# ---------------------------------------------------------------------------------------------- robomimic reads it
@pytest.fixture(scope="module")
def robomimic_reader():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import robomimic.utils.obs_utils as obs_utils
        from robomimic.utils.dataset import SequenceDataset

        obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["object", "robot0_eef_pos"],
                                                               "rgb": ["agentview_image"]}})

    def open_dataset(path: Path, **kwargs) -> SequenceDataset:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return SequenceDataset(hdf5_path=str(path), obs_keys=("object", "robot0_eef_pos", "agentview_image"),
                                   dataset_keys=("actions", "rewards", "dones"), **kwargs)
    return open_dataset


def native_store(path: Path, n_episodes: int = 12) -> EpisodeStore:
    """A store recorded by robolearn (no robomimic metadata): float32 low-dim, uint8 images, rewards."""
    rng = np.random.default_rng(1)
    store = EpisodeStore.create(path, fps=20, task="lift")
    for i in range(n_episodes):
        steps = 3 + i % 5
        store.append_episode({"object": rng.normal(size=(steps, 10)).astype(np.float32),
                              "robot0_eef_pos": rng.normal(size=(steps, 3)).astype(np.float32),
                              "agentview_image": rng.integers(0, 256, size=(steps, 8, 8, 3), dtype=np.uint8),
                              "action": rng.uniform(-1, 1, size=(steps, 7)).astype(np.float32),
                              "reward": rng.uniform(size=steps).astype(np.float32)}, source="test")
    return store


def window(store: EpisodeStore, key: str, step: int, length: int) -> np.ndarray:
    """Rows step..step+length-1 of the step's episode, the last row repeated past its end (robomimic's padding)."""
    episode = int(np.searchsorted(store.episode_ends, step, side="right"))
    begin, end = store.episode_bounds(episode)
    rows = np.minimum(np.arange(step, step + length), end - 1)
    return store.read(key, begin, end)[rows - begin]


def test_sequence_dataset_reads_export(tmp_path, robomimic_reader):
    store = native_store(tmp_path / "s.zarr")
    out = export_robomimic(store, tmp_path / "export.hdf5")
    ds = robomimic_reader(out, seq_length=3, hdf5_cache_mode="low_dim")
    assert len(ds) == store.n_steps and ds.n_demos == 12
    ends = store.episode_ends
    checks = [0, 1, int(ends[0]) - 1, int(ends[0]), int(ends[4]) - 2, int(ends[4]) - 1, int(ends[4]), store.n_steps - 1]
    for step in checks:
        item = ds[step]
        for key in ("object", "robot0_eef_pos", "agentview_image"):
            assert item["obs"][key].dtype == store.specs[key].dtype, key
            assert np.array_equal(item["obs"][key], window(store, key, step, 3)), (step, key)
        assert np.array_equal(item["actions"], window(store, "action", step, 3)), step
        assert np.array_equal(item["rewards"], window(store, "reward", step, 3)), step
        episode = int(np.searchsorted(ends, step, side="right"))
        last = int(ends[episode]) - 1
        want_done = (np.minimum(np.arange(step, step + 3), last) == last).astype(np.float32)
        assert np.array_equal(item["dones"], want_done), step  # 1 on each episode's last step only
        # next_obs: obs one step later; past the end, the last observation repeats (the store has no later one)
        next_rows = window(store, "object", min(step + 1, last), 3)
        assert np.array_equal(item["next_obs"]["object"], next_rows), step

    # the documented split: every 10th episode (index 9) is valid, the others train
    valid = robomimic_reader(out, filter_by_attribute="valid")
    assert valid.demos == ["demo_9"] and len(valid) == store.episode_lengths[9]
    begin, _ = store.episode_bounds(9)
    assert np.array_equal(valid[0]["obs"]["agentview_image"][0], store.read("agentview_image", begin, begin + 1)[0])
    train = robomimic_reader(out, filter_by_attribute="train")
    assert train.n_demos == 11 and len(train) == store.n_steps - store.episode_lengths[9]


def test_sequence_dataset_reads_recorded_masks_and_final_next_obs(tmp_path, robomimic_reader):
    src, written = write_robomimic(tmp_path / "f.hdf5")
    out = export_robomimic(quiet_import(src, tmp_path / "s.zarr"), tmp_path / "out.hdf5")
    ds = robomimic_reader(out, filter_by_attribute="20_percent", hdf5_cache_mode="all")
    assert ds.demos == ["demo_2"]
    item = ds[len(ds) - 1]  # last step of demo_2: next_obs is the recorded observation after the last action
    assert np.array_equal(item["next_obs"]["agentview_image"][0], written["demo_2"]["next_obs/agentview_image"][-1])
    assert np.array_equal(item["next_obs"]["object"][0], written["demo_2"]["next_obs/object"][-1].astype(np.float32))
    assert robomimic_reader(out, filter_by_attribute="valid").demos == ["demo_3"]


# ---------------------------------------------------------------------------------------------- export behaviour
def test_export_refuses_and_never_leaves_half_files(tmp_path, monkeypatch):
    store = native_store(tmp_path / "s.zarr", n_episodes=3)
    dest = export_robomimic(store, tmp_path / "out.hdf5")
    before = dest.read_bytes()
    with pytest.raises(FileExistsError, match="out.hdf5 exists; pass overwrite=True"):
        export_robomimic(store, dest)
    with pytest.raises(KeyError, match=r"has no action key 'act'; it has \["):
        export_robomimic(store, tmp_path / "x.hdf5", action_key="act")
    with pytest.raises(KeyError, match=r"has no keys \['wrist'\] to export as observations"):
        export_robomimic(store, tmp_path / "x.hdf5", obs_keys=["object", "wrist"])

    calls = []
    real_episode = EpisodeStore.episode

    def crash_on_second(self, index, keys=None):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the file
        return real_episode(self, index, keys)
    monkeypatch.setattr(EpisodeStore, "episode", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        export_robomimic(store, dest, overwrite=True)
    assert dest.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5", "s.zarr"]  # and no temporary file is left


def test_export_obs_keys_env_args_and_done(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", task="pusht")
    store.append_episode({"state": np.ones((4, 5), np.float32), "action": np.zeros((4, 2), np.float32),
                          "done": np.array([0, 1, 0, 1], np.uint8)})
    out = export_robomimic(store, tmp_path / "a.hdf5")
    with h5py.File(out, "r") as f:
        assert list(f["data/demo_0/obs"]) == ["state"]
        assert f["data/demo_0/dones"][()].tolist() == [0, 1, 0, 1]  # the store's own done, not just the last step
        assert f["data/demo_0/rewards"][()].tolist() == [0, 0, 0, 0]
        assert json.loads(f["data"].attrs["env_args"]) == {"env_name": "pusht", "type": None, "env_kwargs": {}}
    out = export_robomimic(store, tmp_path / "b.hdf5", env_args={"env_name": "PushT", "type": 2, "env_kwargs": {}})
    with h5py.File(out, "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["type"] == 2
    with pytest.raises(TypeError, match="env_args must be JSON-serializable"):
        export_robomimic(store, tmp_path / "c.hdf5", env_args={"env_name": object()})
    assert not (tmp_path / "c.hdf5").exists()


# ---------------------------------------------------------------------------------------------- bad input
def test_not_hdf5_and_missing_file(tmp_path):
    bad = tmp_path / "notes.hdf5"
    bad.write_text("not a dataset")
    with pytest.raises(StoreFormatError, match="notes.hdf5 is not an HDF5 file"):
        quiet_import(bad, tmp_path / "s.zarr")
    with pytest.raises(FileNotFoundError, match="no robomimic dataset at .*nothing.hdf5"):
        quiet_import(tmp_path / "nothing.hdf5", tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_no_data_group(tmp_path):
    with h5py.File(tmp_path / "f.hdf5", "w") as f:
        f.create_dataset("actions", data=np.zeros((3, 2)))
    with pytest.raises(StoreFormatError, match="f.hdf5 has no 'data' group, so it is not a robomimic dataset"):
        quiet_import(tmp_path / "f.hdf5", tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update({"obs/object": a["obs/object"][:-1]}),
     r"demo_10/obs/object has 4 steps but demo_10/actions has 5"),
    (lambda a: a.update({"rewards": a["rewards"][:2]}), r"demo_10/rewards has 2 steps but demo_10/actions has 5"),
    (lambda a: a.pop("actions"), r"demo_10 has no 'actions' dataset; every robomimic demo needs one"),
    (lambda a: a.pop("states"), r"demo_10 has datasets \['actions', 'dones', 'rewards'\] but the first demo has "
                                r"\['actions', 'dones', 'rewards', 'states'\]; every demo must hold the same datasets"),
    (lambda a: a.update({"dones": a["dones"] * 2}), r"demo_10/dones holds 2 at step 4; dones must be 0 or 1"),
    (lambda a: a["obs/robot0_eef_pos"].__setitem__((2, 1), 1e39),
     r"demo_10/obs/robot0_eef_pos: value 1e\+39 at step 2 is outside float32's range; import with keep_dtypes=True"),
    (lambda a: a["actions"].__setitem__((3, 0), np.nan), r"demo_10/actions has NaN or infinite values \(first at step 3\)"),
])
def test_bad_demo_is_refused_naming_demo_and_key(tmp_path, edit, message):
    def damage(name, arrays):
        if name == "demo_10":
            edit(arrays)
    src, _ = write_robomimic(tmp_path / "f.hdf5", edit=damage)
    with pytest.raises((StoreFormatError, ValueError), match=message):
        quiet_import(src, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()  # the half-imported store is removed


def test_bad_structure(tmp_path):
    src, _ = write_robomimic(tmp_path / "f.hdf5", masks={"train": ["demo_0", "demo_7"]})
    with pytest.raises(StoreFormatError, match=r"mask/train lists \['demo_7'\], which are not groups under data/"):
        quiet_import(src, tmp_path / "s.zarr")
    with h5py.File(src, "a") as f:
        del f["mask"]
        f["data"].attrs["num_samples"] = 1
        f["data/demo_3"].attrs["num_samples"] = 2
    with pytest.raises(StoreFormatError, match=r"demo_3 has num_samples = 2 but demo_3/actions has 1 steps"):
        quiet_import(src, tmp_path / "s.zarr")
    with h5py.File(src, "a") as f:
        f["data"].create_group("episode_1")
    with pytest.raises(StoreFormatError, match=r"data/episode_1 is not a demo group"):
        quiet_import(src, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_existing_store_is_kept(tmp_path):
    src, _ = write_robomimic(tmp_path / "f.hdf5")
    quiet_import(src, tmp_path / "s.zarr")
    with pytest.raises(FileExistsError, match="already exists"):
        quiet_import(src, tmp_path / "s.zarr")
    assert EpisodeStore.open(tmp_path / "s.zarr").n_episodes == 5
    assert quiet_import(src, tmp_path / "s.zarr", overwrite=True).n_episodes == 5


def test_newer_datasets_and_attributes_round_trip(tmp_path):
    """Per-step datasets of newer robomimic / MimicGen files (actions_abs, action_dict/, states/ parts) become keys
    and go back to their paths; extra attributes survive; what cannot be imported (arrays without one row per step,
    a `total` that is not the sum of the demos) is reported, not silently used."""
    def newer(name, arrays):
        steps = len(arrays["actions"])
        arrays["actions_abs"] = arrays["actions"] + 5.0
        arrays["action_dict/abs_pos"] = arrays["actions"][:, :3] + 5.0
        arrays["src_demo_inds"] = np.arange(2)  # per demo, not per step (MimicGen)
        if name == "demo_1":
            arrays["datagen_info/eef_pose"] = np.zeros((steps, 4, 4))  # only in one demo
    src, written = write_robomimic(tmp_path / "f.hdf5", demos={"demo_1": 3, "demo_4": 2}, masks=None, edit=newer)
    with h5py.File(src, "a") as f:
        f["data"].attrs["repository_version"] = "0.3.0"
        f["data"].attrs["total"] = 6
        f["data/demo_4"].attrs["operator"] = 7
        f["data/demo_4"].attrs["scores"] = np.array([0.5, 1.0])
    with pytest.warns(UserWarning) as record:
        store = quiet_import(src, tmp_path / "s.zarr")
    messages = " | ".join(str(w.message) for w in record)
    assert "data.attrs['total'] is 6 but the demos hold 5 steps" in messages
    assert "['datagen_info/eef_pose', 'src_demo_inds'] do not have one row per step in every demo; not imported" in messages
    assert {"actions_abs", "action_dict.abs_pos"} <= set(store.keys) and "src_demo_inds" not in store.keys
    assert store.specs["actions_abs"].dtype == "float32"
    assert np.array_equal(store.episode(1)["action_dict.abs_pos"], written["demo_4"]["action_dict/abs_pos"].astype(np.float32))
    assert store.attrs["extra_datasets"] == {"action_dict.abs_pos": "action_dict/abs_pos", "actions_abs": "actions_abs"}
    assert store.attrs["data_attrs"] == {"repository_version": "0.3.0"} and store.attrs["masks"] == []
    assert store.episode_meta(1)["attrs"] == {"operator": 7, "scores": [0.5, 1.0]} and "attrs" not in store.episode_meta(0)

    out = export_robomimic(store, tmp_path / "out.hdf5")
    with h5py.File(out, "r") as f:
        assert sorted(f["data/demo_4/obs"]) == ["agentview_image", "object", "robot0_eef_pos"]  # extras are not obs
        assert np.array_equal(f["data/demo_4/actions_abs"][()], store.episode(1)["actions_abs"])
        assert np.array_equal(f["data/demo_4/action_dict/abs_pos"][()], store.episode(1)["action_dict.abs_pos"])
        assert f["data"].attrs["repository_version"] == "0.3.0" and f["data"].attrs["total"] == 5
        assert f["data/demo_4"].attrs["operator"] == 7 and f["data/demo_4"].attrs["scores"].tolist() == [0.5, 1.0]
        # no masks were recorded: train/valid follow the documented split (2 episodes: none is valid)
        assert [m.decode() for m in f["mask/train"][()]] == ["demo_1", "demo_4"] and len(f["mask/valid"]) == 0
    again = quiet_import(out, tmp_path / "again.zarr")
    assert again.specs == store.specs and again.attrs["extra_datasets"] == store.attrs["extra_datasets"]
    for key in store.keys:
        assert np.array_equal(again.read(key), store.read(key)), key
    assert again.episode_meta(1)["attrs"] == store.episode_meta(1)["attrs"]
    assert again.attrs["data_attrs"] == store.attrs["data_attrs"]


def test_states_as_a_group(tmp_path):
    """Non-robosuite envs in newer robomimic write states as a group of parts; they stay float64, named sim_state.*"""
    def parts(name, arrays):
        states = arrays.pop("states")
        arrays["states/qpos"], arrays["states/qvel"] = states[:, :4], states[:, 4:]
    src, written = write_robomimic(tmp_path / "f.hdf5", edit=parts)
    store = quiet_import(src, tmp_path / "s.zarr")
    assert "sim_state" not in store.keys and store.specs["sim_state.qvel"].dtype == "float64"
    assert np.array_equal(store.episode(3)["sim_state.qpos"], written["demo_10"]["states/qpos"])
    out = export_robomimic(store, tmp_path / "out.hdf5")
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["data/demo_10/states/qvel"][()], written["demo_10"]["states/qvel"])
        assert "sim_state.qvel" not in f["data/demo_10/obs"]


def test_empty_states_are_skipped(tmp_path):
    """robomimic's docs allow an empty `states` dataset for non-robosuite envs: it is no data, so no key."""
    src, written = write_robomimic(tmp_path / "f.hdf5", edit=lambda name, a: a.update({"states": np.zeros((0,))}))
    store = quiet_import(src, tmp_path / "s.zarr")
    assert "sim_state" not in store.keys and store.n_steps == sum(DEMOS.values())
    assert np.array_equal(store.episode(0)["action"], written["demo_0"]["actions"].astype(np.float32))


# ---------------------------------------------------------------------------------------------- checked before writing
@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update({"obs/object": np.array([b"x"] * 5, dtype="S1")}),
     r"f.hdf5: demo_10/obs/object has dtype \|S1; only numeric datasets"),
    (lambda a: a.update({"actions": a["actions"].astype(np.float32).view(np.uint32).astype("S12")}),
     r"f.hdf5: demo_10/actions has dtype \|S12; only numeric datasets"),
    (lambda a: a.update({"actions": a["actions"][:, :6]}),
     r"f.hdf5: demo_10/actions has per-step shape \(6,\) dtype float32 but demo_0/actions has \(7,\) float32; every "
     r"demo must store a dataset the same way"),
    (lambda a: a.update({"obs/agentview_image": a["obs/agentview_image"].astype(np.int16)}),
     r"demo_10/obs/agentview_image has per-step shape \(12, 10, 3\) dtype int16 but demo_0/obs/agentview_image has "
     r"\(12, 10, 3\) uint8"),
])
def test_dtypes_and_shapes_are_checked_for_every_demo_before_writing(tmp_path, edit, message):
    def damage(name, arrays):
        if name == "demo_10":
            edit(arrays)
    src, _ = write_robomimic(tmp_path / "f.hdf5", edit=damage)
    with pytest.raises(StoreFormatError, match=message):
        quiet_import(src, tmp_path / "s.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.hdf5"]  # refused before any store was begun


def test_float64_and_float32_demos_import_alike(tmp_path):
    """Both become float32 in the store, so a file mixing them is consistent (kept apart with keep_dtypes)."""
    def mix(name, arrays):
        if name == "demo_10":
            arrays["actions"] = arrays["actions"].astype(np.float32)
    src, written = write_robomimic(tmp_path / "f.hdf5", edit=mix)
    assert quiet_import(src, tmp_path / "s.zarr").specs["action"].dtype == "float32"
    with pytest.raises(StoreFormatError, match=r"demo_10/actions has per-step shape \(7,\) dtype float32 but "
                                               r"demo_0/actions has \(7,\) float64"):
        quiet_import(src, tmp_path / "t.zarr", keep_dtypes=True)


def test_undocumented_string_datasets_are_left_out_with_a_warning(tmp_path):
    def label(name, arrays):
        arrays["language"] = np.array([b"pick the cube"] * len(arrays["actions"]), dtype="S13")
    src, _ = write_robomimic(tmp_path / "f.hdf5", edit=label)
    with pytest.warns(UserWarning, match=r"f.hdf5: \['language'\] are not numeric \(a store holds numbers only\); not imported"):
        store = quiet_import(src, tmp_path / "s.zarr")
    assert "language" not in store.keys and store.n_episodes == 5
