"""What users saved with robolearn at commit c32f101 (before the registries, models/ and the shared training loop)
keeps loading: a store, a policy run folder (resumable), a critic and a world model, made by
tests/fixtures/make_checkpoints_of_main_c32f101.py from that commit's code."""
import json
import shutil
from pathlib import Path

import numpy as np
import torch

import robolearn
from robolearn.data.store import EpisodeStore
from robolearn.models.critic import load_critic
from robolearn.models.world_model import load_world_model
from robolearn.policies.checkpoint import load_task
from robolearn.train import RunConfig, Trainer

SAVED = Path(__file__).parent / "fixtures" / "main_c32f101"


def test_policy_checkpoint_loads_and_samples_as_it_did():
    checkpoint = SAVED / "run" / "checkpoints" / "last"
    assert json.loads((checkpoint / "policy.json").read_text())["class"] == "robolearn.policies.diffusion:DiffusionPolicy"
    policy = robolearn.load_policy(checkpoint, device="cpu")
    obs = {"state": torch.as_tensor(np.load(SAVED / "policy_obs.npy"))}
    sample = policy.sample(obs, n=2, generator=torch.Generator().manual_seed(0))
    # the same weights and sampler give the same chunk up to float32 rounding, which differs between CPUs'
    # kernels (seen: 2e-5 relative after 100 DDPM steps); a weight or sampler mismatch moves it by whole units
    np.testing.assert_allclose(sample.numpy(), np.load(SAVED / "policy_sample.npy"), rtol=1e-4, atol=1e-3)
    task = load_task(checkpoint)
    assert task.env == "pusht" and task.make_env().spec.action_dim == 2  # its import path is an alias now


def test_run_folder_resumes_with_the_new_training_loop(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(SAVED / "run", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["out_dir"] = str(run_dir)
    config["train"]["steps"] = 5
    run = RunConfig.from_dict(config)
    assert run.policy_class == "robolearn.policies.diffusion:DiffusionPolicy" and run.task.env == "pusht"
    trainer = Trainer(run, store=EpisodeStore.open(SAVED / "store.episodes.zarr"), progress=False)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    assert trainer.resume() and trainer.step == 3
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())  # weights came back
    trainer.fit()
    assert trainer.step == 5
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps[:3] == [1, 2, 3] and steps[-2:] == [4, 5]  # the old log continues


def test_critic_and_world_model_load_and_run():
    store = EpisodeStore.open(SAVED / "store.episodes.zarr")
    obs = {"state": torch.as_tensor(store.read("state")[None, :2])}
    critic = load_critic(SAVED / "critic", device="cpu")
    q = critic.score(obs, torch.zeros(1, 3, critic.action_steps, 2))
    assert q.shape == (1, 3) and torch.isfinite(q).all()
    model = load_world_model(SAVED / "world_model", device="cpu")
    imagined = model.imagine({"state": obs["state"][:, -1]}, torch.zeros(1, 4, 2))
    assert torch.isfinite(imagined["obs"]["state"]).all()


def test_store_opens_with_its_episodes_and_labels():
    store = EpisodeStore.open(SAVED / "store.episodes.zarr")
    assert store.n_episodes == 4 and list(store.episode_lengths) == [12, 12, 12, 12]
    assert [store.episode_meta(i)["success"] for i in range(4)] == [False, True, False, True]
    np.testing.assert_array_equal(store.read("action"), store.read("state")[:, :2])
