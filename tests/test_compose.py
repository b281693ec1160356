"""ComposedPolicy: one sampler mixing the per-step predictions of diffusion, flow and energy parents."""
import numpy as np
import pytest
import torch

from robolearn.control.executor import PolicyRunner
from robolearn.policies.compose import ComposedPolicy
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.energy_descent import EnergyDescentConfig, EnergyDescentPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from robolearn.policies.ibc import IBCConfig, IBCPolicy
from robolearn.policies.regression import RegressionConfig, RegressionPolicy

UNET = dict(down_dims=[16, 32], diffusion_step_embed_dim=16, horizon=8, n_obs_steps=2, n_action_steps=4)


def fitted(policy, obs_key="state", obs_dim=3, action_range=(0.0, 10.0)):
    policy.normalizer.fit({obs_key: {"min": np.zeros(obs_dim), "max": np.ones(obs_dim)},
                           "action": {"min": np.full(2, action_range[0]), "max": np.full(2, action_range[1])}})
    return policy.eval()


def flow(seed=0, obs_key="state", **kw):
    torch.manual_seed(seed)
    return fitted(FlowMatchingPolicy(FlowConfig(obs_shapes={obs_key: [3]}, action_dim=2, num_inference_steps=6,
                                                **{**UNET, **kw})), obs_key)


def diffusion(seed=0, **kw):
    torch.manual_seed(seed)
    return fitted(DiffusionPolicy(DiffusionConfig(obs_shapes={"state": [3]}, action_dim=2, num_inference_steps=5,
                                                  **{**UNET, **kw})))


def obs(batch=2, key="state"):
    return {key: torch.rand(batch, 2, 3, generator=torch.Generator().manual_seed(1))}


def noise(batch=2, n=3):
    return torch.randn(batch, n, 8, 2, generator=torch.Generator().manual_seed(2))


def test_one_flow_parent_with_weight_one_reproduces_its_euler_samples():
    parent = flow()
    alone = parent.sample(obs(), n=3, noise=noise())
    composed = ComposedPolicy([parent], [1.0]).sample(obs(), n=3, noise=noise())
    torch.testing.assert_close(composed, alone, atol=1e-4, rtol=1e-5)  # task units up to 10


def test_one_diffusion_parent_with_weight_one_reproduces_its_ddim_samples():
    parent = diffusion()
    alone = parent.sample(obs(), n=3, noise=noise(), scheduler="ddim")
    composed = ComposedPolicy([parent], [1.0]).sample(obs(), n=3, noise=noise())
    torch.testing.assert_close(composed, alone, atol=1e-4, rtol=1e-5)


def test_a_zero_weight_parent_changes_nothing_and_equal_parents_mix_to_themselves():
    a, b = flow(0), flow(1)
    torch.testing.assert_close(ComposedPolicy([a, b], [1.0, 0.0]).sample(obs(), noise=noise(n=1)),
                               a.sample(obs(), noise=noise(n=1)), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ComposedPolicy([a, a], [0.5, 0.5]).sample(obs(), noise=noise(n=1)),
                               a.sample(obs(), noise=noise(n=1)), atol=1e-4, rtol=1e-5)
    mixed = ComposedPolicy([a, b], [0.5, 0.5]).sample(obs(), noise=noise(n=1))
    assert not torch.allclose(mixed, a.sample(obs(), noise=noise(n=1)), atol=1e-3)


def test_a_zero_weight_diffusion_parent_does_not_change_a_flow_parents_grid():
    a, b = diffusion(), flow()
    torch.testing.assert_close(ComposedPolicy([a, b], [0.0, 1.0]).sample(obs(), noise=noise(n=1)),
                               b.sample(obs(), noise=noise(n=1)), atol=1e-4, rtol=1e-5)
    assert ComposedPolicy([a, b], [0.0, 1.0]).nfe() == 6 and ComposedPolicy([a, b], [0.5, 0.5]).nfe() == 5 * 2


def test_parents_with_other_action_normalizers_are_mapped_into_one_space():
    a = flow(0)
    b = fitted(flow(0), action_range=(-5.0, 20.0))  # same weights, other normalization of the same actions
    composed = ComposedPolicy([a, b], [0.0, 1.0]).sample(obs(), noise=noise(n=1))
    # b alone would start from noise in its own units; mapped, it runs on a's noise: finite, in a's action range
    assert composed.shape == (2, 1, 8, 2) and torch.isfinite(composed).all()
    assert composed.min() >= 0.0 - 1e-4 and composed.max() <= 10.0 + 1e-4  # clipped to parent 0's range


