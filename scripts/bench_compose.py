"""Composition at test time, two experiments (issue 17). Every convex weight on a grid is evaluated on the same
held-out seeds, and the weights a search picks on its own seeds (200000..) are reported on the held-out ones.

--task pusht (default), Push-T from state: two parents trained on different halves of the demonstrations, with
different heads (diffusion on the first half, flow on the second).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_compose.py --steps 3000 --episodes 100 --out runs/bench_compose

--task lift, robosuite Lift: parent A a flow policy on 200 clean scripted demonstrations
(datasets/lift_scripted.episodes.zarr, seeds 0..199), parent B a diffusion policy on the mixed-quality store of
scripts/bench_steering.py (datasets/lift_mixed.episodes.zarr: 100 clean + 100 from a degraded expert that closes
its gripper on air and never recovers); both with the demo recipe (configs/demo.yaml), --steps steps or
--max-minutes of training each. Missing stores are collected with bench_steering's helpers.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python scripts/bench_compose.py --task lift --steps 1000 \
        --episodes 100 --out runs/bench_compose_lift --plot docs/compose_lift.png

Rows: each parent, the 50/50 mix, the searched weights; a plot of success (and, on Push-T, coverage) against the
weight of one parent (--plot). Trained parents are reused when their checkpoint exists, so an interrupted run
resumes. Writes <out>/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import robolearn
from robolearn.config_files import compose, task_by_name
from robolearn.data.sources import open_task_store
from robolearn.data.store import EpisodeStore
from robolearn.eval.compose_search import search_weights, weight_grid
from robolearn.eval.latency import chunk_latency_ms, first_history
from robolearn.eval.rollout import evaluate
from robolearn.policies.checkpoint import read_record
from robolearn.policies.compose import ComposedPolicy
from robolearn.train import RunConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


def half_store(source: EpisodeStore, out: Path, first: bool) -> EpisodeStore:
    """The first or second half of the source's episodes as a store of its own."""
    if (out / "zarr.json").exists():
        return EpisodeStore.open(out)
    half = source.n_episodes // 2
    indices = range(half) if first else range(half, source.n_episodes)
    with EpisodeStore.build(out, fps=source.fps, task=source.task) as store:
        store.append_episodes(((source.episode(i), {"source_episode": i}) for i in indices), commit_every=50)
    return EpisodeStore.open(out)


def train_parent(head: str, store: EpisodeStore, out: Path, args: argparse.Namespace) -> Path:
    checkpoint = out / "checkpoints" / "last"
    if (checkpoint / "policy.json").exists() and read_record(checkpoint)["info"].get("step") == args.steps:
        return checkpoint
    overrides = ["task=pusht", f"policy={head}", f"out_dir={out}", f"train.steps={args.steps}", f"train.lr={args.lr}",
                 f"train.batch_size={args.batch_size}", "train.final_eval_episodes=0", f"train.seed={args.seed}",
                 f"train.num_threads={args.threads}", f"policy.down_dims={args.down_dims}"]
    Trainer(RunConfig.from_dict(compose("train", overrides)), store=store).fit()
    return checkpoint


def pusht_parents(args: argparse.Namespace, out: Path) -> tuple[object, list, list[str], dict]:
    task = task_by_name("pusht")
    full = open_task_store(task, progress=True)
    halves = [half_store(full, out / "half_a.episodes.zarr", True), half_store(full, out / "half_b.episodes.zarr", False)]
    t0 = time.perf_counter()
    parents = [robolearn.load_policy(train_parent(head, store, out / f"parent_{head}", args), device="cpu")
               for head, store in zip(("diffusion", "flow"), halves)]
    return task, parents, ["diffusion, first half", "flow, second half"], {"both": (time.perf_counter() - t0) / 60}


