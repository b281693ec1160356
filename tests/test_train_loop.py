"""TrainLoop: the one optimization loop every model trains through (policies, critics, world models)."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from robolearn.train.loop import Schedule, TrainLoop, random_batches

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


def regression_loop(tmp_path=None, steps=60, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    loop = TrainLoop(model, optimizer, Schedule(0.05, steps, warmup_steps=5), what="regression", seed=1,
                     log_every=10, out_dir=tmp_path, **kwargs)
    return model, loop


def batches(loop):
    def draw(rows):
        x = torch.as_tensor(np.random.default_rng(int(rows[0])).normal(size=(16, 3)), dtype=torch.float32)
        return x, x @ TRUE_W.T
    return random_batches(draw, 1000, 16, loop.rng)


def loss_fn(model):
    return lambda batch: (nn.functional.mse_loss(model(batch[0]), batch[1]), {"mse": 0.0})


def test_loss_falls_and_every_log_record_reaches_history_and_the_run_folder(tmp_path):
    history: list[dict[str, float]] = []
    model, loop = regression_loop(tmp_path, history=history)
    loop.run(batches(loop), loss_fn(model))
    assert loop.step == 60 and loop.done
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40, 50, 60] and all("mse" in r and "lr" in r for r in lines)


def test_hooks_run_on_their_periods():
    model, loop = regression_loop(steps=25)
    seen: list[int] = []
    loop.run(batches(loop), loss_fn(model), every=[(10, lambda: seen.append(loop.step)), (0, lambda: seen.append(-1))])
    assert seen == [10, 20]


def test_a_resumed_loop_continues_exactly_like_an_uninterrupted_one(tmp_path):
    straight_model, straight = regression_loop(steps=40, ema=True)
    straight.run(batches(straight), loss_fn(straight_model))

    class Killed(Exception):
        """The process dying right after its checkpoint."""

    def checkpoint_then_die():
        first.save_state(tmp_path / "state.safetensors")
        raise Killed

    first_model, first = regression_loop(steps=40, ema=True)
    with pytest.raises(Killed):
        first.run(batches(first), loss_fn(first_model), every=[(20, checkpoint_then_die)])
    torch.manual_seed(123)  # a fresh process: nothing but the file carries the state
    resumed_model, resumed = regression_loop(steps=40, ema=True)
    resumed.load_state(tmp_path / "state.safetensors")
    assert resumed.step == 20
    resumed.run(batches(resumed), loss_fn(resumed_model))
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(straight.ema.model.parameters(), resumed.ema.model.parameters()):
        torch.testing.assert_close(a, b)


def test_a_non_finite_loss_stops_with_the_step_and_the_hint():
    model, loop = regression_loop()
    with pytest.raises(FloatingPointError, match="regression loss became nan at step 0; lower the learning rate"):
        loop.run(batches(loop), lambda batch: model(batch[0]).sum() * float("nan"))


def test_schedule_warms_up_then_decays_or_stays_constant():
    cosine = Schedule(1.0, 100, warmup_steps=10)
    assert cosine.at(0) == pytest.approx(0.1) and cosine.at(9) == pytest.approx(1.0)
    assert cosine.at(55) == pytest.approx(0.5) and cosine.at(100) == pytest.approx(0.0, abs=1e-12)
    assert Schedule(0.3, 100, decay="constant").at(99) == 0.3
    with pytest.raises(ValueError, match="'cosine' or 'constant'"):
        Schedule(1.0, 10, decay="linear")


def test_a_finite_source_that_runs_dry_is_an_error_not_a_hang():
    model, loop = regression_loop(steps=100)
    with pytest.raises(ValueError, match="the batches ran out at step 3"):
        loop.run(iter(list(itertools.islice(batches(loop), 3))), loss_fn(model))


def test_a_time_budget_ends_training_early():
    model, loop = regression_loop(steps=10_000, time_budget_s=1e-9)
    loop.run(batches(loop), loss_fn(model))
    assert loop.step == 1 and loop.done and not math.isinf(loop.time_budget_s)
