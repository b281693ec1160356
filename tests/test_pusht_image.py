"""Push-T from pixels on the shared Push-T dataset: observation sources (`image` <- `img`, `agent_pos` <-
`state[0:2]`) parse strictly, windows gather exactly the sliced store rows, build_policy takes shapes and
statistics from the sources, and a tiny image policy trains through Trainer and is evaluated in gym-pusht."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import robolearn
from robolearn.data.obs_source import ObsSource, parse_obs_source, parse_obs_sources
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec
from robolearn.env import ArraySpec
from robolearn.eval.rollout import evaluate
from robolearn.policies.checkpoint import load_task
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.task import TaskConfig
from robolearn.train import RunConfig, TrainConfig, Trainer, build_policy
from tests.helpers import TINY

TASK_YAML = Path(__file__).resolve().parents[1] / "configs" / "task" / "pusht_image.yaml"
TINY_IMAGE = {**TINY, "image_feature_dim": 16, "n_keypoints": 8}
SOURCES = {"image": "img", "agent_pos": "state[0:2]", "block": "state[2:5]"}
LENGTHS = [7, 3, 5]


def image_task(**changes) -> TaskConfig:
    """The pusht_image task exactly as its config file declares it."""
    return dataclasses.replace(TaskConfig(**yaml.safe_load(TASK_YAML.read_text())), **changes)


def image_store(path, lengths=LENGTHS, hw=(6, 5), seed: int = 0) -> EpisodeStore:
    """Store keys as in the Push-T release (img, state, action); every image's pixels and state column 0 hold
    the global step, so a gathered value tells which row it came from."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, fps=10)
    begin = 0
    for n in lengths:
        steps = np.arange(begin, begin + n)
        state = np.concatenate([steps[:, None], rng.uniform(0, 512, (n, 4))], axis=1).astype(np.float32)
        img = (steps[:, None, None, None] + rng.integers(0, 3, (n, *hw, 3))).astype(np.uint8)
        action = rng.uniform(0, 512, (n, 2)).astype(np.float32)
        store.append_episode({"img": img, "state": state, "action": action})
        begin += n
    return store


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,expected", [
    ("img", ObsSource("img")),
    ("state[0:2]", ObsSource("state", 0, 2)),
    ("state[2:]", ObsSource("state", 2, None)),
    ("state[:3]", ObsSource("state", None, 3)),
    ("observation.state[1:4]", ObsSource("observation.state", 1, 4)),
    ("  state[0:2] ", ObsSource("state", 0, 2)),
])
def test_parse_obs_source_accepts_keys_and_last_axis_slices(text, expected):
    source = parse_obs_source(text)
    assert source == expected
    assert parse_obs_source(str(source)) == source  # str() writes the form it was parsed from


@pytest.mark.parametrize("text", ["", "state[0:2", "state0:2]", "state[1]", "state[-1:2]", "state[0:2][0:1]",
                                  "state[a:b]", "sta te", "[0:2]", "state[0:2:1]"])
def test_parse_obs_source_rejects_bad_syntax(text):
    with pytest.raises(ValueError, match="bad observation source .*'state\\[0:2\\]'"):
        parse_obs_source(text)


def test_parse_obs_source_rejects_non_strings():
    with pytest.raises(TypeError, match="must be a string"):
        parse_obs_source(["state"])  # type: ignore[arg-type]


def test_source_specs_slice_the_last_axis_and_refuse_out_of_range_slices():
    state, img = ArraySpec((5,), "float32"), ArraySpec((96, 96, 3), "uint8")
    assert parse_obs_source("state[0:2]").spec(state) == ArraySpec((2,), "float32")
    assert parse_obs_source("state[3:]").spec(state) == ArraySpec((2,), "float32")
    assert parse_obs_source("img").spec(img) == img and parse_obs_source("img[0:1]").spec(img).is_image
    assert parse_obs_source("state[0:5]").spec(state) == state
    with pytest.raises(ValueError, match="stop 6 is out of range for 'state', whose last axis has 5 entries"):
        parse_obs_source("state[0:6]").spec(state)
    with pytest.raises(ValueError, match=r"slice \[3:3\] is empty"):
        parse_obs_source("state[3:3]").spec(state)
    with pytest.raises(ValueError, match=r"slice \[7:5\] is empty"):
        parse_obs_source("state[7:]").spec(state)
    with pytest.raises(ValueError, match="holds scalars"):
        parse_obs_source("reward[0:1]").spec(ArraySpec((), "float32"))