def lift_parents(args: argparse.Namespace, out: Path) -> tuple[object, list, list[str], dict]:
    """Lift data and training come from scripts/bench_steering.py (same stores, same demo recipe)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package
    from bench_steering import ensure_collected, lift_task, mix_stores, train_policy

    task = lift_task()
    clean = ensure_collected(task, args.clean, 200, "scripted", 0)
    degraded = ensure_collected(task, args.degraded, 100, "degraded", 1000, {"failure": "early_close", "p": 1.0})
    mix_stores(args.mixed, [(clean, 100), (degraded, 100)])
    parents, info = [], {}
    for name, store, head in (("parent_a_flow_clean", args.clean, "flow"),
                              ("parent_b_diffusion_mixed", args.mixed, "diffusion")):
        run_dir = out / name
        if not (run_dir / "bench_train.json").exists():
            print(f"training {head} on {store} -> {run_dir}", flush=True)
            train_policy(store, run_dir, head, args.steps, seed=args.seed,
                         extra=[f"train.time_budget_min={args.max_minutes}", f"train.lr={args.lr}",
                                f"train.batch_size={args.batch_size}", f"policy.down_dims={args.down_dims}"])
        info[name] = json.loads((run_dir / "bench_train.json").read_text())
        parents.append(robolearn.load_policy(run_dir / "checkpoints" / "last", device="cpu"))
    return task, parents, ["flow, 200 clean demos", "diffusion, 100 clean + 100 degraded"], info


def row(name: str, policy, task, args) -> dict:
    report = evaluate(policy, task, n_episodes=args.episodes, n_envs=args.n_envs, progress=False)
    latency = float(np.median(chunk_latency_ms(policy, first_history(policy, task), repeats=20)))
    return {"name": name, "success": report.success_rate, "success_ci": [report.success_low, report.success_high],
            "coverage": report.score_mean, "coverage_ci": [report.score_low, report.score_high],
            "mean_steps": report.mean_steps, "eval_wall_s": report.wall_s, "latency_ms": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("pusht", "lift"), default="pusht")
    parser.add_argument("--steps", type=int, help="training steps per parent (default: 3000 pusht, 1000 lift)")
    parser.add_argument("--max-minutes", type=float, default=12.0, help="lift: training time cap per parent")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--down-dims", default="[64,128,256]")
    parser.add_argument("--episodes", type=int, default=100, help="held-out episodes per row (seeds 100000..)")
    parser.add_argument("--n-envs", type=int, help="envs stepped together in this process (default: 50 pusht, "
                                                   "10 lift)")
    parser.add_argument("--resolution", type=int, default=4, help="weight grid step 1/RESOLUTION")
    parser.add_argument("--search-episodes", type=int, default=20, help="episodes per grid point on the search seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_compose")
    parser.add_argument("--clean", type=Path, default=ROOT / "datasets" / "lift_scripted.episodes.zarr")
    parser.add_argument("--degraded", type=Path, default=ROOT / "datasets" / "lift_degraded.episodes.zarr")
    parser.add_argument("--mixed", type=Path, default=ROOT / "datasets" / "lift_mixed.episodes.zarr")
    parser.add_argument("--plot", type=Path, help="write the success(/coverage)-vs-weight plot here (.png)")
    args = parser.parse_args()
    lift = args.task == "lift"
    args.steps = args.steps or (1000 if lift else 3000)
    args.n_envs = args.n_envs or (10 if lift else min(50, args.episodes))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    task, parents, labels, train_info = (lift_parents if lift else pusht_parents)(args, out)
    t_eval = time.perf_counter()
    heads = [label.split(",")[0] for label in labels]
    rows, sweep = [], []
    if lift:  # the parent rows first; a weight of 1 on one parent runs that parent's own sampler, so they are the
        # sweep's end points (a composition of one parent reproduces its samples from the same noise, tested)
        rows += [row(f"parent A: {labels[0]}", parents[0], task, args),
                 row(f"parent B: {labels[1]}", parents[1], task, args)]
        print(json.dumps(rows), flush=True)
    for weights in weight_grid(2, args.resolution):
        name = f"w = {weights[0]:.2f} {heads[0]} / {weights[1]:.2f} {heads[1]}"
        if lift and max(weights) == 1.0:
            result = rows[0 if weights[0] == 1.0 else 1] | {"name": name}
        else:
            result = row(name, ComposedPolicy(parents, weights), task, args)
        sweep.append({"weights": list(weights), **result})
        print(json.dumps(sweep[-1]), flush=True)
    if not lift:
        rows += [row(f"parent A: {labels[0]}", parents[0], task, args),
                 row(f"parent B: {labels[1]}", parents[1], task, args)]
    best, search = search_weights(parents, task, resolution=args.resolution, episodes=args.search_episodes,
                                  seed=200_000, reported_seeds=range(100_000, 100_000 + args.episodes),
                                  **({"n_envs": args.n_envs} if lift else {}))
    chosen = next(r for r in sweep if tuple(r["weights"]) == tuple(best))
    rows += [next(r for r in sweep if r["weights"] == [0.5, 0.5]) | {"name": "50/50 mix"},
             chosen | {"name": f"searched ({best[0]:.2f}/{best[1]:.2f}, chosen on seeds 200000..)"}]
    train_min = sum(i["wall_min"] for i in train_info.values()) if lift else train_info["both"]
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "train_minutes": train_min, "train": train_info,
               "eval_minutes": (time.perf_counter() - t_eval) / 60, "total_minutes": (time.perf_counter() - t_start) / 60,
               "rows": rows, "sweep": sweep,
               "search": [{"weights": list(r.weights), "success": r.success_rate, "score": r.score} for r in search]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{args.episodes} held-out episodes per row (seeds 100000..), parents {args.steps} steps each "
          f"({train_min:.1f} min to train both)\n")
    if lift:
        print("| row | success [95% CI] | mean episode steps | batch-1 latency |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['success']:.2f} [{r['success_ci'][0]:.2f}, {r['success_ci'][1]:.2f}] | "
                  f"{r['mean_steps']:.1f} | {r['latency_ms']:.1f} ms |")
    else:
        print("| row | success [95% CI] | mean max coverage [95% CI] | batch-1 latency |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['name']} | {r['success']:.2f} [{r['success_ci'][0]:.2f}, {r['success_ci'][1]:.2f}] | "
                  f"{r['coverage']:.3f} [{r['coverage_ci'][0]:.3f}, {r['coverage_ci'][1]:.3f}] | "
                  f"{r['latency_ms']:.1f} ms |")
    if args.plot:
        plot(sweep, args.plot, lift)


def plot(sweep: list[dict], path: Path, lift: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Push-T: against the flow parent's weight (B); Lift: against the clean-data parent's weight (A)
    w = np.array([r["weights"][0 if lift else 1] for r in sweep])
    order = np.argsort(w)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    keys = (("success", "success rate"),) if lift else (("success", "success rate"), ("coverage", "mean max coverage"))
    for key, label in keys:
        mid = np.array([r[key] for r in sweep])[order]
        ci = np.array([r[f"{key}_ci"] for r in sweep])[order]
        ax.plot(w[order], mid, marker="o", label=label)
        ax.fill_between(w[order], ci[:, 0], ci[:, 1], alpha=0.2)
    if lift:
        ax.set_xlabel("weight of the clean-data flow parent (1 - weight of the mixed-data one)")
        ax.set_ylim(0, 1.05)
        ax.set_title("Lift: composing a clean-data and a mixed-quality-data parent", fontsize=10)
    else:
        ax.set_xlabel("weight of the flow parent (1 - weight of the diffusion parent)")
        ax.set_ylim(0, 1)
        ax.set_title("Push-T state: composing two parents trained on different halves")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
