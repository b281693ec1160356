"""Regression baseline: MSE training reduces the loss, `sample` repeats its single answer, checkpoints, errors."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.regression import RegressionConfig, RegressionPolicy
from tests.linear_task import ACTION_DIM, HORIZON, N_OBS, STATE_DIM, fitted, synthetic_batch, train_losses


def tiny_config(**overrides) -> RegressionConfig:
    kwargs = {"hidden": [64, 64], "horizon": HORIZON, "n_obs_steps": N_OBS, "n_action_steps": 4,
              "obs_shapes": {"state": [STATE_DIM]}, "action_dim": ACTION_DIM}
    kwargs.update(overrides)
    return RegressionConfig(**kwargs)


def tiny_policy(**overrides) -> RegressionPolicy:
    torch.manual_seed(0)
    return fitted(RegressionPolicy(tiny_config(**overrides)))


def test_config_round_trips_through_json_and_yaml():
    from robolearn.cli import compose

    cfg = tiny_config(hidden=(32, 16))
    again = RegressionConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.hidden == [32, 16]
    raw = compose("train", ["policy=regression"])
    assert raw["policy_class"] == "regression"
    fields = {k: v for k, v in raw["policy"].items() if k != "name"}
    assert set(fields) == {f.name for f in dataclasses.fields(RegressionConfig)} - {"obs_shapes", "image_keys",
                                                                                    "action_dim"}
    assert RegressionConfig(obs_shapes={"state": [5]}, **fields).hidden == [512, 512]


@pytest.mark.parametrize("activation", ["mish", "relu"])
def test_loss_falls_on_learnable_data(activation):
    policy = tiny_policy(activation=activation)
    losses = train_losses(policy, synthetic_batch(64, seed=1), steps=80, lr=3e-3)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses


def test_sample_repeats_one_deterministic_chunk():
    policy = tiny_policy()
    obs = synthetic_batch(3, seed=2)["obs"]
    out = policy.sample(obs, n=4, generator=torch.Generator().manual_seed(7))
    assert out.shape == (3, 4, HORIZON, ACTION_DIM) and torch.isfinite(out).all()
    assert torch.equal(out, out[:, :1].expand_as(out))  # every candidate is the same chunk
    assert torch.equal(out, policy.sample(obs, n=4, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(out[:, 0], policy.sample(obs)[:, 0])
    with torch.no_grad():
        cond = policy.encode_obs(obs)
        expected = policy.normalizer.unnormalize("action", policy.predict_normalized(cond))
    assert torch.allclose(out[:, 0], expected)
    assert policy.nfe() == 1


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    policy = tiny_policy()
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", device="cpu")
    assert isinstance(loaded, RegressionPolicy) and loaded.config == policy.config
    obs = synthetic_batch(3, seed=3)["obs"]
    assert torch.equal(policy.sample(obs, n=2), loaded.sample(obs, n=2))


def test_act_returns_executed_slice():
    policy = tiny_policy()
    obs = {"state": synthetic_batch(2, seed=4)["obs"]["state"].numpy()}
    assert policy.act(obs).shape == (2, 4, ACTION_DIM)


def test_clear_errors_for_bad_inputs():
    policy = tiny_policy()
    data = synthetic_batch(4, seed=5)
    with pytest.raises(ValueError, match="action must be"):
        policy.loss({"obs": data["obs"], "action": data["action"][:, :5]})
    with pytest.raises(ValueError, match="hidden"):
        tiny_config(hidden=[])
    with pytest.raises(ValueError, match="activation"):
        tiny_config(activation="tanh")
