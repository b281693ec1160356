"""One backbone interface: the UNet and the transformer are interchangeable under the diffusion, flow and
energy-descent heads (shapes, training, checkpoints), and a UNet policy keeps its weight names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robolearn.nn.transformer1d import ConditionalTransformer1D
from robolearn.nn.unet1d import ConditionalUnet1D
from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.energy_descent import EnergyDescentConfig, EnergyDescentPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from tests.linear_task import train_losses

SHAPES = dict(obs_shapes={"state": [3]}, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4)
TRANSFORMER = dict(backbone="transformer", n_layer=2, n_head=2, n_emb=32, attn_dropout=0.0)
HEADS = [(DiffusionPolicy, DiffusionConfig), (FlowMatchingPolicy, FlowConfig),
         (EnergyDescentPolicy, EnergyDescentConfig)]


def batch(n: int = 64, seed: int = 0) -> dict:
    """Chunks that are a fixed function of the observation: learnable, so the loss must fall."""
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(n, 2, 3, generator=g)
    action = state[:, -1:, :2].expand(n, 8, 2) * torch.linspace(0.5, 1.0, 8)[None, :, None]
    return {"obs": {"state": state}, "action": action.contiguous()}


def build(policy_cls, config_cls, **overrides):
    policy = policy_cls(config_cls(**SHAPES, **{**TRANSFORMER, **overrides}))
    policy.normalizer.fit({"state": {"min": np.zeros(3), "max": np.ones(3)},
                           "action": {"min": np.zeros(2), "max": np.ones(2)}})
    return policy


def test_transformer_keeps_shapes_and_attends_causally():
    torch.manual_seed(0)
    net = ConditionalTransformer1D(action_dim=2, global_cond_dim=5, horizon=8, n_layer=2, n_head=2, n_emb=16,
                                   dropout=0.0).eval()
    x, cond = torch.randn(3, 8, 2), torch.randn(3, 5)
    out = net(x, torch.tensor([1.0, 5.0, 9.0]), cond)
    assert out.shape == (3, 8, 2)
    changed = x.clone()
    changed[:, 5:] += 1.0  # a later action cannot change an earlier token's output
    again = net(changed, torch.tensor([1.0, 5.0, 9.0]), cond)
    assert torch.allclose(again[:, :5], out[:, :5], atol=1e-6) and not torch.allclose(again[:, 5:], out[:, 5:])
    with pytest.raises(ValueError, match="sample must be"):
        net(torch.randn(3, 4, 2), 0.0, cond)
    with pytest.raises(ValueError, match="global_cond"):
        net(x, 0.0, torch.randn(3, 4))


@pytest.mark.parametrize("policy_cls,config_cls", HEADS, ids=["diffusion", "flow", "energy"])
def test_every_head_trains_and_round_trips_on_the_transformer(policy_cls, config_cls, tmp_path):
    torch.manual_seed(0)
    policy = build(policy_cls, config_cls)
    assert isinstance(policy.backbone, ConditionalTransformer1D) and not hasattr(policy, "unet")
    losses = train_losses(policy, batch(), steps=60, lr=2e-3)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses
    policy.eval()
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", device="cpu")
    obs = {"state": torch.rand(2, 2, 3)}
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(loaded.sample(obs, n=3, generator=gen()), policy.sample(obs, n=3, generator=gen()))


def test_a_unet_head_keeps_the_weight_names_older_checkpoints_have():
    policy = build(DiffusionPolicy, DiffusionConfig, backbone="unet", down_dims=[16, 32],
                   diffusion_step_embed_dim=16)
    assert isinstance(policy.backbone, ConditionalUnet1D) and policy.backbone is policy.unet
    assert any(k.startswith("unet.") for k in policy.state_dict()) and not any(
        k.startswith("transformer.") for k in policy.state_dict())
