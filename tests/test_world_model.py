"""Latent world model: it learns a known linear system, and ImaginedEnv keeps the Env contract the loop relies on."""
import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.data.store import EpisodeStore
from robolearn.env import ArraySpec, Env
from robolearn.eval.imagination import ImaginedEnv, episode_starts
from robolearn.eval.rollout import evaluate
from robolearn.models.world_model import (
    Sequences,
    WorldModelConfig,
    load_world_model,
    save_world_model,
    train_world_model,
)
from robolearn.sim.particle import ParticleEnv
from robolearn.task import TaskConfig
from tests.helpers import tiny_diffusion

THETA = 0.3
A = np.array([[0.95 * np.cos(THETA), -0.95 * np.sin(THETA), 0.0],
              [0.95 * np.sin(THETA), 0.95 * np.cos(THETA), 0.0],
              [0.0, 0.0, 0.9]])
B = np.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]])


def linear_store(path, n_episodes: int, seed: int, length: int = 40) -> EpisodeStore:
    """x' = A x + B u under uniform random u, reward -|x|^2 of the state the action is taken in."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        x = rng.uniform(-1, 1, 3)
        xs, us = [], []
        for _ in range(length):
            u = rng.uniform(-1, 1, 2)
            xs.append(x)
            us.append(u)
            x = A @ x + B @ u
        xs = np.asarray(xs, np.float32)
        episodes.append(({"state": xs, "action": np.asarray(us, np.float32),
                          "reward": -np.square(xs).sum(1).astype(np.float32)}, {}))
    store = EpisodeStore.create(path, fps=10)
    store.append_episodes(episodes, commit_every=n_episodes)
    return store


def particle_image_store(path, n_episodes: int = 12) -> EpisodeStore:
    """Particle demonstrations with a 32x32 camera; only episodes that reach the right-hand goal succeed."""
    env = ParticleEnv(render_size=32)
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(n_episodes):
        obs, done = env.reset(seed=i), False
        goal = env.goals[i % 2]
        states, images, actions = [], [], []
        while not done:
            states.append(obs["state"])
            images.append(env.render())
            action = (goal + rng.normal(0, 0.02, 2)).astype(np.float32)
            actions.append(action)
            obs, _, done, info = env.step(action)
        episodes.append(({"state": np.stack(states), "image": np.stack(images), "action": np.stack(actions)},
                         {"success": bool(info["goal"] == 1)}))
    store = EpisodeStore.create(path, fps=10, task="particle")
    store.append_episodes(episodes, commit_every=n_episodes)
    return store


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    folder = tmp_path_factory.mktemp("linear")
    train, test = linear_store(folder / "train.zarr", 40, seed=0), linear_store(folder / "test.zarr", 20, seed=1)
    history: list[dict[str, float]] = []
    cfg = WorldModelConfig(obs_keys=["state"], success_source="none", latent_dim=16, hidden=[64, 64], rollout_steps=5,
                           steps=400, batch_size=128, lr=3e-3, device="cpu", log_every=50)
    return train_world_model(train, cfg, history=history), test, history


@pytest.fixture(scope="module")
def particle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("particle")
    store = particle_image_store(folder / "p.zarr")
    cfg = WorldModelConfig(obs_keys=["state", "image"], latent_dim=8, hidden=[32], conv_channels=[8, 16],
                           image_feature_dim=16, rollout_steps=3, steps=30, batch_size=32, device="cpu")
    model = train_world_model(store, cfg)
    return model, store, save_world_model(model, folder / "wm")


def test_learns_a_linear_system_to_small_multistep_error(linear):
    model, test, history = linear
    episodes = [test.episode(i) for i in range(test.n_episodes)]
    x0 = np.stack([e["state"][0] for e in episodes])
    actions = torch.as_tensor(np.stack([e["action"][:10] for e in episodes]))
    truth = np.stack([e["state"][1:11] for e in episodes])  # held-out episodes, 10 steps open loop
    out = model.imagine({"state": x0}, actions)
    assert out["obs"]["state"].shape == (20, 10, 3) and out["obs"]["state"].dtype == torch.float32
    rmse = np.sqrt(np.square(out["obs"]["state"].numpy() - truth).mean(axis=(0, 2)))
    scale = np.sqrt(np.square(truth).mean())
    hold = np.sqrt(np.square(x0[:, None] - truth).mean(axis=(0, 2)))  # "nothing moves" baseline
    assert rmse[0] < 0.06 * scale, f"one-step error {rmse[0]:.3f} vs state scale {scale:.3f}"
    assert rmse[-1] < 0.15 * scale, f"10-step error {rmse[-1]:.3f} vs state scale {scale:.3f}"
    assert np.all(rmse < 0.3 * hold), "the model must beat holding the first state by far"
    rewards = np.stack([e["reward"][:10] for e in episodes])
    reward_rmse = np.sqrt(np.square(out["reward"].numpy() - rewards).mean())
    assert reward_rmse < 0.15 * np.abs(rewards).mean()
    first, last = history[0], history[-1]
    assert last["prediction"] < 0.1 * first["prediction"] and last["consistency"] < 0.1 * first["consistency"]


def test_sequences_mask_the_missing_final_observation(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    for begin, length, success in ((0, 4, True), (4, 2, False)):
        steps = np.arange(begin, begin + length, dtype=np.float32)[:, None]
        store.append_episode({"state": steps, "action": steps + 100}, success=success)
    rollouts = EpisodeStore.create(tmp_path / "r.zarr")  # a second store, e.g. recorded rollouts
    rollouts.append_episode({"state": np.array([[10], [11], [12]], np.float32),
                             "action": np.array([[110], [111], [112]], np.float32)}, success=True)
    rollouts.append_episode({"state": np.array([[20]], np.float32), "action": np.array([[120]], np.float32)},
                            success=False)  # shorter than rollout_steps: contributes nothing
    data = Sequences([store, rollouts], WorldModelConfig(obs_keys=["state"], rollout_steps=2, reward_source="success"))
    assert len(data) == 6  # starts 0, 1, 2, 4, then 10, 11: every run of 2 actions inside one episode
    batch = data.gather(np.arange(6))
    np.testing.assert_array_equal(batch["obs"]["state"][:, :, 0].numpy(),
                                  [[0, 1, 2], [1, 2, 3], [2, 3, 3], [4, 5, 5], [10, 11, 12], [11, 12, 12]])
    np.testing.assert_array_equal(batch["valid"].numpy(), [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1],
                                                           [1, 1, 0]])
    np.testing.assert_array_equal(batch["action"][:, :, 0].numpy() % 100, [[0, 1], [1, 2], [2, 3], [4, 5], [10, 11],
                                                                           [11, 12]])
    # success on the last step of successful episodes only; the reward source "success" gives the same numbers
    np.testing.assert_array_equal(batch["success"].numpy(), [[0, 0], [0, 0], [0, 1], [0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(batch["reward"].numpy(), batch["success"].numpy())


def test_checkpoint_round_trip(linear, tmp_path):
    model, test, _ = linear
    loaded = load_world_model(save_world_model(model, tmp_path / "wm"), device="cpu")
    assert loaded.config == model.config
    obs, actions = {"state": test.episode(0)["state"][:1]}, torch.as_tensor(test.episode(0)["action"][None, :5])
    a, b = model.imagine(obs, actions), loaded.imagine(obs, actions)
    torch.testing.assert_close(a["obs"]["state"], b["obs"]["state"], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no world model checkpoint"):
        load_world_model(tmp_path)


def test_imagined_env_keeps_the_env_contract(particle):
    model, store, _ = particle
    env = ImaginedEnv(model, store, max_episode_steps=5, success_threshold=0.99)
    assert isinstance(env, Env)
    assert env.spec.obs == {"state": ArraySpec((2,), "float32"), "image": ArraySpec((32, 32, 3), "uint8")}
    starts = episode_starts(store, ["state", "image"])
    first = env.reset(seed=3)
    assert any(all(np.array_equal(first[k], s[k]) for k in s) for s in starts), "episodes start from real frames"
    actions = [np.array([0.1 * i, 0.5], np.float32) for i in range(5)]
    trajectory = []
    for i, action in enumerate(actions):
        obs, reward, done, info = env.step(action)
        env.spec.check_obs(obs)  # decoded observations carry the task's keys, shapes and dtypes
        assert isinstance(reward, float) and isinstance(info["success"], bool) and obs.timestamp == (i + 1) / 10
        assert done == (i == 4), "done exactly at max_episode_steps"
        trajectory.append(obs)
    assert info["truncated"] and not info["success"]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(actions[0])
    assert env.render().shape == (32, 32, 3) and env.render().dtype == np.uint8
    # the same seed replays the same episode exactly
    again = env.reset(seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    for action, before in zip(actions, trajectory):
        obs = env.step(action)[0]
        assert all(np.array_equal(obs[k], before[k]) for k in obs)
    assert len({env.reset(seed=s)["state"].tobytes() for s in range(20)}) > 1, "seeds pick different starts"
    with pytest.raises(ValueError, match="action must be a finite vector of shape \\(2,\\)"):
        env.step(np.zeros(3))


def test_success_head_ends_the_episode(particle):
    model, store, _ = particle
    sure = copy.deepcopy(model)
    with torch.no_grad():
        sure.success_head[-1].bias.fill_(20.0)  # the head now says "success" for every step
    env = ImaginedEnv(sure, store, max_episode_steps=5)
    env.reset(seed=0)
    _, _, done, info = env.step(np.zeros(2, np.float32))
    assert done and info["success"] and info["success_prob"] > 0.99 and not info["truncated"]


def test_policies_run_in_imagination_through_the_loop_and_evaluate(particle):
    model, store, checkpoint = particle
    policy = tiny_diffusion(obs_dim=2).eval()  # observes "state" only; the runner passes just its keys
    envs = [ImaginedEnv(model, store, max_episode_steps=6, success_threshold=0.99) for _ in range(2)]
    results = ControlLoop(envs, PolicyRunner(policy, torch.Generator().manual_seed(0))).run([0, 1])
    assert [r.steps for r in results] == [6, 6]
    task = TaskConfig(name="particle_imagined", env="robolearn.eval.imagination:ImaginedEnv",
                      env_kwargs={"world_model": str(checkpoint), "initial_observations": str(store.path),
                                  "max_episode_steps": 6, "success_threshold": 0.99, "device": "cpu"},
                      obs_keys=["state"], dataset="", dataset_format="robolearn", dataset_url="", score_key="")
    report = evaluate(policy, task, n_episodes=3, n_envs=3, progress=False)
    assert report.n_episodes == 3 and report.mean_steps == 6.0


def test_bad_input_is_refused_clearly(particle, tmp_path):
    model, store, _ = particle
    spec = model.env_spec()
    wrong = dataclasses.replace(spec, obs={**spec.obs, "state": ArraySpec((3,), "float32")})
    with pytest.raises(ValueError, match="spec declares \\(3,\\) float32, the world model produces \\(2,\\) float32"):
        ImaginedEnv(model, store, spec=wrong)
    extra = dataclasses.replace(spec, obs={**spec.obs, "depth": ArraySpec((32, 32, 1), "uint8")})
    with pytest.raises(KeyError, match="'depth', which the world model does not predict"):
        ImaginedEnv(model, store, spec=extra)
    with pytest.raises(ValueError, match="initial observation 0 does not match"):
        ImaginedEnv(model, [{"state": np.zeros(2, np.float64), "image": np.zeros((32, 32, 3), np.uint8)}])
    unlabeled = linear_store(tmp_path / "u.zarr", 2, seed=0)
    with pytest.raises(ValueError, match="success_source='none'"):
        train_world_model(unlabeled, WorldModelConfig(obs_keys=["state"], steps=0))
    with pytest.raises(ValueError, match="obs_keys is empty"):
        train_world_model(unlabeled, WorldModelConfig(steps=0))


def test_shipped_config_builds():
    path = Path(__file__).resolve().parents[1] / "configs" / "world_model" / "latent.yaml"
    fields = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "name"}
    assert WorldModelConfig(**fields, obs_keys=["state"]).rollout_steps == 5
