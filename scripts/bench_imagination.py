"""Does success in a learned world model predict success in the simulator? A family of Lift policies, both ways.

One command; every stage reuses its output when it is there (--redo names stages to run again):

1. data: the clean and degraded Lift pools of scripts/bench_steering.py (collected if missing), one training store
   per degraded fraction f (the first round(N (1-f)) clean + the first round(N f) degraded episodes), the world
   model's training store (clean and degraded episodes except the last --holdout of each pool) and the held-out
   store (those last episodes);
2. policies: one per fraction, the demo recipe with a small step budget (plus any --extra checkpoints);
3. world model: robolearn.models.world_model on the training store only: no evaluation episode, no held-out
   episode and no rollout of an evaluated policy is in its data;
4. eval: each policy on seeds 100000.. in the simulator, and in ImaginedEnv started from the real initial
   observations of the same seeds (the simulator's reset(seed), read before any action), same episode count;
5. agreement: Pearson r, Spearman rho, MMRV, whether the best policy is ranked first; a plot; and the open-loop
   error of the imagined object position by horizon on the held-out episodes (their recorded actions).

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python scripts/bench_imagination.py --episodes 50

Writes <out>/results.json, docs/imagination_vs_sim.png (--plot) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from bench_steering import ROOT, ensure_collected, lift_task, mix_stores, start_run, success_fraction, train_policy

from robolearn.data.obs_source import parse_obs_sources
from robolearn.data.store import EpisodeStore
from robolearn.eval.correlation import agreement
from robolearn.eval.imagination import ImaginedEnv
from robolearn.eval.rollout import evaluate
from robolearn.models.world_model import WorldModel, WorldModelConfig, load_world_model, save_world_model, train_world_model
from robolearn.policies.checkpoint import load_policy
from robolearn.task import TaskConfig

STAGES = ("data", "train", "world_model", "eval")
HORIZONS = (1, 5, 10, 20, 40)


# ---------------------------------------------------------------------------------------------- imagined task
class SeededImaginedEnv(ImaginedEnv):
    """ImaginedEnv whose reset(seed) starts from initial observation seed - start_seed: episode i of an imagined
    evaluation starts where episode i of the simulated one does (ImaginedEnv itself draws a start at random)."""

    def __init__(self, *args: Any, start_seed: int = 100_000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.start_seed = start_seed

    def reset(self, seed: int | None = None):
        if seed is None or not 0 <= seed - self.start_seed < len(self.initial):
            raise ValueError(f"seed {seed} has no recorded initial observation (seeds {self.start_seed}.."
                             f"{self.start_seed + len(self.initial) - 1})")
        first, self.initial = self.initial, [self.initial[seed - self.start_seed]]
        try:
            return super().reset(seed=0)  # one start to pick from: that one
        finally:
            self.initial = first


@dataclasses.dataclass
class ImaginedTask(TaskConfig):
    """A task whose env is a world model: `make_env` builds the imagined env directly (in this process)."""

    model: Any = None
    starts: Any = None
    start_seed: int = 100_000

    def make_env(self) -> SeededImaginedEnv:
        return SeededImaginedEnv(self.model, self.starts, start_seed=self.start_seed)


def real_initial_observations(task: TaskConfig, start_seed: int, n: int) -> list[dict[str, np.ndarray]]:
    """The simulator's first observation of episodes start_seed .. start_seed + n - 1, the task's keys only."""
    env = task.make_env()
    try:
        return [{k: np.asarray(v).copy() for k, v in env.reset(seed=start_seed + i).items() if k in task.obs_keys}
                for i in range(n)]
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------- world model
def record_rollouts(out: Path, family: list[dict[str, Any]], task: TaskConfig, n: int, args: argparse.Namespace,
                    redo: bool) -> EpisodeStore:
    """n simulator episodes of every family member, member j on seeds 200000 + 1000 j .., recorded into `out`
    (observations, actions, rewards, success): what the policies themselves do, for the world model to learn."""
    if out.exists() and not redo:
        store = EpisodeStore.open(out)
        if store.n_episodes >= n * len(family):
            return store
    if out.exists():
        import shutil

        shutil.rmtree(out)
    store = EpisodeStore.create(out, fps=20.0, task=task.name, attrs={"source": "rollouts of the policy family"})
    for j, member in enumerate(family):
        print(f"recording {n} rollouts of {member['name']}", flush=True)
        evaluate(load_policy(member["checkpoint"], device="cpu"), task, n_episodes=n, start_seed=200_000 + 1000 * j,
                 n_envs=args.n_envs, n_workers=args.n_workers, progress=False, record=store)
    return EpisodeStore.open(out)


def wm_config(task: TaskConfig, steps: int) -> WorldModelConfig:
    fields = yaml.safe_load((ROOT / "configs" / "world_model" / "latent.yaml").read_text())
    fields = {k: v for k, v in fields.items() if k != "name"}
    fields.update(obs_keys=list(task.obs_keys), obs_sources=dict(task.obs_sources), action_key=task.action_key,
                  steps=steps, device="cpu")
    return WorldModelConfig(**fields)


def ensure_world_model(path: Path, stores: list[EpisodeStore], config: WorldModelConfig,
                       redo: bool) -> tuple[WorldModel, dict[str, Any]]:
    info_path = path / "bench_world_model.json"
    if path.exists() and info_path.exists() and not redo:
        return load_world_model(path, device="cpu"), json.loads(info_path.read_text())
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    model = train_world_model(stores, config, history=history)
    info = {"steps": config.steps, "train_min": (time.perf_counter() - t0) / 60,
            "trained_on": [str(s.path) for s in stores], "episodes": sum(s.n_episodes for s in stores),
            "last_losses": history[-1] if history else {}}
    save_world_model(model, path, info=info)
    info_path.write_text(json.dumps(info, indent=2))
    return model, info


def open_loop_errors(model: WorldModel, store: EpisodeStore, task: TaskConfig, horizons=HORIZONS,
                     every: int = 10) -> dict[str, Any]:
    """Imagine each held-out episode open loop from real states t0 = 0, every, 2 every, ... under its recorded
    actions; mean absolute error (mm, over x, y, z) of the predicted cube and hand positions after k actions,
    against the real ones, and against a model that predicts no motion at all (the state at t0)."""
    sources = parse_obs_sources(list(task.obs_keys), dict(task.obs_sources))
    h_max = max(horizons)
    err = {name: {k: [] for k in horizons} for name in ("cube", "cube_no_motion", "hand", "hand_no_motion")}
    replay = []
    for i in range(store.n_episodes):
        ep = store.episode(i)
        obs = {key: source.apply(ep[source.key]) for key, source in sources.items()}
        actions = ep[task.action_key]
        n = len(actions)
        # open loop from the first frame to the end: does the model call the episode's outcome?
        out = model.imagine({k: v[:1] for k, v in obs.items()}, torch.as_tensor(actions[None]))
        # the cube's height at the last recorded frame (n - 1 actions in): lifted in a success, on the table if not
        z_pred, z_true = float(out["obs"]["object"][0, n - 2, 2]), float(obs["object"][n - 1, 2])
        replay.append({"success": bool(store.episode_meta(i)["success"]),
                       "imagined_success": bool((out["success"][0] >= model.config.success_threshold).any()),
                       "final_cube_rise_mm": 1000 * (z_true - float(obs["object"][0, 2])),
                       "final_cube_z_error_mm": 1000 * abs(z_pred - z_true)})
        for t0 in range(0, n - h_max, every):  # obs[t0 + k] exists for every k <= h_max
            out = model.imagine({k: v[t0:t0 + 1] for k, v in obs.items()}, torch.as_tensor(actions[None, t0:t0 + h_max]))
            for k in horizons:
                for name, key, part in (("cube", "object", slice(0, 3)), ("hand", "robot0_eef_pos", slice(0, 3))):
                    pred = out["obs"][key][0, k - 1, part].numpy()
                    true, start = obs[key][t0 + k, part], obs[key][t0, part]
                    err[name][k].append(float(np.abs(pred - true).mean()) * 1000)
                    err[f"{name}_no_motion"][k].append(float(np.abs(start - true).mean()) * 1000)
    table = {name: {str(k): float(np.mean(v)) if v else None for k, v in per.items()} for name, per in err.items()}
    agree = float(np.mean([r["success"] == r["imagined_success"] for r in replay]))
    final = {label: {"episodes": len(group), "cube_rise_mm": float(np.mean([r["final_cube_rise_mm"] for r in group])),
                     "cube_z_error_mm": float(np.mean([r["final_cube_z_error_mm"] for r in group]))}
             for label, group in (("success", [r for r in replay if r["success"]]),
                                  ("failure", [r for r in replay if not r["success"]])) if group}
    return {"mae_mm": table, "n_starts": len(err["cube"][horizons[0]]), "episodes": store.n_episodes,
            "replay_outcome_agreement": agree, "whole_episode_final_cube": final, "replay": replay}


# ---------------------------------------------------------------------------------------------- output
def plot(rows: list[dict[str, Any]], stats: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="y = x")
    for r in rows:
        ax.errorbar(r["sim"], r["imagined"], xerr=[[r["sim"] - r["sim_low"]], [r["sim_high"] - r["sim"]]],
                    yerr=[[r["imagined"] - r["imagined_low"]], [r["imagined_high"] - r["imagined"]]],
                    fmt="o", ms=5, capsize=2, color="tab:blue")
        label = r["name"].split(" % degraded")[0] + ("*" if "(" in r["name"] else "") if "% degraded" in r["name"] \
            else r["name"]
        ax.annotate(label, (r["sim"], r["imagined"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("success in the simulator\n(labels: % degraded training episodes; *: 1,500 training steps)",
                  fontsize=8)
    ax.set_ylabel("success in imagination (world model)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"Lift, {len(rows)} policies: r = {stats['pearson']:.2f}, rho = {stats['spearman']:.2f}, "
                 f"MMRV = {stats['mmrv']:.2f}", fontsize=8)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def markdown(rows: list[dict[str, Any]], stats: dict[str, Any], errors: dict[str, Any]) -> str:
    lines = ["| policy | training data | steps | success in simulator [95 % CI] | success in imagination [95 % CI] |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['data']} | {r['train_steps']} | {r['sim']:.2f} [{r['sim_low']:.2f}, "
                     f"{r['sim_high']:.2f}] | {r['imagined']:.2f} [{r['imagined_low']:.2f}, {r['imagined_high']:.2f}] |")
    lines += ["", f"Pearson r = {stats['pearson']:.3f}, Spearman rho = {stats['spearman']:.3f}, "
                  f"MMRV = {stats['mmrv']:.3f}, best policy ranked first: {stats['best_ranked_first']}", "",
              "| open-loop horizon (steps) | " + " | ".join(str(k) for k in HORIZONS) + " |",
              "|---|" + "---|" * len(HORIZONS)]
    names = {"cube": "cube position, world model", "cube_no_motion": "cube position, 'nothing moves'",
             "hand": "hand position, world model", "hand_no_motion": "hand position, 'nothing moves'"}
    for key, label in names.items():
        values = errors["mae_mm"][key]
        lines.append(f"| {label} (mm) | " + " | ".join(f"{values[str(k)]:.1f}" for k in HORIZONS) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "exp6" / "imagination")
    p.add_argument("--episodes", type=int, default=50, help="episodes per policy, in the simulator and in imagination")
    p.add_argument("--start-seed", type=int, default=100_000)
    p.add_argument("--fractions", default="0,0.2,0.4,0.6,0.8,1.0", help="degraded fraction of each policy's data")
    p.add_argument("--store-episodes", type=int, default=100, help="episodes in each policy's training store")
    p.add_argument("--clean", type=Path, default=ROOT / "datasets" / "lift_scripted.episodes.zarr")
    p.add_argument("--degraded", type=Path, default=ROOT / "datasets" / "lift_degraded.episodes.zarr")
    p.add_argument("--data-dir", type=Path, default=ROOT / "datasets" / "exp6")
    p.add_argument("--holdout", type=int, default=10, help="last episodes of each pool kept from the world model")
    p.add_argument("--policy", default="flow", choices=("diffusion", "flow"))
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--train-overrides", nargs="*", default=["policy.num_inference_steps=4"])
    p.add_argument("--extra", nargs="*", default=[], help="NAME=CHECKPOINT: more policies for the family")
    p.add_argument("--wm-steps", type=int, default=10_000)
    p.add_argument("--rollout-episodes", type=int, default=0,
                   help="also train the world model on this many recorded rollouts of each family member "
                        "(seeds 200000 + 1000 j .., disjoint from the evaluation seeds)")
    p.add_argument("--n-envs", type=int, default=10)
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "imagination_vs_sim.png")
    p.add_argument("--redo", default="", help=f"comma list of stages to run again even if outputs exist: {STAGES}")
    args, redo, results_path, previous = start_run(p, argv, STAGES)
    task = lift_task()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    # 1. data
    n = args.store_episodes
    clean = ensure_collected(task, args.clean, n, "scripted", 0)
    degraded = ensure_collected(task, args.degraded, n, "degraded", 1000, {"failure": "early_close", "p": 1.0})
    fractions = [float(f) for f in args.fractions.split(",") if f]
    family_stores = {}
    for f in fractions:
        n_deg = int(round(n * f))
        family_stores[f] = mix_stores(args.data_dir / f"lift_degraded{int(round(100 * f)):03d}.episodes.zarr",
                                      [(clean, n - n_deg), (degraded, n_deg)], redo="data" in redo)
    keep = n - args.holdout
    wm_train = mix_stores(args.data_dir / "lift_wm_train.episodes.zarr", [(clean, keep), (degraded, keep)],
                          redo="data" in redo)
    held_out = mix_stores(args.data_dir / "lift_wm_heldout.episodes.zarr", [(clean, (keep, n)), (degraded, (keep, n))],
                          redo="data" in redo)
    results["data"] = {"family": {str(f): {"store": str(s.path), "episodes": s.n_episodes,
                                           "success_fraction": success_fraction(s)} for f, s in family_stores.items()},
                       "world_model_train": {"store": str(wm_train.path), "episodes": wm_train.n_episodes,
                                             "steps": wm_train.n_steps},
                       "held_out": {"store": str(held_out.path), "episodes": held_out.n_episodes}}

    # 2. the family
    family: list[dict[str, Any]] = []
    for f, store in family_stores.items():
        run_dir = args.out / f"policy_degraded{int(round(100 * f)):03d}"
        ckpt = run_dir / "checkpoints" / "last"
        if not ckpt.exists() or "train" in redo:
            print(f"training {args.policy} on {store.path.name} for {args.train_steps} steps", flush=True)
            train_policy(store.path, run_dir, args.policy, args.train_steps, extra=args.train_overrides)
        info = json.loads((run_dir / "bench_train.json").read_text())
        family.append({"name": f"{int(round(100 * f))} % degraded", "checkpoint": str(ckpt),
                       "data": f"{n - int(round(n * f))} clean + {int(round(n * f))} degraded",
                       "train_steps": info["steps"], "train_min": info["train_min"]})
    for item in args.extra:
        name, _, path = item.partition("=")
        family.append({"name": name, "checkpoint": path, "data": "see its run folder", "train_steps": "-"})

    # 3. world model: demonstrations (held-out episodes excluded), plus, with --rollout-episodes, the family's own
    # rollouts on seeds far from the evaluation's (200000 + 1000 j ..), never an evaluated episode
    wm_stores = [wm_train]
    if args.rollout_episodes:
        wm_stores.append(record_rollouts(args.data_dir / "lift_family_rollouts.episodes.zarr", family, task,
                                         args.rollout_episodes, args, redo="data" in redo))
        results["data"]["rollouts"] = {"store": str(wm_stores[-1].path), "episodes": wm_stores[-1].n_episodes,
                                       "success_fraction": success_fraction(wm_stores[-1])}
    model, wm_info = ensure_world_model(args.out / "world_model", wm_stores, wm_config(task, args.wm_steps),
                                        "world_model" in redo)
    results["world_model"] = wm_info
    errors = open_loop_errors(model, held_out, task)
    results["open_loop"] = errors
    print(f"open-loop cube error (mm) by horizon: {errors['mae_mm']['cube']}; replay outcome agreement "
          f"{errors['replay_outcome_agreement']:.2f}", flush=True)

    # 4. both evaluations, same seeds and starts
    starts = real_initial_observations(task, args.start_seed, args.episodes)
    imagined = ImaginedTask(name="lift_imagined", env="robolearn.eval.imagination:ImaginedEnv",
                            env_kwargs={}, obs_keys=list(task.obs_keys), obs_sources=dict(task.obs_sources),
                            score_key="", model=model, starts=starts, start_seed=args.start_seed)
    done = {r["name"]: r for r in previous.get("rows", []) if r.get("episodes") == args.episodes}
    if redo & {"data", "train", "world_model", "eval"}:
        done = {}
    rows = []
    for member in family:
        if member["name"] in done:
            rows.append(done[member["name"]])
            continue
        policy = load_policy(member["checkpoint"], device="cpu")
        print(f"evaluating {member['name']}", flush=True)
        sim = evaluate(policy, task, n_episodes=args.episodes, start_seed=args.start_seed, n_envs=args.n_envs,
                       n_workers=args.n_workers, progress=False)
        dream = evaluate(policy, imagined, n_episodes=args.episodes, start_seed=args.start_seed,
                         n_envs=args.episodes, n_workers=0, progress=False)
        row = {**member, "episodes": args.episodes, "sim": sim.success_rate, "sim_low": sim.success_low,
               "sim_high": sim.success_high, "sim_steps": sim.mean_steps, "sim_wall_s": sim.wall_s,
               "imagined": dream.success_rate, "imagined_low": dream.success_low, "imagined_high": dream.success_high,
               "imagined_steps": dream.mean_steps, "imagined_wall_s": dream.wall_s,
               "per_episode_agreement": float(np.mean([a["success"] == b["success"]
                                                       for a, b in zip(sim.episodes, dream.episodes)]))}
        print(f"  sim {row['sim']:.2f}  imagined {row['imagined']:.2f}  (same outcome in "
              f"{row['per_episode_agreement']:.0%} of episodes; {sim.wall_s:.0f} s vs {dream.wall_s:.0f} s)", flush=True)
        rows.append(row)
        results["rows"] = rows
        results_path.write_text(json.dumps(results, indent=2))

    # 5. agreement
    real, proxy = [r["sim"] for r in rows], [r["imagined"] for r in rows]
    a = agreement(real, proxy)
    best_real = max(real)
    stats = {"n_policies": a.n_policies, "pearson": a.pearson, "spearman": a.spearman, "mmrv": a.mmrv, "note": a.note,
             # the policy imagination ranks first is (one of) the best in the simulator
             "best_ranked_first": bool(real[int(np.argmax(proxy))] == best_real)}
    results["rows"], results["agreement"] = rows, stats
    results["plot"] = plot(rows, stats, args.plot)
    results["table"] = markdown(rows, stats, errors)
    results_path.write_text(json.dumps(results, indent=2))
    print(results["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