def test_task_config_checks_its_sources_when_built():
    task = image_task()
    assert parse_obs_sources(task.obs_keys, task.obs_sources) == {"image": ObsSource("img"),
                                                                   "agent_pos": ObsSource("state", 0, 2)}
    assert parse_obs_sources(["state"], {}) == {"state": ObsSource("state")}  # default: identity
    assert TaskConfig().obs_sources == {}
    with pytest.raises(ValueError, match=r"obs_sources names \['agent_position'\], which are not observed keys"):
        TaskConfig(obs_keys=["agent_pos"], obs_sources={"agent_position": "state[0:2]"})
    with pytest.raises(ValueError, match="bad observation source 'state\\[0-2\\]'"):
        TaskConfig(obs_keys=["agent_pos"], obs_sources={"agent_pos": "state[0-2]"})


# ---------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("cache", ["ram", "none"])
def test_windows_gather_the_sliced_source_rows_under_observation_names(tmp_path, cache):
    store = image_store(tmp_path / "store.zarr")
    spec = WindowSpec(obs_keys=("image", "agent_pos", "block"), n_obs_steps=2, horizon=4, n_action_steps=2)
    windows = Windows(store, spec, cache=cache, obs_sources=SOURCES)
    img, state, action = store.read("img"), store.read("state"), store.read("action")
    idx = np.arange(len(windows))
    batch = windows.gather(idx)
    assert set(batch["obs"]) == {"image", "agent_pos", "block"}
    # manual indexing: each window's steps, edge-padded inside its episode
    rows = np.array([[min(max(start + t, begin), end - 1) for t in range(spec.n_obs_steps)]
                     for start, begin, end in windows.index])
    assert batch["obs"]["image"].dtype == np.uint8 and batch["obs"]["image"].shape == (len(idx), 2, 6, 5, 3)
    np.testing.assert_array_equal(batch["obs"]["image"], img[rows])
    assert batch["obs"]["agent_pos"].dtype == np.float32 and batch["obs"]["agent_pos"].shape == (len(idx), 2, 2)
    np.testing.assert_array_equal(batch["obs"]["agent_pos"], state[rows][..., 0:2])
    np.testing.assert_array_equal(batch["obs"]["block"], state[rows][..., 2:5])
    act_rows = np.array([[min(max(start + t, begin), end - 1) for t in range(spec.horizon)]
                         for start, begin, end in windows.index])
    np.testing.assert_array_equal(batch["action"], action[act_rows])
    tensors = next(windows.batches(4, np.random.default_rng(0)))
    assert tensors["obs"]["image"].dtype == torch.uint8 and tensors["obs"]["agent_pos"].dtype == torch.float32
    assert tensors["obs"]["agent_pos"].is_contiguous()


def test_windows_refuse_unknown_source_keys_and_out_of_range_slices(tmp_path):
    store = image_store(tmp_path / "store.zarr")
    spec = WindowSpec(obs_keys=("image", "agent_pos"), n_obs_steps=2, horizon=4, n_action_steps=2)
    with pytest.raises(KeyError, match="has no key 'pos' .*obs_sources"):
        Windows(store, spec, obs_sources={"image": "img", "agent_pos": "pos[0:2]"})
    with pytest.raises(ValueError, match="stop 9 is out of range"):
        Windows(store, spec, obs_sources={"image": "img", "agent_pos": "state[0:9]"})
    with pytest.raises(KeyError, match="has no key 'image'"):  # without sources the env's names are looked up
        Windows(store, spec)


# ---------------------------------------------------------------------------------------------- build_policy
def _run(task: TaskConfig, out_dir: Path | str = "unused", **train) -> RunConfig:
    return RunConfig(task=task, policy=dict(TINY_IMAGE), out_dir=str(out_dir),
                     train=TrainConfig(**{"device": "cpu", **train}))


def assert_agent_pos_normalized_by(policy: DiffusionPolicy, state: np.ndarray) -> None:
    """The agent_pos normalizer maps the min / max of state[:, :2] onto -1 / +1."""
    lo, hi = state[:, :2].min(axis=0), state[:, :2].max(axis=0)
    bounds = torch.as_tensor(np.stack([lo, hi]))
    np.testing.assert_allclose(policy.normalizer.normalize("agent_pos", bounds).numpy(), [[-1, -1], [1, 1]], atol=1e-5)


def test_build_policy_takes_shapes_and_statistics_from_the_sources(tmp_path):
    store = image_store(tmp_path / "store.zarr")
    task = image_task(obs_keys=["image", "agent_pos", "block"], obs_sources=SOURCES)
    policy = build_policy(_run(task), store)
    assert policy.config.obs_shapes == {"image": [6, 5, 3], "agent_pos": [2], "block": [3]}
    assert policy.config.image_keys == ["image"]
    assert_agent_pos_normalized_by(policy, store.read("state"))
    block = torch.as_tensor(store.read("state")[:, 2:5])
    normed = policy.normalizer.normalize("block", block)
    assert normed.min() == pytest.approx(-1, abs=1e-5) and normed.max() == pytest.approx(1, abs=1e-5)
    with pytest.raises(KeyError, match=r"lacks keys \['pos'\] that task 'pusht_image' needs"):
        build_policy(_run(image_task(obs_sources={"image": "img", "agent_pos": "pos"})), store)
    with pytest.raises(ValueError, match="stop 7 is out of range"):
        build_policy(_run(image_task(obs_sources={"image": "img", "agent_pos": "state[5:7]"})), store)


