"""Collecting scripted demonstrations into an EpisodeStore: contents, resuming, refusals, crash safety, CLI."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from robolearn import paths
from robolearn.data import sources
from robolearn.data.store import EpisodeStore
from robolearn.sim.collect import collect, collect_for_task, default_out
from robolearn.task import TaskConfig

OBS_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]


def lift_task(**env_kwargs) -> TaskConfig:
    return TaskConfig(name="lift", env="robolearn.sim.robosuite_env:RobosuiteEnv",
                      env_kwargs={"task": "lift", **env_kwargs}, obs_keys=OBS_KEYS,
                      dataset="lift_scripted.episodes.zarr", dataset_format="robolearn", dataset_url="", score_key="",
                      expert="scripted")


def episodes(store: EpisodeStore) -> list[dict]:
    return [store.episode(i) for i in range(store.n_episodes)]


def test_collect_writes_every_key_and_metadata(tmp_path):
    store = collect(lift_task(), n_episodes=2, out=tmp_path / "lift.zarr", seed_start=10, progress=False)
    assert store.n_episodes == 2 and store.task == "lift" and store.fps == 20.0
    assert set(store.keys) == {*OBS_KEYS, "action", "reward"}
    assert store.attrs["action_mode"] == "delta" and store.attrs["expert"] == "scripted"
    for i, ep in enumerate(episodes(store)):
        meta = store.episode_meta(i)
        assert meta["seed"] == 10 + i and meta["success"] is True and meta["expert"] == "scripted"
        assert meta["return"] == pytest.approx(float(ep["reward"].sum())) and ep["reward"][-1] == 1.0
        assert ep["action"].shape == (meta["length"], 7) and ep["action"].dtype == np.float32
        assert np.all(np.abs(ep["action"]) <= 1.0)
        assert ep["object"].shape == (meta["length"], 10) and ep["robot0_eef_pos"].dtype == np.float32
    # the first stored observation of episode i is the env's reset with seed seed_start + i
    env = lift_task().make_env()
    try:
        first = env.reset(seed=11)
        for key in OBS_KEYS:
            np.testing.assert_array_equal(episodes(store)[1][key][0], first[key])
    finally:
        env.close()


def test_resume_continues_and_refuses_foreign_stores(tmp_path):
    out = tmp_path / "lift.zarr"
    before = episodes(collect(lift_task(), n_episodes=1, out=out, progress=False))
    store = collect(lift_task(), n_episodes=2, out=out, progress=False)
    assert [store.episode_meta(i)["seed"] for i in range(2)] == [0, 1]
    for key, value in before[0].items():
        np.testing.assert_array_equal(store.episode(0)[key], value)
    assert collect(lift_task(), n_episodes=2, out=out, progress=False).n_episodes == 2  # already complete
    other = lift_task()
    other.name = "lift_v2"
    with pytest.raises(ValueError, match="belongs to task 'lift', not 'lift_v2'"):
        collect(other, n_episodes=3, out=out, progress=False)
    with pytest.raises(ValueError, match="action_mode is 'delta', this run's is 'absolute'"):
        collect(lift_task(action_mode="absolute"), n_episodes=3, out=out, progress=False)
    with pytest.raises(ValueError, match="seed_start is 0, this run's is 5"):
        collect(lift_task(), n_episodes=3, out=out, seed_start=5, progress=False)
    with pytest.raises(ValueError, match="unknown expert 'human'"):
        collect(lift_task(), n_episodes=3, out=out, expert="human", progress=False)
    assert EpisodeStore.open(out).n_episodes == 2


def test_failed_episodes_are_kept_and_counted(tmp_path, capsys):
    store = collect(lift_task(max_episode_steps=8), n_episodes=2, out=tmp_path / "short.zarr", progress=True)
    assert store.n_episodes == 2 and list(store.episode_lengths) == [8, 8]
    assert [store.episode_meta(i)["success"] for i in range(2)] == [False, False]
    assert "0 successful, 2 failed" in capsys.readouterr().out


def test_image_observations_are_stored_as_uint8_frames(tmp_path):
    task = lift_task(obs_type="image", image_size=32, max_episode_steps=4)
    store = collect(task, n_episodes=1, out=tmp_path / "images.zarr", progress=False)
    for cam in ("agentview", "robot0_eye_in_hand"):
        frames = store.episode(0)[f"{cam}_image"]
        assert frames.dtype == np.uint8 and frames.shape == (4, 32, 32, 3) and frames.std() > 5
    assert store.attrs["obs_keys"] == sorted([*OBS_KEYS, "agentview_image", "robot0_eye_in_hand_image"])


def test_killed_collection_keeps_committed_episodes_and_resumes(tmp_path):
    out = tmp_path / "killed.zarr"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_collect import lift_task
        from robolearn.sim.collect import collect
        collect(lift_task(), n_episodes=8, out={str(out)!r}, progress=False)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "zarr.json").exists() and EpisodeStore.open(out).n_episodes >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"collector exited early: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    survived = EpisodeStore.open(out)
    k = survived.n_episodes
    assert 2 <= k < 8
    kept = episodes(survived)
    assert [survived.episode_meta(i)["seed"] for i in range(k)] == list(range(k))
    assert all(len(ep["action"]) == survived.episode_meta(i)["length"] for i, ep in enumerate(kept))
    store = collect(lift_task(), n_episodes=8, out=out, progress=False)
    assert store.n_episodes == 8
    assert [store.episode_meta(i)["seed"] for i in range(8)] == list(range(8))
    for i, ep in enumerate(kept):
        for key, value in ep.items():
            np.testing.assert_array_equal(store.episode(i)[key], value)
    assert all(store.episode_meta(i)["success"] for i in range(8))


def test_missing_dataset_is_collected_by_the_task(tmp_path, monkeypatch):
    root = tmp_path / "project"  # empty datasets/ and shared/data/: the project's own stores stay out of sight
    (root / "datasets").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(paths, "project_root", lambda: root)
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    task = lift_task()
    task.expert_episodes = 1
    with pytest.raises(FileNotFoundError, match="robolearn collect --task lift"):
        sources.open_task_store(task, progress=False)  # finding data never runs a simulator by itself
    store = sources.open_task_store(task, progress=False, make_missing=collect_for_task)
    assert store.path == root / "datasets" / "lift_scripted.episodes.zarr" and store.n_episodes == 1
    assert sources.open_task_store(task, progress=False).n_episodes == 1  # found now, not collected again


def test_command_line(tmp_path, monkeypatch, capsys):
    from robolearn.cli import main

    out = tmp_path / "cli.zarr"
    assert main(["collect", "--task", "lift", "--episodes", "1", "--out", str(out), "--seed", "4", "--no-progress"]) == 0
    store = EpisodeStore.open(out)
    assert store.n_episodes == 1 and store.episode_meta(0)["seed"] == 4
    assert main(["collect", "--task", "no_such_task", "--no-progress"]) == 2
    assert "cannot load task 'no_such_task'" in capsys.readouterr().err
    assert main(["collect", "--task", "lift", "--episodes", "2", "--out", str(out), "--action-mode", "absolute",
                 "--no-progress"]) == 2
    assert "action_mode is 'delta'" in capsys.readouterr().err
    monkeypatch.setenv(paths.DATA_ENV_VAR, str(tmp_path))
    assert default_out("lift", "delta", "delta") == tmp_path / "lift_scripted.episodes.zarr"
    assert default_out("lift", "absolute", "delta") == tmp_path / "lift_scripted_absolute.episodes.zarr"
