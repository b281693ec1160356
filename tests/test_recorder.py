"""The recorder commits each episode whole or not at all: on a normal end, Ctrl-C, an exception or SIGKILL."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop, EndEpisode
from robolearn.control.recorder import EpisodeRecorder
from robolearn.data.store import EpisodeStore
from robolearn.sim.pusht import PushTEnv
from tests.helpers import go_to_block_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recording_loop(store: EpisodeStore, n_envs: int = 1, max_steps: int = 20, **kwargs) -> ControlLoop:
    recorder = EpisodeRecorder(store, obs_keys=["state"], **kwargs)
    return ControlLoop([PushTEnv() for _ in range(n_envs)], PolicyRunner(go_to_block_policy()), max_steps=max_steps,
                       recorder=recorder)


def test_each_episode_is_committed_with_its_steps_actions_and_timestamps(tmp_path):
    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    results = recording_loop(store, n_envs=2).run([3, 4], meta={"operator": "test"})
    assert store.n_episodes == 2
    for res in results:
        ep = store.episode(res.episode_index)
        meta = store.episode_meta(res.episode_index)
        assert len(ep["action"]) == len(ep["state"]) == len(ep["reward"]) == res.steps == 20
        assert meta["seed"] == res.seed and meta["operator"] == "test" and meta["reason"] == "max_steps"
        assert meta["interrupted"] is None and meta["success"] == res.success
        assert np.all(np.diff(ep["timestamp"]) > 0)  # the observation time of every step
        assert ep["reward"].max() == pytest.approx(res.max_reward)
    # the first recorded observation is the reset state of that seed
    assert np.allclose(store.episode(0)["state"][0], PushTEnv().reset(seed=3)["state"])


def test_ctrl_c_mid_episode_saves_it_whole_and_marks_it_interrupted(tmp_path):
    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    loop = recording_loop(store, max_steps=50)
    loop.run([0])  # a complete episode first

    def ctrl_c(event):
        if event.step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run([1], on_step=ctrl_c)
    reopened = EpisodeStore.open(tmp_path / "rec.zarr")
    assert reopened.n_episodes == 2 and reopened.episode_lengths.tolist() == [50, 7]
    assert reopened.episode_meta(0)["interrupted"] is None
    assert reopened.episode_meta(1)["interrupted"] == "KeyboardInterrupt"
    assert reopened.episode_meta(1)["reason"] == "interrupted"


def test_interrupted_episodes_can_be_discarded_instead(tmp_path):
    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    loop = recording_loop(store, max_steps=50, on_interrupt="discard")

    def crash(event):
        if event.step == 3:
            raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        loop.run([1], on_step=crash)
    assert EpisodeStore.open(tmp_path / "rec.zarr").n_episodes == 0
    assert not loop.recorder.open_envs


def test_an_operator_end_can_save_or_drop_the_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    loop = recording_loop(store, max_steps=50)
    kept = loop.run([5], on_step=lambda e: EndEpisode("stop") if e.step == 9 else None)[0]
    dropped = loop.run([6], on_step=lambda e: EndEpisode("rerecord", save=False) if e.step == 2 else None)[0]
    assert (kept.end_reason, kept.steps, kept.episode_index) == ("stop", 10, 0)
    assert (dropped.end_reason, dropped.episode_index) == ("rerecord", None)
    assert store.n_episodes == 1 and store.episode_meta(0)["reason"] == "stop"


def test_recorder_refuses_a_store_with_other_keys_or_read_only(tmp_path):
    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    recording_loop(store).run([0])
    with pytest.raises(KeyError, match="holds keys"):
        EpisodeRecorder(store, obs_keys=["image"])
    with pytest.raises(PermissionError, match="read-only"):
        EpisodeRecorder(EpisodeStore.open(tmp_path / "rec.zarr"))


SESSION = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C as in a terminal: a shell that starts jobs in the background (CI scripts) hands them SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from robolearn.control.executor import PolicyRunner
    from robolearn.control.loop import ControlLoop
    from robolearn.control.recorder import EpisodeRecorder
    from robolearn.data.store import EpisodeStore
    from robolearn.sim.pusht import PushTEnv
    from tests.helpers import go_to_block_policy

    store = EpisodeStore.open(sys.argv[1], mode="a")
    loop = ControlLoop([PushTEnv()], PolicyRunner(go_to_block_policy()), max_steps=40,
                       recorder=EpisodeRecorder(store, obs_keys=["state"]))
    seed = 0
    while True:  # record until killed; slow steps so the signal lands mid-episode
        loop.run([seed], on_step=lambda e: time.sleep(0.01))
        print("committed", seed, flush=True)
        seed += 1
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_recording_process_leaves_only_whole_episodes(tmp_path, sig):
    path = tmp_path / "rec.zarr"
    EpisodeStore.create(path, fps=10)
    proc = subprocess.Popen([sys.executable, "-c", SESSION, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().startswith("committed 0")
        time.sleep(0.15)  # well inside episode 1 (40 steps of >= 10 ms)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    store = EpisodeStore.open(path)
    lengths = store.episode_lengths.tolist()
    assert lengths[0] == 40 and all(n > 0 for n in lengths)
    for i, n in enumerate(lengths):
        ep = store.episode(i)
        assert all(len(v) == n for v in ep.values())  # every column of every episode is whole
        assert np.isfinite(ep["state"]).all()
    if sig == signal.SIGINT:  # Ctrl-C: the episode in progress is saved and marked
        assert len(lengths) == 2 and lengths[1] < 40
        assert store.episode_meta(1)["interrupted"] == "KeyboardInterrupt"
    else:  # SIGKILL: nothing runs, the half-recorded episode never reaches the store
        assert all(store.episode_meta(i)["interrupted"] is None for i in range(len(lengths)))


class ScriptedEvents:
    """An EventSource that answers its n-th poll with script[n] (then nothing)."""

    def __init__(self, script):
        self.script, self.polls = list(script), 0

    def poll(self):
        self.polls += 1
        return self.script.pop(0) if self.script else []


def test_session_records_stops_rerecords_with_the_same_seed_and_quits(tmp_path):
    from robolearn.control.session import record_session
    from robolearn.control.session_keys import SessionEvent as E

    store = EpisodeStore.create(tmp_path / "rec.zarr", fps=10)
    loop = recording_loop(store, max_steps=30)
    # episode A: start, stop after 3 polls (3 steps); episode B: start, re-record after 2 steps; then start again
    # (same seed), runs its 30 steps; episode C: start, quit on the 5th step (saved).
    script = [[E.START], [], [], [E.STOP],
              [E.START], [], [E.RERECORD],
              [E.START], *[[]] * 30,
              [E.START], [], [], [], [], [E.QUIT]]
    summary = record_session(loop, ScriptedEvents(script), seeds=range(100, 110), idle_poll_s=0, message=lambda m: None)
    assert summary.quit and summary.rerecorded == 1 and summary.saved == [0, 1, 2]
    assert [r.end_reason for r in summary.results] == ["stop", "rerecord", "max_steps", "quit"]
    assert [store.episode_meta(i)["seed"] for i in range(3)] == [100, 101, 102]  # the re-recorded seed is reused
    assert store.episode_lengths.tolist() == [3, 30, 5]
