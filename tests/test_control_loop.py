import numpy as np
import pytest
import torch

from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.eval.rollout import evaluate, format_report
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.sim.pusht import PushTEnv
from robolearn.task import TaskConfig
from tests.helpers import go_to_block_policy


class CountingPolicy(Policy):
    """Chunk k of every env is [k*100 + 0, k*100 + 1, ...]: shows which chunk element each step executes."""

    def __init__(self):
        super().__init__(PolicyConfig(obs_shapes={"x": [1]}, action_dim=1, n_obs_steps=2, horizon=8,
                                      n_action_steps=3))
        self.calls = 0
        self.seen = []

    def loss(self, batch):
        return torch.zeros(())

    def sample(self, obs, n=1, generator=None):
        self.seen.append(obs["x"].clone())
        chunk = self.calls * 100 + torch.arange(8, dtype=torch.float32)
        self.calls += 1
        return chunk.expand(obs["x"].shape[0], n, 8)[..., None]


def test_runner_executes_receding_horizon_and_pads_history_like_training():
    policy = CountingPolicy()
    runner = PolicyRunner(policy)
    runner.reset([{"x": np.array([5.0], np.float32)}, {"x": np.array([7.0], np.float32)}])
    actions = []
    for t in range(7):
        actions.append(runner.act()[:, 0].tolist())
        runner.observe([{"x": np.array([10.0 + t], np.float32)}, {"x": np.array([20.0 + t], np.float32)}])
    # n_obs_steps=2 -> execution starts at chunk index 1; 3 actions per chunk, then replan.
    assert [a[0] for a in actions] == [1, 2, 3, 101, 102, 103, 201]
    assert actions[0][0] == actions[0][1]  # one batched call serves both envs
    assert policy.calls == 3
    # the first inference sees the first observation repeated (edge padding), later ones the true history
    assert policy.seen[0][:, :, 0].tolist() == [[5.0, 5.0], [7.0, 7.0]]
    assert policy.seen[1][:, :, 0].tolist() == [[11.0, 12.0], [21.0, 22.0]]


def test_runner_reports_missing_observation_key():
    runner = PolicyRunner(CountingPolicy())
    with pytest.raises(KeyError, match="'x'"):
        runner.reset([{"y": np.zeros(1, np.float32)}])


def test_loop_results_do_not_depend_on_batching():
    policy = go_to_block_policy()
    seeds = [3, 4, 5]
    batched = ControlLoop([PushTEnv() for _ in seeds], PolicyRunner(policy), max_steps=60).run(seeds)
    single = [ControlLoop([PushTEnv()], PolicyRunner(policy), max_steps=60).run([s])[0] for s in seeds]
    for a, b in zip(batched, single):
        assert a.seed == b.seed and a.steps == b.steps == 60
        assert a.final_info["max_coverage"] == pytest.approx(b.final_info["max_coverage"])
        assert a.total_reward == pytest.approx(b.total_reward)


def test_two_episode_pusht_evaluation_reports_metrics_and_video(tmp_path):
    report = evaluate(go_to_block_policy(), TaskConfig(), n_episodes=2, n_envs=2, start_seed=10,
                      video_path=tmp_path / "eval.mp4", video_episodes=2, progress=False)
    assert report.n_episodes == 2 and [e["seed"] for e in report.episodes] == [10, 11]
    assert all(e["steps"] == 300 or e["success"] for e in report.episodes)
    coverages = [e["max_coverage"] for e in report.episodes]
    assert report.score_mean == pytest.approx(np.mean(coverages))
    assert 0.0 <= report.success_low <= report.success_rate <= report.success_high <= 1.0
    assert report.score_low <= report.score_mean <= report.score_high
    # Push-T's reward is clip(coverage / 0.95, 0, 1), so the max reward is Diffusion Policy's episode score
    for e in report.episodes:
        assert e["max_reward"] == pytest.approx(min(1.0, e["max_coverage"] / 0.95))
    assert (tmp_path / "eval.mp4").stat().st_size > 1000
    again = evaluate(go_to_block_policy(), TaskConfig(), n_episodes=2, n_envs=1, start_seed=10, progress=False)
    assert [e["max_coverage"] for e in again.episodes] == pytest.approx(coverages)
    assert "success rate" in format_report(report)
