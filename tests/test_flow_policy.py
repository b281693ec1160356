"""Flow-matching head: training reduces the loss, deterministic sampling for both integrators and any step count,
that the integrators are exact / second order on known fields, the shortcut machinery, checkpoints and errors."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from tests.linear_task import ACTION_DIM, HORIZON, N_OBS, STATE_DIM, fitted, synthetic_batch, train_losses


def tiny_config(**overrides) -> FlowConfig:
    kwargs = {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "step_size_embed_dim": 16, "horizon": HORIZON,
              "n_obs_steps": N_OBS, "n_action_steps": 4, "obs_shapes": {"state": [STATE_DIM]},
              "action_dim": ACTION_DIM}
    kwargs.update(overrides)
    return FlowConfig(**kwargs)


def tiny_policy(**overrides) -> FlowMatchingPolicy:
    torch.manual_seed(0)
    return fitted(FlowMatchingPolicy(tiny_config(**overrides)))


def test_config_round_trips_through_json():
    cfg = tiny_config(down_dims=(16, 32))
    again = FlowConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.down_dims == [16, 32]


def test_yaml_names_every_config_field():
    from robolearn.cli import compose

    raw = compose("train", ["policy=flow"])
    assert raw["policy_class"] == "flow"
    fields = {k: v for k, v in raw["policy"].items() if k != "name"}
    base = {"obs_shapes", "image_keys", "action_dim"}
    assert set(fields) == {f.name for f in dataclasses.fields(FlowConfig)} - base
    assert FlowConfig(obs_shapes={"state": [5]}, **fields) == FlowConfig(obs_shapes={"state": [5]}, horizon=16,
                                                                         n_action_steps=8)


@pytest.mark.parametrize("overrides", [{}, {"shortcut": False, "time_sampling": "uniform"}])
def test_loss_falls_on_learnable_data(overrides):
    policy = tiny_policy(**overrides)
    losses = train_losses(policy, synthetic_batch(128, seed=1), steps=80, lr=3e-3)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses


@pytest.mark.parametrize("integrator", ["euler", "midpoint"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sample_shape_and_determinism(integrator, steps):
    policy = tiny_policy()
    obs = synthetic_batch(3, seed=2)["obs"]

    def draw(seed: int) -> torch.Tensor:
        return policy.sample(obs, n=4, generator=torch.Generator().manual_seed(seed), steps=steps,
                             integrator=integrator)

    out1, out2, out3 = draw(7), draw(7), draw(8)
    assert out1.shape == (3, 4, HORIZON, ACTION_DIM)
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    noise = policy.initial_noise(3, 4, torch.Generator().manual_seed(7))  # passing the noise in is the same draw
    assert torch.equal(policy.sample(obs, n=4, steps=steps, integrator=integrator, noise=noise), out1)


def test_nfe_counts_network_evaluations():
    policy = tiny_policy()
    assert policy.nfe() == 10
    assert policy.nfe(4, "euler") == 4
    assert policy.nfe(4, "midpoint") == 8
    assert tiny_policy(integrator="midpoint", num_inference_steps=3).nfe() == 6
    calls = []
    original = policy.velocity
    policy.velocity = lambda *args: calls.append(1) or original(*args)  # count real UNet calls
    policy.sample(synthetic_batch(2, seed=3)["obs"], n=3, steps=4, integrator="midpoint")
    assert len(calls) == policy.nfe(4, "midpoint")


@pytest.mark.parametrize("integrator", ["euler", "midpoint"])
@pytest.mark.parametrize("steps", [1, 3])
def test_constant_field_lands_on_its_target(monkeypatch, integrator, steps):
    """With v = target - noise everywhere, integrating from the noise over [0, 1] ends on the target."""
    policy = tiny_policy(clip_sample=False)
    obs = synthetic_batch(2, seed=4)["obs"]
    g = torch.Generator().manual_seed(0)
    noise = policy.initial_noise(2, 3, g)
    target = 1.8 * torch.rand(noise.shape, generator=g) - 0.9  # normalized chunks inside [-1, 1]
    field = (target - noise).reshape(6, HORIZON, ACTION_DIM)
    monkeypatch.setattr(policy, "velocity", lambda x, t, cond, d=None: field)
    x0 = noise.reshape(6, HORIZON, ACTION_DIM)
    if steps == 1:
        landed = policy.integrate_step(x0, 0.0, 1.0, torch.zeros(6, 0), integrator)
        assert torch.allclose(landed, target.reshape(x0.shape), rtol=0, atol=1e-6)
    out = policy.sample(obs, n=3, steps=steps, integrator=integrator, noise=noise)
    assert torch.allclose(policy.normalizer.normalize("action", out), target, rtol=0, atol=1e-5)


def test_midpoint_is_second_order_and_euler_first_order(monkeypatch):
    """dx/dt = x from x0 ends at e * x0; doubling the steps divides the error by ~2 (Euler) or ~4 (midpoint)."""
    policy = tiny_policy(clip_sample=False)
    monkeypatch.setattr(policy, "velocity", lambda x, t, cond, d=None: x)
    x0 = torch.full((1, HORIZON, ACTION_DIM), 0.1, dtype=torch.float64)

    def error(steps: int, integrator: str) -> float:
        x = x0
        for i in range(steps):
            x = policy.integrate_step(x, i / steps, 1.0 / steps, torch.zeros(1, 0), integrator)
        return float((x - math.e * x0).abs().max())

    euler = error(8, "euler"), error(16, "euler")
    midpoint = error(8, "midpoint"), error(16, "midpoint")
    assert 1.6 < euler[0] / euler[1] < 2.4
    assert 3.4 < midpoint[0] / midpoint[1] < 4.6
    assert midpoint[1] < euler[1] / 10


def test_shortcut_target_averages_two_model_half_steps(monkeypatch):
    policy = tiny_policy()
    calls = []

    def fake_velocity(x, t, cond, d=None):
        calls.append((t.clone(), d.clone()))
        return x * (1.0 + t[:, None, None])

    monkeypatch.setattr(policy, "velocity", fake_velocity)
    x = torch.randn(3, HORIZON, ACTION_DIM, requires_grad=True)
    t = torch.tensor([0.0, 0.25, 0.5])
    h = torch.tensor([0.5, 0.125, 0.25])
    got = policy.shortcut_target(x, t, h, torch.zeros(3, 0))
    first = x * (1 + t)[:, None, None]
    second = (x + h[:, None, None] * first) * (1 + t + h)[:, None, None]
    assert torch.allclose(got, (first + second) / 2)
    assert not got.requires_grad  # stop-gradient
    assert torch.equal(calls[0][0], t) and torch.equal(calls[1][0], t + h)
    assert all(torch.equal(d, h) for _, d in calls)


def test_loss_trains_shortcut_rows_on_the_step_grid(monkeypatch):
    policy = tiny_policy(shortcut_fraction=0.25, shortcut_max_steps=8)
    seen = {}

    def fake_target(x, t, half, cond):
        seen.update(t=t, half=half)
        return torch.zeros_like(x)

    monkeypatch.setattr(policy, "shortcut_target", fake_target)
    torch.manual_seed(3)
    policy.loss(synthetic_batch(64, seed=5))
    t, step = seen["t"], 2 * seen["half"]
    assert t.shape == (16,)
    assert set(step.tolist()) <= {1.0, 0.5, 0.25}  # 2 ** -k for k < log2(8); its half-step >= 1/8
    assert torch.all(t + step <= 1.0) and torch.equal(torch.round(t / step), t / step)  # t on the step grid
    assert tiny_policy(shortcut=False).step_size_encoder is None


def test_step_size_conditions_the_network():
    policy = tiny_policy()
    x = torch.randn(2, HORIZON, ACTION_DIM)
    cond = policy.encode_obs(synthetic_batch(2, seed=6)["obs"])
    with torch.no_grad():
        fine = policy.velocity(x, 0.3, cond, 1.0 / 128)
        assert not torch.allclose(policy.velocity(x, 0.3, cond, 1.0), fine)
        assert torch.equal(policy.velocity(x, 0.3, cond, 0.0), fine)  # d = 0 shares the finest level
        assert torch.equal(policy.velocity(x, 0.3, cond), fine)
        plain = tiny_policy(shortcut=False)
        assert plain.unet.global_cond_dim == N_OBS * STATE_DIM
        assert torch.equal(plain.velocity(x, 0.3, cond, 1.0), plain.velocity(x, 0.3, cond, 0.25))


def test_time_sampling_laws():
    g = torch.Generator().manual_seed(0)
    beta = tiny_policy().sample_time(20000, g)
    uniform = tiny_policy(time_sampling="uniform").sample_time(20000, g)
    assert beta.min() >= 0 and beta.max() <= 0.999
    assert abs(beta.mean().item() - 0.999 * 0.4) < 0.01  # E[t] = s * (1 - E[Beta(1.5, 1)]) = s * 0.4
    assert abs(uniform.mean().item() - 0.5) < 0.01


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    policy = tiny_policy()
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", device="cpu")
    assert isinstance(loaded, FlowMatchingPolicy) and loaded.config == policy.config
    obs = synthetic_batch(3, seed=7)["obs"]
    for steps, integrator in ((4, "euler"), (2, "midpoint")):
        a = policy.sample(obs, n=2, generator=torch.Generator().manual_seed(7), steps=steps, integrator=integrator)
        b = loaded.sample(obs, n=2, generator=torch.Generator().manual_seed(7), steps=steps, integrator=integrator)
        assert torch.equal(a, b)


def test_act_returns_executed_slice():
    policy = tiny_policy(num_inference_steps=2)
    obs = {"state": synthetic_batch(2, seed=8)["obs"]["state"].numpy()}
    assert policy.act(obs).shape == (2, 4, ACTION_DIM)


def test_clear_errors_for_bad_inputs():
    policy = tiny_policy()
    obs = synthetic_batch(2, seed=9)["obs"]
    with pytest.raises(ValueError, match="integrator must be"):
        policy.sample(obs, integrator="rk4")
    with pytest.raises(ValueError, match="steps must be"):
        policy.sample(obs, steps=0)
    with pytest.raises(ValueError, match="noise must be"):
        policy.sample(obs, n=2, noise=torch.zeros(2, 1, HORIZON, ACTION_DIM))
    for bad in ({"time_sampling": "logit"}, {"shortcut_max_steps": 100}, {"shortcut_fraction": 1.0},
                {"integrator": "rk4"}, {"num_inference_steps": 0}, {"horizon": 7, "n_action_steps": 4}):
        with pytest.raises(ValueError):
            tiny_config(**bad)
