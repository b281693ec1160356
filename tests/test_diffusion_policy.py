"""Diffusion Policy head: the UNet's shapes, that training reduces the loss, deterministic sampling, EMA,
network-evaluation counts and the errors users see for malformed inputs."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from robolearn.nn.ema import EMA
from robolearn.nn.unet1d import ConditionalUnet1D
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from tests.linear_task import ACTION_DIM, HORIZON, N_OBS, STATE_DIM, fitted, synthetic_batch, train_losses


def tiny_config(**overrides) -> DiffusionConfig:
    kwargs = {"down_dims": [32, 64], "diffusion_step_embed_dim": 32, "horizon": HORIZON, "n_obs_steps": N_OBS,
              "n_action_steps": 4, "obs_shapes": {"state": [STATE_DIM]}, "action_dim": ACTION_DIM}
    kwargs.update(overrides)
    return DiffusionConfig(**kwargs)


def tiny_policy(**overrides) -> DiffusionPolicy:
    torch.manual_seed(0)
    return fitted(DiffusionPolicy(tiny_config(**overrides)))


@pytest.mark.parametrize("down_dims,horizon", [((32, 64), 8), ((16, 32, 64), 16), ((16,), 5)])
def test_unet_output_matches_input_shape(down_dims, horizon):
    net = ConditionalUnet1D(action_dim=3, global_cond_dim=7, down_dims=down_dims, n_groups=8,
                            diffusion_step_embed_dim=32)
    x = torch.randn(4, horizon, 3)
    assert net(x, torch.tensor([0, 5, 10, 99]), torch.randn(4, 7)).shape == x.shape
    assert net(x, 3, torch.randn(4, 7)).shape == x.shape  # a scalar step broadcasts over the batch


def test_unet_rejects_indivisible_horizon():
    net = ConditionalUnet1D(action_dim=2, global_cond_dim=0, down_dims=(16, 32), diffusion_step_embed_dim=32)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 7, 2), 0)


def test_config_round_trips_through_json():
    cfg = tiny_config(down_dims=(32, 64))
    again = DiffusionConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.down_dims == [32, 64]


def test_loss_falls_on_learnable_data():
    policy = tiny_policy()
    losses = train_losses(policy, synthetic_batch(64, seed=1), steps=60, lr=1e-3)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_sample_shape_and_determinism(scheduler):
    policy = tiny_policy(num_train_timesteps=20, num_inference_steps=5)
    obs = synthetic_batch(3, seed=2)["obs"]
    out1 = policy.sample(obs, n=4, generator=torch.Generator().manual_seed(7), scheduler=scheduler)
    out2 = policy.sample(obs, n=4, generator=torch.Generator().manual_seed(7), scheduler=scheduler)
    out3 = policy.sample(obs, n=4, generator=torch.Generator().manual_seed(8), scheduler=scheduler)
    assert out1.shape == (3, 4, HORIZON, ACTION_DIM)
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    # Drawing the initial noise outside and passing it in reproduces sample's own draw (DDPM then keeps
    # drawing step noise from the same generator).
    g = torch.Generator().manual_seed(7)
    noise = policy.initial_noise(3, 4, g)
    assert torch.equal(policy.sample(obs, n=4, generator=g, scheduler=scheduler, noise=noise), out1)


def test_act_returns_executed_slice():
    policy = tiny_policy(num_inference_steps=3)
    obs = {"state": synthetic_batch(2, seed=3)["obs"]["state"].numpy()}
    assert policy.act(obs).shape == (2, 4, ACTION_DIM)


def test_ema_tracks_model_and_round_trips():
    policy = tiny_policy()
    ema = EMA(policy)
    assert ema.decay(0) == 0.0 and 0.0 < ema.decay(10) < ema.decay(1000) <= 0.9999
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    data = synthetic_batch(16, seed=4)
    start = [p.detach().clone() for p in ema.model.parameters()]
    ema.update(policy)  # step 0: decay 0 copies the model
    for _ in range(5):
        loss = policy.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(policy)
    model_params = list(policy.parameters())
    ema_params = list(ema.model.parameters())
    before = sum((m - s).pow(2).sum() for m, s in zip(model_params, start))
    after = sum((m - e).pow(2).sum() for m, e in zip(model_params, ema_params))
    assert after < before  # the average moved toward the trained weights
    assert not any(p.requires_grad for p in ema_params)
    assert ema.step == 6

    state = ema.state_dict()
    assert state["step"].dtype == torch.int64 and int(state["step"]) == 6
    other = EMA(tiny_policy())
    other.load_state_dict(state)
    assert other.step == 6
    for a, b in zip(other.model.state_dict().values(), ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_nfe_counts_network_evaluations():
    policy = tiny_policy()
    assert policy.nfe() == 10
    assert policy.nfe("ddim") == 10
    assert policy.nfe("ddpm") == 100
    assert policy.nfe("ddim", num_inference_steps=4) == 4


def test_clear_errors_for_bad_inputs():
    policy = tiny_policy()
    data = synthetic_batch(4, seed=5)
    with pytest.raises(ValueError, match="observation 'state' must be"):
        policy.loss({"obs": {"state": data["obs"]["state"][:, :1]}, "action": data["action"]})
    with pytest.raises(ValueError, match="observation 'state' must be"):
        policy.loss({"obs": {"state": data["obs"]["state"][..., :3]}, "action": data["action"]})
    with pytest.raises(ValueError, match="action must be"):
        policy.loss({"obs": data["obs"], "action": data["action"][:, :5]})
    with pytest.raises(KeyError, match="missing key 'state'"):
        policy.loss({"obs": {}, "action": data["action"]})
    image_policy = DiffusionPolicy(tiny_config(obs_shapes={"state": [5], "image": [16, 16, 3]}, image_keys=["image"]))
    image_obs = {"state": torch.zeros(2, N_OBS, 5), "image": torch.zeros(2, N_OBS, 16, 16, 3, dtype=torch.uint8)}
    assert image_policy.encode_obs(image_obs).shape == (2, image_policy.obs_encoder.out_dim)
    with pytest.raises(ValueError, match="observation 'image' must be"):
        image_policy.encode_obs({**image_obs, "image": image_obs["image"][..., :1]})
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(horizon=7, n_action_steps=4)
