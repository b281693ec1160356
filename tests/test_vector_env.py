"""SubprocVectorEnv against the real Push-T simulator: the same results as in-process envs, and a worker that is
killed, hangs or whose env raises ends the affected episodes with info["worker_error"] instead of hanging."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from robolearn.data.store import EpisodeStore
from robolearn.env import SerialVectorEnv
from robolearn.eval.rollout import evaluate, format_report
from robolearn.sim.pusht import PushTEnv
from robolearn.sim.vector_env import SubprocVectorEnv
from robolearn.task import TaskConfig
from tests.helpers import GoToBlockPolicy, go_to_block_policy

PUSHT = "pusht"
IMAGE_KWARGS = {"obs_type": "image", "render_size": 96}


@pytest.fixture(scope="module")
def vec():
    v = SubprocVectorEnv(PUSHT, IMAGE_KWARGS, num_envs=3, num_workers=2, timeout_s=10)
    yield v
    v.close()  # the last test closed it already: closing twice is fine


@pytest.fixture(scope="module")
def serial():
    s = SerialVectorEnv([PushTEnv(**IMAGE_KWARGS) for _ in range(3)])
    yield s
    s.close()


def actions(k, indices=(0, 1, 2)):
    return {i: np.array([150.0 + 10 * k + 40 * i, 300.0 - 6 * k]) for i in indices}


def assert_same_obs(a, b):
    assert set(a) == set(b) and a.timestamp == b.timestamp
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def assert_same_result(a, b):
    assert_same_obs(a[0], b[0])
    assert a[1:] == b[1:]  # reward, done and the whole info dict, exactly


def alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_steps_render_and_partial_batches_equal_serial_envs(vec, serial):
    assert vec.spec == serial.spec and vec.num_envs == 3 and len(set(vec.worker_pids)) == 2
    for a, b in zip(vec.reset([7, 8, 9]), serial.reset([7, 8, 9])):
        assert_same_obs(a, b)
    for k in range(15):
        got, want = vec.step(actions(k)), serial.step(actions(k))
        assert list(got) == [0, 1, 2]
        for i in range(3):
            assert_same_result(got[i], want[i])
    for a, b in zip(vec.render([2, 0]), serial.render([2, 0])):
        assert a.shape == (96, 96, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    # Only the envs still running are stepped; a partial batch resets the first len(seeds) envs.
    got = vec.step(actions(15, [1]))
    assert list(got) == [1]
    assert_same_result(got[1], serial.step(actions(15, [1]))[1])
    first = vec.reset([11, 12])
    assert len(first) == 2
    for a, b in zip(first, serial.reset([11, 12])):
        assert_same_obs(a, b)
    with pytest.raises(ValueError, match="4 seeds for 3 envs"):
        vec.reset([1, 2, 3, 4])
    with pytest.raises(IndexError, match="env index 5 out of range"):
        vec.step({5: np.zeros(2)})
    assert vec.restarts == 0


def test_env_whose_step_raises_reports_its_traceback_and_is_rebuilt(vec, serial):
    vec.reset([1, 2, 3])
    serial.reset([1, 2, 3])
    restarts, pids = vec.restarts, vec.worker_pids
    bad = actions(0)
    bad[0] = np.zeros(3)  # Push-T raises on a wrong action shape
    got = vec.step(bad)
    obs, reward, done, info = got[0]
    assert done and reward == 0.0 and info["success"] is False
    assert "Traceback (most recent call last)" in info["worker_error"]
    assert "Push-T action must have shape (2,)" in info["worker_error"]
    want = serial.step(actions(0, [1, 2]))
    for i in (1, 2):  # its neighbours, one in the same worker, carry on untouched
        assert_same_result(got[i], want[i])
    assert vec.restarts == restarts + 1 and vec.worker_pids == pids
    assert vec.step(actions(1, [0]))[0][2] is True  # stays done until the next reset
    for a, b in zip(vec.reset([4, 5, 6]), serial.reset([4, 5, 6])):
        assert_same_obs(a, b)
    got, want = vec.step(actions(2)), serial.step(actions(2))
    for i in range(3):
        assert_same_result(got[i], want[i])


def test_workers_ignore_sigint(vec):
    vec.reset([1, 2, 3])
    pids = vec.worker_pids
    for pid in pids:
        os.kill(pid, signal.SIGINT)  # what Ctrl-C sends the whole process group
    time.sleep(0.3)
    got = vec.step(actions(0))
    assert all("worker_error" not in info for _, _, _, info in got.values())
    assert vec.worker_pids == pids and all(alive(pid) for pid in pids)


def test_worker_killed_mid_episode_is_reported_restarted_and_used_at_next_reset(vec, serial):
    vec.reset([1, 2, 3])
    serial.reset([1, 2, 3])
    for k in range(5):
        vec.step(actions(k))
        serial.step(actions(k))
    restarts, killed = vec.restarts, vec.worker_pids[0]
    os.kill(killed, signal.SIGKILL)  # worker 0 hosts envs 0 and 2
    got = vec.step(actions(5))
    for i in (0, 2):
        _, _, done, info = got[i]
        assert done and info["success"] is False
        assert "SIGKILL" in info["worker_error"] and f"pid {killed}" in info["worker_error"]
    assert_same_result(got[1], serial.step(actions(5, [1]))[1])
    assert vec.restarts == restarts + 1 and vec.worker_pids[0] != killed
    assert vec.step(actions(6, [0, 2]))[2][2] is True  # the lost envs stay done, no hang, no second restart
    assert vec.restarts == restarts + 1
    for a, b in zip(vec.reset([21, 22, 23]), serial.reset([21, 22, 23])):
        assert_same_obs(a, b)
    got, want = vec.step(actions(0)), serial.step(actions(0))
    for i in range(3):
        assert_same_result(got[i], want[i])
    assert not alive(killed)


def test_hung_worker_times_out_and_is_replaced(vec, serial):
    vec.reset([1, 2, 3])
    serial.reset([1, 2, 3])
    restarts, hung = vec.restarts, vec.worker_pids[1]
    vec.timeout_s = 1.0
    try:
        os.kill(hung, signal.SIGSTOP)  # alive but never answers
        t0 = time.monotonic()
        got = vec.step(actions(0))
        assert time.monotonic() - t0 < 5.0
    finally:
        vec.timeout_s = 10.0
    _, _, done, info = got[1]
    assert done and info["success"] is False
    assert "did not answer within timeout_s=1 s (hung)" in info["worker_error"]
    want = serial.step(actions(0, [0, 2]))
    for i in (0, 2):
        assert_same_result(got[i], want[i])
    assert vec.restarts == restarts + 1 and vec.worker_pids[1] != hung
    for a, b in zip(vec.reset([5, 6, 7]), serial.reset([5, 6, 7])):
        assert_same_obs(a, b)
    assert not alive(hung)


def test_close_is_idempotent_and_stops_every_worker(vec):
    pids = vec.worker_pids
    vec.close()
    vec.close()
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        vec.reset([1])


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown env 'os:system'; known: "):
        SubprocVectorEnv("os:system", {}, num_envs=2)
    with pytest.raises(ValueError, match=r"num_workers must be between 1 and num_envs \(2\), got 3"):
        SubprocVectorEnv(PUSHT, {}, num_envs=2, num_workers=3)
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        SubprocVectorEnv(PUSHT, {}, num_envs=0)
    with pytest.raises(TypeError, match="picklable"):
        SubprocVectorEnv(PUSHT, {"obs_type": lambda: "state"}, num_envs=1)
    with pytest.raises(ValueError, match="n_workers must be >= 0"):
        evaluate(go_to_block_policy(), TaskConfig(), n_episodes=1, n_workers=-1, progress=False)
    # An env that cannot be built surfaces the worker's traceback, and no worker is left behind.
    before = {p.pid for p in mp.active_children()}
    with pytest.raises(RuntimeError, match="(?s)could not build.*unknown Push-T obs_type 'bogus'"):
        SubprocVectorEnv(PUSHT, {"obs_type": "bogus"}, num_envs=1)
    assert {p.pid for p in mp.active_children()} <= before


def test_parent_killed_leaves_no_orphan_workers():
    script = textwrap.dedent(f"""
        import os, signal
        from robolearn.sim.vector_env import SubprocVectorEnv
        v = SubprocVectorEnv({PUSHT!r}, {{}}, num_envs=1, num_workers=1)
        print(*v.worker_pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 1
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids), "workers outlived their killed parent"


