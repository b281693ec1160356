import json

import numpy as np
import pytest
import torch

import robolearn
from robolearn.data.store import EpisodeStore
from robolearn.train import RunConfig, TrainConfig, Trainer
from tests.helpers import TINY, synthetic_pusht_store


def _run(tmp_path, **train) -> RunConfig:
    policy = {k: v for k, v in TINY.items()}
    settings = dict(steps=120, batch_size=64, lr=3e-3, warmup_steps=5, log_every=10, checkpoint_every=40,
                    final_eval_episodes=0, seed=0, device="cpu")
    return RunConfig(out_dir=str(tmp_path / "run"), policy=policy, train=TrainConfig(**{**settings, **train}))


@pytest.fixture()
def store(tmp_path):
    return synthetic_pusht_store(tmp_path / "data.zarr")


def test_training_lowers_loss_and_writes_a_loadable_checkpoint(tmp_path, store):
    trainer = Trainer(_run(tmp_path), store=store, progress=False)
    assert trainer.fit() is None
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 12 and losses[-1] < 0.6 * losses[0]
    assert (tmp_path / "run" / "tb").is_dir()
    policy = robolearn.load_policy(tmp_path / "run" / "checkpoints" / "last", device="cpu")
    obs = {"state": torch.as_tensor(store.read("state", 0, 2)[None])}
    chunk = policy.act(obs)
    assert chunk.shape == (1, TINY["n_action_steps"], 2) and np.isfinite(chunk).all()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["steps"] == 120 and config["task"]["name"] == "pusht"
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith("# DiffusionPolicy on pusht") and "120 steps in" in report
    assert "6 episodes" in report and "Not evaluated" in report and "![training loss](loss.png)" in report
    assert (tmp_path / "run" / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_the_report_of_an_evaluated_run_has_the_success_interval_and_the_video(tmp_path, store):
    from robolearn.eval.report import write_run_report
    from robolearn.eval.rollout import EvalReport

    (tmp_path / "log.jsonl").write_text('{"step": 50, "loss": 0.5}\n{"step": 100, "loss": 0.2}\n')
    report = EvalReport(task="pusht", n_episodes=50, start_seed=100000, success_rate=0.9, success_low=0.79,
                        success_high=0.96, score_key="max_coverage", score_mean=0.95, score_low=0.93, score_high=0.97,
                        max_reward_mean=0.96, max_reward_low=0.94, max_reward_high=0.98, mean_steps=120.5, wall_s=12.0,
                        inference_ms_per_chunk=8.0, video=str(tmp_path / "eval" / "final.mp4"))
    text = write_run_report(tmp_path, "title", {"checkpoint": "`x`"}, report).read_text()
    assert "| success rate | 0.900 [0.790, 0.960] |" in text and "| mean max_coverage | 0.950 [0.930, 0.970] |" in text
    assert "seeds 100000..100049" in text and "[final.mp4](eval/final.mp4)" in text
    assert "| inference per chunk | 8.0 ms (receding) |" in text


def test_resume_restores_weights_optimizer_and_schedule(tmp_path, store):
    first = Trainer(_run(tmp_path, steps=40), store=store, progress=False)
    first.fit()
    resumed = Trainer(_run(tmp_path, steps=40), store=store, progress=False)
    assert resumed.resume() and resumed.step == 40
    for a, b in zip(first.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(first.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.equal(a, b)
    batch = next(first.windows.batches(32, np.random.default_rng(5)))
    first.train_step(batch)
    resumed.train_step(batch)
    for a, b in zip(first.policy.parameters(), resumed.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-6)  # same Adam moments -> same update


def test_training_refuses_a_store_without_the_task_keys(tmp_path):
    store = EpisodeStore.create(tmp_path / "other.zarr")
    store.append_episode({"joint": np.zeros((20, 3), np.float32), "action": np.zeros((20, 2), np.float32)})
    with pytest.raises(KeyError, match="lacks keys \\['state'\\]"):
        Trainer(_run(tmp_path), store=store, progress=False)


def test_learning_rate_warms_up_then_decays_to_zero(tmp_path, store):
    trainer = Trainer(_run(tmp_path, steps=100, warmup_steps=10, lr=1.0), store=store, progress=False)
    assert trainer.lr_at(0) == pytest.approx(0.1)
    assert trainer.lr_at(9) == pytest.approx(1.0)
    assert trainer.lr_at(55) == pytest.approx(0.5)
    assert trainer.lr_at(100) == pytest.approx(0.0, abs=1e-12)