def test_build_policy_on_the_real_pusht_data_with_the_image_task(pusht_store):
    policy = build_policy(_run(image_task()), pusht_store)
    assert policy.config.obs_shapes == {"image": [96, 96, 3], "agent_pos": [2]}
    assert policy.config.image_keys == ["image"]
    assert_agent_pos_normalized_by(policy, pusht_store.read("state"))
    # and the training windows of the real store come out under the env's names, read from img and state
    spec = WindowSpec(obs_keys=("image", "agent_pos"), n_obs_steps=2, horizon=8, n_action_steps=4)
    windows = Windows(pusht_store, spec, cache="none", obs_sources=image_task().obs_sources)
    idx = np.array([0, 5000, len(windows) - 1])
    batch = windows.gather(idx)
    rows = np.clip(windows.index[idx, :1] + np.arange(2), windows.index[idx, 1:2], windows.index[idx, 2:3] - 1)
    np.testing.assert_array_equal(batch["obs"]["image"], pusht_store.read_rows("img", rows))
    np.testing.assert_array_equal(batch["obs"]["agent_pos"], pusht_store.read_rows("state", rows)[..., :2])


# ---------------------------------------------------------------------------------------------- train + eval
def test_tiny_image_policy_trains_and_its_checkpoint_runs_in_gym_pusht_pixels(tmp_path):
    store = image_store(tmp_path / "store.zarr", lengths=[12, 10], hw=(96, 96))  # the env renders 96x96
    task = image_task()
    trainer = Trainer(_run(task, tmp_path / "run", steps=3, batch_size=4, warmup_steps=1, log_every=1,
                           checkpoint_every=100, final_eval_episodes=0), store=store, progress=False)
    assert trainer.fit() is None and trainer.step == 3
    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    policy = robolearn.load_policy(checkpoint, device="cpu")
    assert policy.config.obs_shapes == {"image": [96, 96, 3], "agent_pos": [2]}
    assert (policy.config.image_feature_dim, policy.config.n_keypoints) == (16, 8)
    assert policy.obs_encoder.out_dim == TINY_IMAGE["n_obs_steps"] * (16 + 2)
    assert load_task(checkpoint) == task  # obs_sources travel with the checkpoint
    short = dataclasses.replace(task, env_kwargs={**task.env_kwargs, "max_episode_steps": 60})  # keeps the test fast
    report = evaluate(policy, short, n_episodes=2, n_envs=2, progress=False)
    assert report.task == "pusht_image" and report.n_episodes == 2 and len(report.episodes) == 2
    assert 0.0 <= report.success_rate <= 1.0 and 0.0 <= report.score_mean <= 1.0
    assert all(1 <= ep["steps"] <= 60 and 0.0 <= ep["max_coverage"] <= 1.0 for ep in report.episodes)
    assert np.isfinite(report.max_reward_mean) and report.inference_ms_per_chunk > 0


# ---------------------------------------------------------------------------------------------- image settings
def test_policy_config_image_settings_reach_the_encoder_and_are_validated():
    shapes = {"left": [32, 32, 3], "right": [32, 32, 3], "agent_pos": [2]}
    config = DiffusionConfig(obs_shapes=shapes, image_keys=["left", "right"], crop_ratio=0.75, image_feature_dim=12,
                             n_keypoints=4, share_image_encoder=True, **TINY)
    encoder = DiffusionPolicy(config).obs_encoder
    assert list(encoder.vision) == ["shared"] and encoder.out_dim == TINY["n_obs_steps"] * (12 + 12 + 2)
    vision = encoder.vision["shared"]
    assert vision.feature_dim == 12 and vision.keypoints.n_keypoints == 4 and vision.crop.crop_hw == (24, 24)
    for bad, match in [({"crop_ratio": 0.0}, "crop_ratio must be in"), ({"crop_ratio": 1.5}, "crop_ratio must be in"),
                       ({"image_feature_dim": 0}, "image_feature_dim"), ({"n_keypoints": 0}, "n_keypoints")]:
        with pytest.raises(ValueError, match=match):
            DiffusionConfig(obs_shapes=shapes, image_keys=["left"], **{**TINY, **bad})
    with pytest.raises(TypeError, match="share_image_encoder must be true or false"):
        DiffusionConfig(obs_shapes=shapes, share_image_encoder="yes", **TINY)  # type: ignore[arg-type]