@pytest.fixture(scope="module")
def serial_report():
    return evaluate(go_to_block_policy(), TaskConfig(), n_episodes=3, n_envs=1, start_seed=40, progress=False)


def test_evaluation_with_workers_equals_serial_evaluation(serial_report):
    serial = serial_report
    workers = evaluate(go_to_block_policy(), TaskConfig(), n_episodes=3, n_envs=2, n_workers=1, start_seed=40,
                       progress=False)
    assert workers.episodes == serial.episodes  # whole episodes, every float exactly
    assert (workers.success_rate, workers.score_mean, workers.mean_steps) == \
        (serial.success_rate, serial.score_mean, serial.mean_steps)
    assert workers.worker_restarts == workers.rerun_episodes == 0
    assert [e["seed"] for e in workers.episodes] == [40, 41, 42]


class KillsWorkerZero(GoToBlockPolicy):
    """Go to the block, and on the third chunk SIGKILL the new worker 0 (a crash in the middle of episodes)."""

    def __init__(self, known_pids):
        super().__init__(go_to_block_policy().config)
        self.known_pids, self.calls, self.killed = known_pids, 0, None

    def sample(self, obs, n=1, generator=None):
        self.calls += 1
        if self.calls == 3:
            worker = next(p for p in mp.active_children()
                          if p.pid not in self.known_pids and p.name == "robolearn-env-worker-0")
            self.killed = worker.pid
            os.kill(worker.pid, signal.SIGKILL)
        return super().sample(obs, n, generator)


def test_evaluation_reruns_episodes_of_a_crashed_worker_from_their_seeds(serial_report, tmp_path):
    serial = serial_report
    assert all(e["steps"] > 8 for e in serial.episodes)  # the crash at the third chunk lands mid-episode
    policy = KillsWorkerZero({p.pid for p in mp.active_children()})
    store = EpisodeStore.create(tmp_path / "rollouts.zarr", fps=10, task="pusht")
    report = evaluate(policy, TaskConfig(), n_episodes=3, n_envs=3, n_workers=2, start_seed=40, progress=False,
                      record=store)
    assert policy.killed is not None
    assert report.worker_restarts == 1 and report.rerun_episodes == 2  # worker 0 hosted episodes 0 and 2
    assert report.episodes == serial.episodes
    assert "1 restart(s), 2 episode(s) re-run" in format_report(report)
    # the recording holds each episode once, whole: the two cut short by the crash were dropped and re-recorded
    recorded = {store.episode_meta(i)["seed"]: int(n) for i, n in enumerate(store.episode_lengths)}
    assert recorded == {e["seed"]: e["steps"] for e in serial.episodes}
