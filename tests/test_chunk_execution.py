"""The three ways the loop executes action chunks, checked step by step on a scripted policy."""
import threading
import time

import numpy as np
import pytest
import torch

from robolearn.control.chunking import ChunkExecution, make_runner
from robolearn.control.ensemble import TemporalEnsembleRunner
from robolearn.control.executor import PolicyRunner
from robolearn.control.rtc import RealTimeChunkRunner
from robolearn.policies.base import Policy, PolicyConfig

HORIZON, N_OBS = 8, 2
K = HORIZON - N_OBS + 1  # future actions per chunk: the chunk requested at step r covers steps r .. r+K-1


class StampedPolicy(Policy):
    """Chunk number c holds c*100 + j at chunk index j, so index N_OBS-1 (the request step) reads c*100 + 1.

    An action's value tells which chunk it came from and which step that chunk meant it for."""

    def __init__(self, delay_s: float = 0.0):
        super().__init__(PolicyConfig(obs_shapes={"x": [1]}, action_dim=1, n_obs_steps=N_OBS, horizon=HORIZON,
                                      n_action_steps=3))
        self.calls = 0
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def loss(self, batch):
        return torch.zeros(())

    def sample(self, obs, n=1, generator=None):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        chunk = self.calls * 100 + torch.arange(HORIZON, dtype=torch.float32)
        self.calls += 1
        return chunk.expand(obs["x"].shape[0], n, HORIZON)[..., None].clone()


def drive(runner, steps: int) -> list[float]:
    obs = [{"x": np.zeros(1, np.float32)}]
    runner.reset(obs)
    actions = []
    for _ in range(steps):
        actions.append(float(runner.act()[0, 0]))
        runner.observe(obs)
    return actions


def test_receding_horizon_executes_n_action_steps_then_replans():
    policy = StampedPolicy()
    assert drive(make_runner(policy, ChunkExecution("receding")), 7) == [1, 2, 3, 101, 102, 103, 201]
    assert policy.calls == 3


@pytest.mark.parametrize("decay", [0.0, 0.5, -0.3])
def test_temporal_ensemble_averages_every_live_prediction_with_act_weights(decay):
    policy = StampedPolicy()
    runner = TemporalEnsembleRunner(policy, decay=decay)
    actions = drive(runner, 12)
    assert policy.calls == 12  # one inference per step
    for t, got in enumerate(actions):
        requests = np.arange(max(0, t - K + 1), t + 1)  # chunks still predicting step t, oldest first
        predictions = requests * 100 + 1 + (t - requests)  # chunk s meant s*100 + 1 + (t - s) for step t
        weights = np.exp(-decay * np.arange(len(requests)))
        assert got == pytest.approx(float(weights @ predictions / weights.sum()), rel=1e-6), t


def test_rtc_with_simulated_delay_skips_the_actions_executed_while_the_policy_ran():
    runner = make_runner(StampedPolicy(), ChunkExecution("rtc", execute_steps=3, blend_steps=0, delay_steps=2))
    # step 0 waits for the first chunk; chunk 1 is requested at step 3 and arrives at 5 (2 steps late), so its
    # first two actions (for steps 3 and 4, already executed from chunk 0) are skipped: step 5 gets 103.
    assert drive(runner, 12) == [1, 2, 3, 4, 5, 103, 104, 105, 203, 204, 205, 303]
    assert [(a.requested_step, a.arrived_step, a.delay_steps) for a in runner.arrivals[:3]] == [(0, 0, 0), (3, 5, 2), (6, 8, 2)]
    assert runner.n_starved == 0


def test_rtc_blends_the_overlap_linearly_from_the_old_plan_to_the_new_chunk():
    runner = RealTimeChunkRunner(StampedPolicy(), execute_steps=3, blend_steps=None, delay_steps=2)
    actions = drive(runner, 7)
    # chunk 0 plans steps 0..6 (values 1..7); chunk 1 arrives at 5 and overlaps it on steps 5 and 6:
    # weights on the old plan 2/3 then 1/3.
    assert actions[:5] == [1, 2, 3, 4, 5]
    assert actions[5] == pytest.approx(2 / 3 * 6 + 1 / 3 * 103)
    assert actions[6] == pytest.approx(1 / 3 * 7 + 2 / 3 * 104)
    assert runner.arrivals[1].blended == 2