def test_mixed_heads_and_different_observation_keys_run_in_the_control_loop():
    state_policy = diffusion()
    pos_policy = flow(obs_key="pos")
    torch.manual_seed(0)
    energy = fitted(IBCPolicy(IBCConfig(obs_shapes={"state": [3]}, action_dim=2, hidden=[16, 16],
                                              horizon=8, n_obs_steps=2, n_action_steps=4)))
    composed = ComposedPolicy([state_policy, pos_policy, energy], lambda t: [0.5 - 0.2 * t, 0.3 + 0.2 * t, 0.2])
    assert sorted(composed.config.obs_shapes) == ["pos", "state"] and composed.nfe() == 5 * 3
    runner = PolicyRunner(composed)
    runner.reset([{"state": np.zeros(3, np.float32), "pos": np.ones(3, np.float32)}])
    action = runner.act()
    assert action.shape == (1, 2) and np.all(np.isfinite(action))
    candidates = composed.sample({"state": torch.rand(1, 2, 3), "pos": torch.rand(1, 2, 3)}, n=4)
    assert candidates.shape == (1, 4, 8, 2) and torch.isfinite(candidates).all()


def test_an_energy_descent_parent_mixes_its_descent_step_as_the_clean_chunk_guess():
    torch.manual_seed(0)
    descent = fitted(EnergyDescentPolicy(EnergyDescentConfig(obs_shapes={"state": [3]}, action_dim=2,
                                                             **{**UNET, "backbone": "transformer", "n_layer": 1,
                                                                "n_emb": 16, "n_head": 2})))
    start = noise()
    # one flow step from t = 0 to 1 lands on the parent's clean-chunk guess: one descent step from the noise
    alone = ComposedPolicy([descent, flow()], [1.0, 0.0], steps=1).sample(obs(), n=3, noise=start)
    cond = descent.encode_obs(obs()).repeat_interleave(3, dim=0)
    _, grad = descent.energy_and_grad(cond, start.reshape(6, 8, 2))
    guess = (start.reshape(6, 8, 2) - descent.step_size * grad).clamp(-1, 1)
    assert torch.allclose(alone, descent.normalizer.unnormalize("action", guess).reshape(2, 3, 8, 2), atol=1e-5)
    mixed = ComposedPolicy([descent, flow()], [0.5, 0.5]).sample(obs(), n=3, noise=start)
    assert mixed.shape == (2, 3, 8, 2) and torch.isfinite(mixed).all()


def test_mismatched_parents_and_bad_weights_fail_clearly():
    with pytest.raises(ValueError, match="parents disagree on horizon: parent 0 has 8, parent 1 has 16"):
        ComposedPolicy([flow(), flow(horizon=16, down_dims=[16, 32])], [0.5, 0.5])
    with pytest.raises(ValueError, match="2 non-negative numbers summing to 1, got \\[0.7, 0.7\\]"):
        ComposedPolicy([flow(), flow()], [0.7, 0.7])
    with pytest.raises(ValueError, match="summing to 1"):
        ComposedPolicy([flow(), flow()], [1.5, -0.5])
    with pytest.raises(ValueError, match="read 'state' with different shapes"):
        bigger = FlowMatchingPolicy(FlowConfig(obs_shapes={"state": [4]}, action_dim=2, **UNET))
        ComposedPolicy([flow(), bigger], [0.5, 0.5])
    regression = RegressionPolicy(RegressionConfig(obs_shapes={"state": [3]}, action_dim=2, horizon=8, n_action_steps=4))
    with pytest.raises(TypeError, match="parent 1 is a RegressionPolicy"):
        ComposedPolicy([flow(), regression], [0.5, 0.5])
    with pytest.raises(TypeError, match="not trained"):
        ComposedPolicy([flow()], [1.0]).loss({})
    schedule = ComposedPolicy([flow(), flow()], lambda t: [t, t])
    with pytest.raises(ValueError, match="summing to 1"):
        schedule.sample(obs())
