"""Training on a LeRobot dataset: `train task=pusht_lerobot dataset_path=<LeRobot folder>` imports it once and
trains; its windows equal the original store's (numbers exactly, camera frames within codec error) and, with the
same seed, the loss curve is the one training on the original store gives."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robolearn.cli import compose
from robolearn.data import sources
from robolearn.data.formats.lerobot_export import export_lerobot
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec
from robolearn.train import RunConfig, Trainer
from tests.helpers import TINY, synthetic_pusht_store
from tests.lerobot_fixtures import PSNR_FLOOR, frames, psnr

SETTINGS = ["train.steps=30", "train.batch_size=32", "train.lr=3e-3", "train.warmup_steps=2", "train.log_every=5",
            "train.checkpoint_every=1000", "train.final_eval_episodes=0", "train.video_episodes=0",
            "train.device=cpu", "train.seed=3", "train.prefetch=0",
            *(f"policy.{k}={json.dumps(v)}" for k, v in TINY.items())]


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """Imports go to tmp_path/datasets instead of the project's datasets/."""
    monkeypatch.setenv("ROBOLEARN_DATA", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture()
def exported(tmp_path):
    store = synthetic_pusht_store(tmp_path / "original.zarr", n_episodes=8, length=30)
    folder = export_lerobot(store, tmp_path / "pusht_lerobot", rename={"state": "observation.state"}, progress=False)
    return EpisodeStore.open(store.path), folder


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_train_on_a_lerobot_folder_imports_once_and_gives_the_original_loss_curve(tmp_path, isolated, exported,
                                                                                  monkeypatch):
    original, folder = exported
    lerobot_run = RunConfig.from_dict(compose("train", ["task=pusht_lerobot", f"dataset_path={folder}",
                                                        f"out_dir={tmp_path / 'from_lerobot'}", *SETTINGS]))
    assert lerobot_run.task.obs_sources == {"state": "observation.state"}
    Trainer(lerobot_run, progress=False).fit()
    imported = isolated / "pusht_lerobot.episodes.zarr"
    assert sorted(EpisodeStore.open(imported).keys) == ["action", "observation.state"]

    zarr_run = RunConfig.from_dict(compose("train", ["task=pusht", f"dataset_path={original.path}",
                                                     f"out_dir={tmp_path / 'from_store'}", *SETTINGS]))
    Trainer(zarr_run, progress=False).fit()
    a, b = _losses(tmp_path / "from_lerobot"), _losses(tmp_path / "from_store")
    assert len(a) == 6 and a == b  # same seed, same windows, same statistics: the same numbers, step for step
    assert a[-1] < a[0]

    def no_second_import(*args, **kwargs):
        raise AssertionError("imported again")

    monkeypatch.setattr("robolearn.data.formats.lerobot.import_lerobot", no_second_import)
    again = sources.open_task_store(lerobot_run.task, folder, progress=False)
    assert again.path == imported


def test_numeric_windows_are_exactly_the_original_ones(tmp_path, isolated, exported):
    original, folder = exported
    run = RunConfig.from_dict(compose("train", ["task=pusht_lerobot", f"dataset_path={folder}"]))
    imported = sources.open_task_store(run.task, folder, progress=False)
    spec = WindowSpec(("state",), n_obs_steps=2, horizon=16, n_action_steps=8)
    ours = Windows(original, spec)
    back = Windows(imported, spec, obs_sources=run.task.obs_sources)
    np.testing.assert_array_equal(ours.index, back.index)
    every = np.arange(len(ours))
    a, b = ours.gather(every), back.gather(every)
    assert a["obs"]["state"].dtype == b["obs"]["state"].dtype == np.float32
    np.testing.assert_array_equal(a["obs"]["state"], b["obs"]["state"])
    np.testing.assert_array_equal(a["action"], b["action"])


def test_image_windows_come_back_within_codec_error(tmp_path, isolated):
    rng = np.random.default_rng(0)
    with EpisodeStore.build(tmp_path / "cam.zarr", fps=10, task="pusht_image") as store:
        start = 0
        for n in (25, 18, 31):
            store.append_episode({"state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
                                  "action": rng.uniform(0, 512, (n, 2)).astype(np.float32),
                                  "img": frames(n, 96, 96, start)})
            start += n
    original = EpisodeStore.open(tmp_path / "cam.zarr")
    folder = export_lerobot(original, tmp_path / "cam_lerobot", progress=False,
                            rename={"state": "observation.state", "img": "observation.image"})
    run = RunConfig.from_dict(compose("train", ["task=pusht_image_lerobot", f"dataset_path={folder}"]))
    imported = sources.open_task_store(run.task, folder, progress=False)
    spec = WindowSpec(("image", "agent_pos"), n_obs_steps=2, horizon=16, n_action_steps=8)
    ours = Windows(original, spec, obs_sources={"image": "img", "agent_pos": "state[0:2]"})
    for cache in ("ram", "disk"):
        back = Windows(imported, spec, obs_sources=run.task.obs_sources, cache=cache)
        every = np.arange(len(ours))
        a, b = ours.gather(every), back.gather(every)
        np.testing.assert_array_equal(a["obs"]["agent_pos"], b["obs"]["agent_pos"])
        np.testing.assert_array_equal(a["action"], b["action"])
        assert b["obs"]["image"].dtype == np.uint8 and b["obs"]["image"].shape == a["obs"]["image"].shape
        assert psnr(a["obs"]["image"], b["obs"]["image"]) >= PSNR_FLOOR
        assert psnr(a["obs"]["image"][1:], b["obs"]["image"][:-1]) < PSNR_FLOOR  # a wrong window would fail