def test_rtc_rejects_a_delay_the_chunk_cannot_cover():
    with pytest.raises(ValueError, match="runs past the chunk"):
        RealTimeChunkRunner(StampedPolicy(), execute_steps=3, delay_steps=4)
    with pytest.raises(ValueError, match="unknown chunk execution mode"):
        ChunkExecution("async")


def test_rtc_runs_inference_in_a_worker_thread_and_never_blocks_the_loop_on_it():
    policy = StampedPolicy(delay_s=0.08)
    with RealTimeChunkRunner(policy, execute_steps=2, blend_steps=0) as runner:
        obs = [{"x": np.zeros(1, np.float32)}]
        runner.reset(obs)
        first = float(runner.act()[0, 0])  # the first chunk is waited for
        runner.observe(obs)
        runner.act()
        runner.observe(obs)
        t0 = time.perf_counter()
        runner.act()  # requests chunk 1 here and returns an action of chunk 0 at once
        assert time.perf_counter() - t0 < 0.04
        assert runner.in_flight
        assert runner.wait_for_inference(timeout=5.0)
        after = float(runner.act()[0, 0])
    assert first == 1
    assert after >= 100  # the next act picked up chunk 1, its stale first action skipped
    assert runner.arrivals[1].latency_s >= 0.08
    assert any(name.startswith("robolearn-inference") for name in policy.threads)


def test_rtc_counts_starvation_when_inference_is_slower_than_the_plan():
    policy = StampedPolicy(delay_s=0.05)
    with RealTimeChunkRunner(policy, execute_steps=K, blend_steps=0) as runner:
        drive(runner, K + 1)  # the plan runs out at step K while chunk 1 (requested at step K) still computes
    assert runner.n_starved == 1


def test_receding_runner_times_each_inference():
    runner = PolicyRunner(StampedPolicy(delay_s=0.01))
    drive(runner, 4)
    assert len(runner.latencies_s) == 2 and min(runner.latencies_s) >= 0.01


def test_evaluation_with_zero_delay_rtc_reproduces_receding_horizon_exactly():
    from robolearn.eval.rollout import evaluate
    from robolearn.task import TaskConfig
    from tests.helpers import go_to_block_policy

    common = dict(n_episodes=2, n_envs=2, start_seed=3, progress=False)
    receding = evaluate(go_to_block_policy(), TaskConfig(), **common)
    rtc = evaluate(go_to_block_policy(), TaskConfig(), execution=ChunkExecution("rtc", blend_steps=0, delay_steps=0),
                   **common)
    ensemble = evaluate(go_to_block_policy(), TaskConfig(), execution=ChunkExecution("ensemble"), **common)
    assert [e["max_coverage"] for e in rtc.episodes] == pytest.approx([e["max_coverage"] for e in receding.episodes])
    assert [e["steps"] for e in rtc.episodes] == [e["steps"] for e in receding.episodes]
    assert ensemble.n_episodes == 2 and ensemble.inference_ms_per_chunk > 0


def test_every_runner_closes_and_forgets_its_buffers():
    """ChunkRunner.close(): the loop's owner releases a runner the same way whatever its kind."""
    from robolearn.control.executor import ChunkRunner
    from robolearn.control.replay_runner import ReplayRunner

    obs = [{"x": np.zeros(1, np.float32)}]
    for execution in ("receding", "ensemble", "rtc"):
        runner = make_runner(StampedPolicy(), ChunkExecution(execution))
        assert isinstance(runner, ChunkRunner)
        runner.reset(obs)
        assert runner.act().shape == (1, 1)
        runner.close()
        assert runner.history == {}, execution
    replay = ReplayRunner(np.zeros((3, 2), np.float32))
    replay.reset(obs)
    replay.act()
    replay.close()
    with pytest.raises(IndexError, match="only 3 actions"):
        replay.act()
