"""Training on the shared Push-T exported to LeRobot and imported back gives the original's windows and loss curve.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_lerobot_training.py [--steps 200]

1. Exports the Push-T store with LeRobot's feature names (state -> observation.state, img -> observation.image,
   AV1 video) unless --lerobot names such a folder (scripts/check_lerobot_compat.py writes one).
2. Windows: every window of the state task (`pusht` on the original vs `pusht_lerobot` on the LeRobot folder:
   exactly equal) and of the image task (`pusht_image` vs `pusht_image_lerobot`: agent position and actions
   exactly equal, frames compared by PSNR).
3. Training: `robolearn train task=pusht dataset_path=<diffusion_policy zarr>` and `robolearn train
   task=pusht_lerobot dataset_path=<LeRobot folder>`, same seed and settings; the logged loss curves compared.
Imports go to a temporary $ROBOLEARN_DATA (each dataset is imported once, by the train command itself).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def train(task: str, dataset: Path, out: Path, steps: int, env: dict) -> tuple[list[float], float]:
    cmd = [str(ROOT / ".venv/bin/robolearn"), "train", f"task={task}", f"dataset_path={dataset}", f"out_dir={out}",
           f"train.steps={steps}", "train.log_every=10", "train.final_eval_episodes=0", "train.video_episodes=0",
           "train.seed=0", "train.num_threads=1", "train.device=cpu", "train.checkpoint_every=100000",
           "policy.down_dims=[64,128,256]", "train.lr=1e-3", "train.warmup_steps=50"]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in log if "loss" in r], time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/robolearn_lerobot_training"))
    parser.add_argument("--lerobot", type=Path, help="an existing LeRobot export of Push-T with LeRobot's names")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    from robolearn.config_files import compose
    from robolearn.data import sources
    from robolearn.data.formats.lerobot_export import export_lerobot
    from robolearn.data.windows import Windows, WindowSpec
    from robolearn.paths import dataset_search_dirs
    from robolearn.train import RunConfig

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ["ROBOLEARN_DATA"] = str(work / "datasets")
    source = next(d / "pusht_cchi_v7_replay.zarr" for d in dataset_search_dirs()
                  if (d / "pusht_cchi_v7_replay.zarr").exists() and d != work / "datasets")
    task = {name: RunConfig.from_dict(compose("train", [f"task={name}"])).task
            for name in ("pusht", "pusht_lerobot", "pusht_image", "pusht_image_lerobot")}
    original = sources.open_task_store(task["pusht"], source, progress=False)
    folder = args.lerobot or work / "pusht_lerobot"
    if not folder.exists():
        export_lerobot(original, folder, rename={"state": "observation.state", "img": "observation.image"},
                       progress=False)
    back = sources.open_task_store(task["pusht_lerobot"], folder, progress=False)
    result: dict = {"original": str(source), "lerobot": str(folder), "imported": str(back.path)}

    for kind, a, b, keys in (("state", "pusht", "pusht_lerobot", ("state",)),
                             ("image", "pusht_image", "pusht_image_lerobot", ("image", "agent_pos"))):
        spec = WindowSpec(keys, n_obs_steps=2, horizon=16, n_action_steps=8)
        wa = Windows(original, spec, obs_sources=task[a].obs_sources)
        wb = Windows(back, spec, obs_sources=task[b].obs_sources)
        same_index = np.array_equal(wa.index, wb.index)
        checks, image_psnr = {"index": same_index}, []
        for first in range(0, len(wa), 2048):
            idx = np.arange(first, min(len(wa), first + 2048))
            x, y = wa.gather(idx), wb.gather(idx)
            checks["action"] = checks.get("action", True) and np.array_equal(x["action"], y["action"])
            for key in keys:
                if key == "image":
                    image_psnr.append(np.mean((x["obs"][key].astype(np.float64) - y["obs"][key]) ** 2))
                else:
                    checks[key] = checks.get(key, True) and np.array_equal(x["obs"][key], y["obs"][key])
        entry = {"windows": len(wa), "exactly_equal": checks}
        if image_psnr:
            entry["image_psnr_db"] = round(float(10 * np.log10(255.0**2 / np.mean(image_psnr))), 2)
        result[f"{kind}_windows"] = entry
        print(kind, json.dumps(entry), flush=True)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours, t_ours = train("pusht", source, work / "run_zarr", args.steps, env)
    theirs, t_theirs = train("pusht_lerobot", folder, work / "run_lerobot", args.steps, env)
    result["training"] = {"steps": args.steps, "logged_losses": len(ours), "identical": ours == theirs,
                          "max_abs_difference": float(np.max(np.abs(np.array(ours) - np.array(theirs)))),
                          "first_last_zarr": [ours[0], ours[-1]], "first_last_lerobot": [theirs[0], theirs[-1]],
                          "seconds": [round(t_ours, 1), round(t_theirs, 1)]}
    print(json.dumps(result["training"]), flush=True)
    (work / "result.json").write_text(json.dumps(result, indent=1))
    ok = result["training"]["identical"] and all(all(result[f"{k}_windows"]["exactly_equal"].values())
                                                 for k in ("state", "image"))
    print("ALL CHECKS PASS" if ok else "SOME CHECK FAILED", f"(results in {work / 'result.json'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
