import json

import numpy as np
import pytest
import torch

import robolearn
from robolearn.policies.checkpoint import load_task, save_policy
from robolearn.task import TaskConfig
from tests.helpers import tiny_diffusion


def _obs(batch=3):
    rng = np.random.default_rng(1)
    return {"state": torch.as_tensor(rng.uniform(0, 512, (batch, 2, 5)), dtype=torch.float32)}


def test_save_load_gives_identical_actions_for_a_fixed_seed(tmp_path):
    policy = tiny_diffusion()
    with torch.no_grad():  # make weights and normalizer non-default so a failed load would show
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_policy(policy, tmp_path / "ckpt", task=TaskConfig())
    loaded = robolearn.load_policy(tmp_path / "ckpt", device="cpu")
    assert not loaded.training
    assert loaded.config == policy.config
    for scheduler in ("ddim", "ddpm"):
        a = policy.sample(_obs(), n=2, generator=torch.Generator().manual_seed(7), scheduler=scheduler)
        b = loaded.sample(_obs(), n=2, generator=torch.Generator().manual_seed(7), scheduler=scheduler)
        assert torch.equal(a, b)
    assert load_task(tmp_path / "ckpt") == TaskConfig()


def test_checkpoint_is_plain_json_and_safetensors(tmp_path):
    save_policy(tiny_diffusion(), tmp_path / "ckpt")
    record = json.loads((tmp_path / "ckpt" / "policy.json").read_text())
    assert record["class"] == "diffusion"  # a registry name, never an import path
    assert record["config"]["horizon"] == 8
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.safetensors", "policy.json"]


def test_bad_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy checkpoint"):
        robolearn.load_policy(tmp_path / "missing")
    save_policy(tiny_diffusion(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "policy.json"
    record = json.loads(path.read_text())

    path.write_text(json.dumps({**record, "version": 99}))
    with pytest.raises(ValueError, match="newer robolearn"):
        robolearn.load_policy(tmp_path / "ckpt")

    path.write_text(json.dumps({**record, "class": "os:system"}))
    with pytest.raises(ValueError, match="unknown policy .os:system.; known: diffusion"):
        robolearn.load_policy(tmp_path / "ckpt")

    path.write_text(json.dumps({**record, "config": {**record["config"], "renamed_field": 1}}))
    with pytest.raises(ValueError, match="renamed_field"):
        robolearn.load_policy(tmp_path / "ckpt")

    path.write_text(json.dumps({**record, "config": {**record["config"], "down_dims": [16, 64]}}))
    with pytest.raises(ValueError, match="do not match"):
        robolearn.load_policy(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="does not say which task"):
        load_task(tmp_path / "ckpt")


def test_checkpoint_written_before_image_settings_and_obs_sources_still_loads(tmp_path):
    """Checkpoints from before PolicyConfig's image fields and TaskConfig.obs_sources existed rebuild the
    encoder those versions always built (the defaults) and load their weights unchanged."""
    from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
    from tests.helpers import TINY

    config = DiffusionConfig(obs_shapes={"image": [24, 24, 3], "agent_pos": [2]}, image_keys=["image"], **TINY)
    policy = DiffusionPolicy(config)
    save_policy(policy, tmp_path / "ckpt", task=TaskConfig())
    path = tmp_path / "ckpt" / "policy.json"
    record = json.loads(path.read_text())
    new_fields = ("crop_ratio", "image_feature_dim", "n_keypoints", "share_image_encoder")
    old_config = {k: v for k, v in record["config"].items() if k not in new_fields}
    old_task = {k: v for k, v in record["task"].items() if k != "obs_sources"}
    path.write_text(json.dumps({**record, "config": old_config, "task": old_task}))
    loaded = robolearn.load_policy(tmp_path / "ckpt", device="cpu")
    assert loaded.config == config
    assert (loaded.config.crop_ratio, loaded.config.image_feature_dim, loaded.config.n_keypoints) == (0.9, 64, 32)
    for name, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert load_task(tmp_path / "ckpt") == TaskConfig()
