"""Inference compilation on the CPU: compile_for_inference is a no-op (False) there and changes nothing, and the
host-side sampler changes made for CUDA-graph capture sample exactly what the diffusers loop samples."""
import copy

import numpy as np
import pytest
import torch

from robolearn.control.chunking import ChunkExecution, make_runner
from robolearn.control.executor import ObsHistory, predict_future
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from tests.helpers import tiny_diffusion


def tiny_flow(**overrides):
    cfg = FlowConfig(obs_shapes={"state": [5]}, action_dim=2, down_dims=[16, 32], diffusion_step_embed_dim=16,
                     horizon=8, n_obs_steps=2, n_action_steps=4, **overrides)
    policy = FlowMatchingPolicy(cfg)
    policy.normalizer.fit({"state": {"min": np.zeros(5), "max": np.full(5, 512.0)},
                           "action": {"min": np.zeros(2), "max": np.full(2, 512.0)}})
    return policy.eval()


def obs_batch(b=1, seed=0):
    return {"state": torch.from_numpy(np.random.default_rng(seed).uniform(0, 512, (b, 2, 5)).astype(np.float32))}


def test_compile_for_inference_is_a_no_op_on_the_cpu():
    policy = tiny_diffusion().eval()
    obs = obs_batch()
    eager = policy.act(obs, generator=torch.Generator().manual_seed(3))
    assert policy.compile_for_inference() is False
    assert policy.inference_graphs is None
    again = policy.act(obs, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(eager, again)
    runner = make_runner(policy, ChunkExecution(mode="receding"))  # runners ask for graphs: still eager here
    assert policy.inference_graphs is None and runner.device is None


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_diffusion_sampling_equals_the_diffusers_loop_with_device_timesteps(scheduler):
    """Host timesteps + on-device step tensors (capturable) give the same chunk as diffusers' own loop."""
    policy = tiny_diffusion(num_train_timesteps=20, num_inference_steps=5).eval()
    obs = obs_batch(b=2)
    got = policy.sample(obs, n=3, generator=torch.Generator().manual_seed(1), scheduler=scheduler)
    g = torch.Generator().manual_seed(1)
    cfg = policy.config
    with torch.no_grad():
        cond = policy.encode_obs(obs).repeat_interleave(3, dim=0)
        x = policy.initial_noise(2, 3, g).reshape(6, cfg.horizon, cfg.action_dim)
        sched = policy.schedulers[scheduler]
        sched.set_timesteps(5 if scheduler == "ddim" else 20, device=cond.device)
        for t in sched.timesteps:
            out = policy.unet(x, torch.as_tensor(t).expand(6), cond)
            x = sched.step(out, t, x, generator=g).prev_sample
        want = policy.normalizer.unnormalize("action", x.clamp(-1, 1)).reshape(2, 3, cfg.horizon, cfg.action_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("integrator,steps", [("euler", 1), ("euler", 4), ("midpoint", 2)])
def test_flow_sampling_equals_integrating_with_tensor_times(integrator, steps):
    policy = tiny_flow()
    obs = obs_batch(b=2, seed=4)
    got = policy.sample(obs, n=2, generator=torch.Generator().manual_seed(2), steps=steps, integrator=integrator)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        cond = policy.encode_obs(obs).repeat_interleave(2, dim=0)
        x = policy.initial_noise(2, 2, g).reshape(4, 8, 2)
        dt = 1.0 / steps

        def v(x, t, d):
            return policy.velocity(x, torch.full((4,), t), cond, torch.full((4,), d))

        for i in range(steps):
            t = i * dt
            if integrator == "euler":
                x = x + dt * v(x, t, dt)
            else:
                mid = x + dt / 2 * v(x, t, dt / 2)
                x = x + dt * v(mid, t + dt / 2, dt / 2)
        want = policy.normalizer.unnormalize("action", x.clamp(-1, 1)).reshape(2, 2, 8, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_copied_policy_does_not_share_captured_graphs():
    policy = tiny_flow()
    policy._graphed = object()  # stands for a GraphedSampler holding this object's CUDA memory
    clone = copy.deepcopy(policy)
    assert getattr(clone, "_graphed", None) is None and policy._graphed is not None


def test_host_history_is_numpy_and_history_returns_copies():
    hist = ObsHistory(["state"], 2)
    hist.reset([{"state": np.zeros(5, np.float32)}])
    hist.observe([{"state": np.ones(5, np.float32)}])
    view = hist.history
    assert isinstance(view["state"], np.ndarray) and view["state"].shape == (1, 2, 5)
    np.testing.assert_array_equal(view["state"][0, :, 0], [0.0, 1.0])


def test_predict_future_is_the_chunk_from_the_newest_observation_on():
    policy = tiny_flow()
    obs = obs_batch(seed=5)
    future = predict_future(policy, {"state": obs["state"].numpy()}, torch.Generator().manual_seed(0))
    chunk = policy.sample(obs, n=1, generator=torch.Generator().manual_seed(0))[:, 0]
    np.testing.assert_array_equal(future, chunk[:, 1:].numpy())
    assert future.shape == (1, 7, 2)
