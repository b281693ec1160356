"""Simulation throughput on a robosuite task: raw robosuite vs our adapter, serial vs batched vs worker evaluation.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python scripts/bench_vector_env.py runs/demo_lift_diffusion/checkpoints/last

1. env steps/s with random actions: robosuite's own env (`robosuite.make`, same controller and settings, stepped
   directly) against our `RobosuiteEnv` adapter around it (spec-typed observations, success, step counting);
2. evaluation episodes/min of a checkpoint on the same seeds, three ways:
   - serial: one env, one batch-1 policy call per replanning step (the loop robomimic and most scripts run);
   - batched: `--n-envs` envs in this process, one batched policy call for all of them;
   - workers: the same envs in `--n-workers` spawned worker processes that step in parallel (SubprocVectorEnv).
Prints a table and writes it as JSON next to the checkpoint unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from robolearn.eval.rollout import evaluate
from robolearn.policies.checkpoint import load_policy, load_task
from robolearn.sim.robosuite_env import TASKS, RobosuiteEnv, _controller_config


def steps_per_second(step, reset, action_dim: int, n_steps: int, seed: int = 0) -> float:
    """Steps/s of `step(action)` with uniform random actions, resetting every 200 steps (outside the timing)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(n_steps, action_dim)).astype(np.float32)
    elapsed = 0.0
    for first in range(0, n_steps, 200):
        reset()
        t0 = time.perf_counter()
        for a in actions[first:first + 200]:
            step(a)
        elapsed += time.perf_counter() - t0
    return n_steps / elapsed


def raw_vs_adapter(task: str, n_steps: int) -> dict[str, float]:
    import robosuite

    raw = robosuite.make(TASKS[task].robosuite_name, robots="Panda", controller_configs=_controller_config("delta"),
                         has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, use_object_obs=True,
                         control_freq=20, horizon=10**9, ignore_done=True, hard_reset=False, reward_shaping=False)
    ours = RobosuiteEnv(task=task)
    try:
        dim = ours.spec.action_dim
        return {"raw_robosuite_steps_per_s": steps_per_second(raw.step, raw.reset, dim, n_steps),
                "robolearn_adapter_steps_per_s": steps_per_second(ours.step, lambda: ours.reset(seed=0), dim, n_steps)}
    finally:
        raw.close()
        ours.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a robosuite task (e.g. the demo's)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--n-envs", type=int, default=10)
    parser.add_argument("--n-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--env-steps", type=int, default=2000, help="random-action steps timed per env type")
    parser.add_argument("--out", type=Path, help="JSON results (default: <checkpoint>/../bench_vector_env.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = load_task(args.checkpoint)
    env_task = task.env_kwargs.get("task", "lift")
    results: dict[str, object] = {"task": task.name, "episodes": args.episodes, "n_envs": args.n_envs,
                                  "n_workers": args.n_workers, "cpus": os.cpu_count()}
    results.update(raw_vs_adapter(env_task, args.env_steps))
    policy = load_policy(args.checkpoint, device="cpu")
    modes = {"serial (1 env, batch-1 policy)": dict(n_envs=1, n_workers=0),
             f"batched ({args.n_envs} envs in-process)": dict(n_envs=args.n_envs, n_workers=0),
             f"workers ({args.n_envs} envs, {args.n_workers} processes)": dict(n_envs=args.n_envs, n_workers=args.n_workers)}
    rows = []
    for name, kwargs in modes.items():
        report = evaluate(policy, task, n_episodes=args.episodes, progress=False, **kwargs)
        rows.append({"mode": name, "episodes_per_min": 60 * report.n_episodes / report.wall_s, "wall_s": report.wall_s,
                     "success_rate": report.success_rate, "mean_steps": report.mean_steps,
                     "env_steps_per_s": report.mean_steps * report.n_episodes / report.wall_s})
        print(f"{name:<40} {rows[-1]['episodes_per_min']:7.1f} episodes/min  success {report.success_rate:.2f}", flush=True)
    results["eval"] = rows

    print(f"\n{task.name}: raw robosuite {results['raw_robosuite_steps_per_s']:.0f} steps/s, robolearn adapter "
          f"{results['robolearn_adapter_steps_per_s']:.0f} steps/s (random actions, one env, one process)")
    print(f"{'evaluation mode':<40} {'episodes/min':>12} {'env steps/s':>11} {'success':>8}")
    for row in rows:
        print(f"{row['mode']:<40} {row['episodes_per_min']:>12.1f} {row['env_steps_per_s']:>11.0f} {row['success_rate']:>8.2f}")
    out = args.out or args.checkpoint.parent.parent / "bench_vector_env.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
