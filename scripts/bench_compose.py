"""Composition at test time on Push-T (state): two parents trained on different halves of the demonstrations, with
different heads (diffusion on the first half, flow on the second), then every convex weight on a grid evaluated on
the same held-out seeds, and the weights a search picks on its own seeds reported on the held-out ones.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_compose.py --steps 3000 --episodes 100 --out runs/bench_compose

Rows: each parent, the 50/50 mix, the searched weights; a plot of success and coverage against the weight of the
flow parent (docs/compose_pusht.png with --plot). Trained parents are reused when their checkpoint exists, so an
interrupted run resumes. Writes <out>/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
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


def row(name: str, policy, task, args) -> dict:
    report = evaluate(policy, task, n_episodes=args.episodes, n_envs=min(50, args.episodes), progress=False)
    latency = float(np.median(chunk_latency_ms(policy, first_history(policy, task), repeats=20)))
    return {"name": name, "success": report.success_rate, "success_ci": [report.success_low, report.success_high],
            "coverage": report.score_mean, "coverage_ci": [report.score_low, report.score_high],
            "latency_ms": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--down-dims", default="[64,128,256]")
    parser.add_argument("--episodes", type=int, default=100, help="held-out episodes per row (seeds 100000..)")
    parser.add_argument("--resolution", type=int, default=4, help="weight grid step 1/RESOLUTION")
    parser.add_argument("--search-episodes", type=int, default=20, help="episodes per grid point on the search seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_compose")
    parser.add_argument("--plot", type=Path, help="write the success/coverage-vs-weight plot here (.png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    task = task_by_name("pusht")
    full = open_task_store(task, progress=True)
    halves = [half_store(full, out / "half_a.episodes.zarr", True), half_store(full, out / "half_b.episodes.zarr", False)]
    t0 = time.perf_counter()
    parents = [robolearn.load_policy(train_parent(head, store, out / f"parent_{head}", args), device="cpu")
               for head, store in zip(("diffusion", "flow"), halves)]
    train_min = (time.perf_counter() - t0) / 60
    rows, sweep = [], []
    for weights in weight_grid(2, args.resolution):
        result = row(f"w = {weights[0]:.2f} diffusion / {weights[1]:.2f} flow", ComposedPolicy(parents, weights), task,
                     args)
        sweep.append({"weights": list(weights), **result})
        print(json.dumps(sweep[-1]), flush=True)
    rows += [row("parent A: diffusion, first half", parents[0], task, args),
             row("parent B: flow, second half", parents[1], task, args)]
    best, search = search_weights(parents, task, resolution=args.resolution, episodes=args.search_episodes,
                                  seed=200_000, reported_seeds=range(100_000, 100_000 + args.episodes))
    chosen = next(r for r in sweep if tuple(r["weights"]) == tuple(best))
    rows += [next(r for r in sweep if r["weights"] == [0.5, 0.5]) | {"name": "50/50 mix"},
             chosen | {"name": f"searched ({best[0]:.2f}/{best[1]:.2f}, chosen on seeds 200000..)"}]
    results = {"args": vars(args) | {"plot": str(args.plot) if args.plot else None}, "train_minutes": train_min,
               "rows": rows, "sweep": sweep,
               "search": [{"weights": list(r.weights), "success": r.success_rate, "coverage": r.score} for r in search]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{args.episodes} held-out episodes per row (seeds 100000..), parents {args.steps} steps each "
          f"({train_min:.1f} min to train both)\n")
    print("| row | success [95% CI] | mean max coverage [95% CI] | batch-1 latency |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['success']:.2f} [{r['success_ci'][0]:.2f}, {r['success_ci'][1]:.2f}] | "
              f"{r['coverage']:.3f} [{r['coverage_ci'][0]:.3f}, {r['coverage_ci'][1]:.3f}] | {r['latency_ms']:.1f} ms |")
    if args.plot:
        plot(sweep, args.plot)


def plot(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.array([r["weights"][1] for r in sweep])
    order = np.argsort(w)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key, label in (("success", "success rate"), ("coverage", "mean max coverage")):
        mid = np.array([r[key] for r in sweep])[order]
        ci = np.array([r[f"{key}_ci"] for r in sweep])[order]
        ax.plot(w[order], mid, marker="o", label=label)
        ax.fill_between(w[order], ci[:, 0], ci[:, 1], alpha=0.2)
    ax.set_xlabel("weight of the flow parent (1 - weight of the diffusion parent)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Push-T state: composing two parents trained on different halves")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
