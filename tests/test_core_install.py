"""The core install (`pip install robolearn`, no extras) imports, trains, checkpoints and acts without any
simulator or heavy format library: a subprocess whose import system refuses them runs the whole path."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what the [sim], [formats] and [hardware] extras bring; none may be needed by the core
EXTRAS_ONLY = ["robosuite", "gym_pusht", "gymnasium", "mujoco", "h5py", "robomimic", "cv2", "pymunk", "pygame",
               "rtde_control", "dynamixel_sdk", "pyrealsense2", "pynput", "franky"]

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys
    BLOCKED = set(BLOCKED_LIST)

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not installed (blocked by the core-install test)", name=name)

    sys.meta_path.insert(0, Refuse())
    import numpy as np, torch
    torch.set_num_threads(1)
    from robolearn.control.chunking import ChunkExecution, make_runner
    from robolearn.data.store import EpisodeStore
    from robolearn.eval.statistics import wilson_interval
    from robolearn.policies.checkpoint import load_policy
    from robolearn.task import TaskConfig
    from robolearn.train.policy import RunConfig, TrainConfig, Trainer

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(out + "/demo.episodes.zarr", fps=10, task="pusht")
    t = np.arange(40, dtype=np.float64)[:, None]
    for _ in range(4):
        state = (rng.uniform(100, 300, 5) + t * rng.uniform(-4, 4, 5)).astype(np.float32)
        store.append_episode({"state": state, "action": (0.5 * state[:, :2]).astype(np.float32)}, source="synthetic")
    run = RunConfig(task=TaskConfig(), policy_class="flow",
                    policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 16},
                    train=TrainConfig(steps=3, batch_size=8, warmup_steps=1, device="cpu", final_eval_episodes=0,
                                      video_episodes=0, log_every=1, checkpoint_every=3),
                    out_dir=out + "/run")
    trainer = Trainer(run, store=store, progress=False)
    trainer.fit()
    policy = load_policy(out + "/run/checkpoints/last", device="cpu")
    runner = make_runner(policy, ChunkExecution(mode="receding"))
    runner.reset([{"state": np.full(5, 200.0, np.float32)}])
    action = runner.act()
    lo, hi = wilson_interval(3, 4)
    print(json.dumps({"steps": trainer.step, "action": action.tolist(), "interval": [lo, hi],
                      "leaked": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
""").replace("BLOCKED_LIST", repr(EXTRAS_ONLY))


def test_core_trains_checkpoints_and_acts_without_simulators_or_format_libraries(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3
    assert len(result["action"]) == 1 and len(result["action"][0]) == 2
    assert all(abs(a) < 1e4 for a in result["action"][0])  # an action in the data's units, finite
    assert 0.0 < result["interval"][0] < 0.75 < result["interval"][1] <= 1.0
    assert result["leaked"] == []
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_core_dependencies_leave_simulators_to_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("robosuite", "gym-pusht", "mujoco", "h5py", "robomimic", "opencv"):
        assert heavy not in core, heavy
    assert "numpy>=1.26,<3" in project["dependencies"]  # numpy 1.26 or 2.x
    extras = project["optional-dependencies"]
    assert "robosuite==1.5.2" in extras["sim"] and "numpy>=1.26,<2" in extras["sim"]  # robosuite's cap lives there
    assert any(d.startswith("h5py") for d in extras["formats"])
    assert {"sim", "formats", "hardware", "dev", "all"} <= set(extras)
