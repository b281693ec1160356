"""Value-guided steering on mixed-quality Lift: does a critic trained on the same data fix what the policy imitates?

One command runs the whole experiment; every stage reuses its output when it is already there (--redo names
stages to run again):

1. collect: clean scripted demos (datasets/lift_scripted.episodes.zarr, seeds 0..) and degraded ones
   (datasets/lift_degraded.episodes.zarr, seeds 1000..: the expert closes its gripper on air above the cube and
   never recovers), then the mixed store (datasets/lift_mixed.episodes.zarr: the first --n-clean + --n-degraded);
2. train: a policy on the mixed store with the demo recipe (configs/demo.yaml: UNet [64, 128, 256], lr 1e-3,
   1500 steps); flow matching sampled with 4 Euler steps by default, so that K=64 candidates stay affordable;
3. critic: an IQL critic (and an MC one with --mc) on the same store, sparse success reward, scoring the
   policy's executed chunk (action_steps = n_action_steps);
4. eval: plain policy, steered argmax with each K, optionally gradient guidance, on the same seeds 100000..;
   success with Wilson 95 % intervals, batch-1 latency per decision (sample + score, median), episodes/min.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python scripts/bench_steering.py --episodes 100 --out runs/exp6/steering

Writes <out>/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec
from robolearn.eval.rollout import evaluate
from robolearn.eval.steering import SteeredPolicy
from robolearn.models.critic import CriticConfig, load_critic, save_critic, train_critic
from robolearn.policies.base import Policy
from robolearn.policies.checkpoint import load_policy
from robolearn.task import TaskConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collect", "train", "critic", "eval")


# ---------------------------------------------------------------------------------------------- data
def lift_task() -> TaskConfig:
    from robolearn.config_files import task_by_name

    return task_by_name("lift")


def ensure_collected(task: TaskConfig, out: Path, n: int, expert: str, seed: int,
                     options: dict[str, Any] | None = None) -> EpisodeStore:
    """A store of at least n episodes of `expert`; an existing store that is long enough is only read."""
    from robolearn.sim.collect import collect

    if out.exists():
        store = EpisodeStore.open(out)
        if store.n_episodes >= n:
            return store
    print(f"collecting {n} {expert} episodes -> {out}", flush=True)
    return collect(task, n, out, expert=expert, seed_start=seed, progress=True, expert_options=options)


def _span(n: int | tuple[int, int]) -> range:
    return range(n) if isinstance(n, int) else range(*n)


def mix_stores(out: Path, parts: list[tuple[EpisodeStore, int | tuple[int, int]]], redo: bool = False) -> EpisodeStore:
    """A new store holding, for each (store, n), its first n episodes (or episodes start..stop-1 for n = (start,
    stop)), metadata kept plus the store they came from. Reused when it exists with the same recipe."""
    recipe = [{"store": str(store.path), "episodes": n if isinstance(n, int) else list(n)} for store, n in parts]
    if out.exists() and not redo:
        store = EpisodeStore.open(out)
        if store.attrs.get("mixed_from") == recipe:
            return store
        raise FileExistsError(f"{out} exists with another recipe ({store.attrs.get('mixed_from')}); pass --redo "
                              f"collect or choose another path")
    first = parts[0][0]
    for store, n in parts:
        if store.n_episodes < _span(n).stop:
            raise ValueError(f"{store.path} has {store.n_episodes} episodes, {_span(n).stop} were asked for")
    tmp = out.with_name(f".{out.name}.mixing")
    mixed = EpisodeStore.create(tmp, fps=first.fps, task=first.task, overwrite=True,
                                attrs={**first.attrs, "source": "mixed", "expert": "mixed", "mixed_from": recipe})
    for store, n in parts:
        mixed.append_episodes(((store.episode(i), {**store.episode_meta(i), "from": store.path.name})
                               for i in _span(n)), commit_every=25)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return EpisodeStore.open(out)


def success_fraction(store: EpisodeStore) -> float:
    return float(np.mean([bool(store.episode_meta(i).get("success")) for i in range(store.n_episodes)]))


# ---------------------------------------------------------------------------------------------- training
def train_policy(store: Path, run_dir: Path, policy: str, steps: int, seed: int = 0,
                 extra: list[str] | None = None) -> dict[str, Any]:
    """The demo recipe (configs/demo.yaml) on `store`; no evaluation (the benchmark does its own)."""
    from robolearn.cli import compose
    from robolearn.train import RunConfig, Trainer

    overrides = ["task=lift", f"policy={policy}", f"out_dir={run_dir}", f"dataset_path={store}",
                 f"train.steps={steps}", "train.time_budget_min=0", "train.final_eval_episodes=0", "train.num_threads=1",
                 f"train.seed={seed}", "train.checkpoint_every=100000", *(extra or [])]
    trainer = Trainer(RunConfig.from_dict(compose("demo", overrides)), progress=False)
    t0 = time.perf_counter()
    trainer.fit()
    info = {"steps": trainer.step, "train_min": trainer.train_seconds / 60, "wall_min": (time.perf_counter() - t0) / 60}
    (run_dir / "bench_train.json").write_text(json.dumps(info, indent=2))
    return info


def critic_config(method: str, action_steps: int, n_obs_steps: int, steps: int, task: TaskConfig) -> CriticConfig:
    fields = yaml.safe_load((ROOT / "configs" / "critic" / f"{method}.yaml").read_text())
    fields = {k: v for k, v in fields.items() if k != "name"}
    fields.update(reward_source="success", action_steps=action_steps, n_obs_steps=n_obs_steps, steps=steps,
                  device="cpu", obs_keys=list(task.obs_keys), obs_sources=dict(task.obs_sources),
                  action_key=task.action_key)
    return CriticConfig(**fields)


def ensure_critic(path: Path, store: EpisodeStore, config: CriticConfig, redo: bool) -> tuple[Any, dict[str, Any]]:
    info_path = path / "bench_critic.json"
    if path.exists() and info_path.exists() and not redo:
        return load_critic(path, device="cpu"), json.loads(info_path.read_text())
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    critic = train_critic(store, config, history=history)
    info = {"method": config.method, "steps": config.steps, "train_min": (time.perf_counter() - t0) / 60,
            "last_losses": history[-1] if history else {}}
    save_critic(critic, path, info=info)
    info_path.write_text(json.dumps(info, indent=2))
    return critic, info


def critic_ranking(critic: Any, store: EpisodeStore, policy: Policy, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """How well the critic separates the data's own chunks: mean Q over steps of successful vs failed episodes,
    and the AUC of Q for telling them apart (sanity check before spending evaluation time)."""
    cfg = critic.config
    spec = WindowSpec(tuple(cfg.obs_keys), cfg.n_obs_steps, cfg.n_obs_steps - 1 + cfg.action_steps, cfg.action_steps,
                      cfg.action_key)
    windows = Windows(store, spec, cache="none", obs_sources=cfg.obs_sources)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(windows), size=min(n, len(windows)), replace=False)
    batch = windows.gather(rows)
    obs = {k: torch.as_tensor(v) for k, v in batch["obs"].items()}
    chunks = torch.as_tensor(batch["action"][:, cfg.n_obs_steps - 1:])[:, None]
    with torch.no_grad():
        q = critic.score(obs, chunks)[:, 0].numpy()
    step = windows.index[rows, 0] + cfg.n_obs_steps - 1
    episode = np.searchsorted(store.episode_ends, step, side="right")
    ok = np.array([bool(store.episode_meta(int(e)).get("success")) for e in episode])
    pos, neg = q[ok], q[~ok]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    return {"q_success_mean": float(pos.mean()), "q_failure_mean": float(neg.mean()), "auc": auc}


# ---------------------------------------------------------------------------------------------- evaluation
def decision_latency_ms(policy: Policy, store: EpisodeStore, task: TaskConfig, calls: int = 20) -> float:
    """Median wall time of one batch-1 `act` (for a steered policy: K samples + K critic scores) on real
    observation histories from the store, after two warm-up calls."""
    cfg = policy.config
    spec = WindowSpec(tuple(task.obs_keys), cfg.n_obs_steps, cfg.n_obs_steps, 1, task.action_key)
    windows = Windows(store, spec, cache="none", obs_sources=task.obs_sources)
    rows = np.random.default_rng(0).choice(len(windows), size=calls + 2, replace=False)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i, row in enumerate(rows):
        obs = windows.gather(np.array([row]))["obs"]
        t0 = time.perf_counter()
        policy.act(obs, generator=gen)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def eval_row(name: str, policy: Policy, task: TaskConfig, store: EpisodeStore, args: argparse.Namespace,
             extra: dict[str, Any]) -> dict[str, Any]:
    print(f"evaluating {name} on {args.episodes} episodes", flush=True)
    report = evaluate(policy, task, n_episodes=args.episodes, n_envs=args.n_envs, n_workers=args.n_workers,
                      progress=False)
    row = {"name": name, **extra, "success_rate": report.success_rate, "success_low": report.success_low,
           "success_high": report.success_high, "mean_steps": report.mean_steps, "wall_s": report.wall_s,
           "episodes_per_min": 60 * report.n_episodes / report.wall_s,
           "batched_ms_per_call": report.inference_ms_per_chunk,
           "batch1_ms_per_decision": decision_latency_ms(policy, store, task),
           "n_episodes": report.n_episodes, "start_seed": report.start_seed,
           "successes": [e["success"] for e in report.episodes]}
    print(f"  {name}: success {row['success_rate']:.2f} [{row['success_low']:.2f}, {row['success_high']:.2f}], "
          f"{row['batch1_ms_per_decision']:.1f} ms/decision, {row['episodes_per_min']:.1f} episodes/min", flush=True)
    return row


def close_heights(policy: Policy, task: TaskConfig, n: int, start_seed: int = 100_000) -> list[dict[str, Any]]:
    """How the policy's episodes go wrong: for n batch-1 episodes (seeds start_seed..), success and the hand's
    height above the cube (cm) at the first close command. The degraded expert closes 4-7 cm above its grasp
    point, the clean one at it."""
    from robolearn.control.executor import PolicyRunner

    env = task.make_env()
    gen = torch.Generator().manual_seed(0)
    out = []
    try:
        for seed in range(start_seed, start_seed + n):
            obs = env.reset(seed=seed)
            runner = PolicyRunner(policy, generator=gen)
            runner.reset([obs])
            first, done, info = None, False, {}
            while not done:
                action = runner.act()[0]
                if action[-1] > 0 and first is None:
                    first = float(env.eef_pose()[0][2] - env.body_pose("cube_main")[0][2])
                obs, _, done, info = env.step(action)
                if not done:
                    runner.observe([obs])
            out.append({"seed": seed, "success": bool(info["success"]), "steps": int(info["steps"]),
                        "close_height_cm": None if first is None else round(100 * first, 1)})
    finally:
        env.close()
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| policy | critic | K | guidance | success rate [95 % CI] | batch-1 ms / decision | "
             "ms / batched call | episodes/min |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r.get('critic', '-')} | {r.get('k', '-')} | {r.get('guidance', 0) or '-'} | "
                     f"{r['success_rate']:.2f} [{r['success_low']:.2f}, {r['success_high']:.2f}] | "
                     f"{r['batch1_ms_per_decision']:.1f} | {r['batched_ms_per_call']:.1f} | "
                     f"{r['episodes_per_min']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def start_run(p: argparse.ArgumentParser, argv: list[str] | None,
              stages: tuple[str, ...]) -> tuple[argparse.Namespace, set[str], Path, dict[str, Any]]:
    """Parse a benchmark's arguments (it has --out and --redo); returns them, the stages to run again, where the
    results go and what an earlier run left there (reused stage by stage)."""
    args = p.parse_args(argv)
    redo = {s for s in args.redo.split(",") if s}
    if redo - set(stages):
        p.error(f"--redo takes stages from {stages}, got {sorted(redo - set(stages))}")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    return args, redo, results_path, previous


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "exp6" / "steering")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--ks", default="1,4,16,64", help="candidate counts K for steered argmax")
    p.add_argument("--clean", type=Path, default=ROOT / "datasets" / "lift_scripted.episodes.zarr")
    p.add_argument("--degraded", type=Path, default=ROOT / "datasets" / "lift_degraded.episodes.zarr")
    p.add_argument("--mixed", type=Path, default=ROOT / "datasets" / "lift_mixed.episodes.zarr")
    p.add_argument("--n-clean", type=int, default=100)
    p.add_argument("--n-degraded", type=int, default=100)
    p.add_argument("--failure", default="early_close", choices=("early_close", "release"))
    p.add_argument("--degraded-seed", type=int, default=1000, help="seed of the first degraded episode")
    p.add_argument("--policy", default="flow", choices=("diffusion", "flow"))
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument("--train-overrides", nargs="*", default=["policy.num_inference_steps=4"],
                   help="extra hydra overrides of the demo recipe (default: 4 sampling steps, cheap enough for K=64)")
    p.add_argument("--critic-steps", type=int, default=10000)
    p.add_argument("--mc", action="store_true", help="also steer with the Monte-Carlo critic (K=16)")
    p.add_argument("--guidance", type=float, nargs="*", default=[], help="also run gradient guidance (K=1) with these scales")
    p.add_argument("--n-envs", type=int, default=10)
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--redo", default="", help=f"comma list of stages to run again even if outputs exist: {STAGES}")
    p.add_argument("--skip-eval", action="store_true", help="stop after training the policy and critics")
    p.add_argument("--diagnose", type=int, default=0, metavar="N",
                   help="also run N batch-1 episodes of the plain policy and report where it first closes its gripper")
    args, redo, results_path, previous = start_run(p, argv, STAGES)
    task = lift_task()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    # 1. data
    clean = ensure_collected(task, args.clean, args.n_clean, "scripted", 0)
    degraded = ensure_collected(task, args.degraded, args.n_degraded, "degraded", args.degraded_seed,
                                {"failure": args.failure, "p": 1.0})
    mixed = mix_stores(args.mixed, [(clean, args.n_clean), (degraded, args.n_degraded)], redo="collect" in redo)
    results["data"] = {"store": str(mixed.path), "episodes": mixed.n_episodes, "steps": mixed.n_steps,
                       "success_fraction": success_fraction(mixed),
                       "clean_success_fraction": success_fraction(clean),
                       "degraded_success_fraction": success_fraction(degraded)}
    print(f"mixed store: {json.dumps(results['data'])}", flush=True)

    # 2. policy
    run_dir = args.out / f"policy_{args.policy}"
    ckpt = run_dir / "checkpoints" / "last"
    if not ckpt.exists() or "train" in redo:
        print(f"training {args.policy} for {args.train_steps} steps -> {run_dir}", flush=True)
        train_policy(args.mixed, run_dir, args.policy, args.train_steps, extra=args.train_overrides)
    results["policy"] = {"checkpoint": str(ckpt), **json.loads((run_dir / "bench_train.json").read_text())}
    policy = load_policy(ckpt, device="cpu")
    pc = policy.config

    # 3. critics
    critics = {}
    for method in ("iql", "mc") if args.mc else ("iql",):
        config = critic_config(method, pc.n_action_steps, min(2, pc.n_obs_steps), args.critic_steps, task)
        critic, info = ensure_critic(args.out / f"critic_{method}", mixed, config, "critic" in redo)
        info["ranking_on_data"] = critic_ranking(critic, mixed, policy)
        print(f"critic {method}: {json.dumps(info)}", flush=True)
        critics[method] = critic
        results[f"critic_{method}"] = info
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    if args.skip_eval:
        return 0

    # 4. evaluation, same seeds for every row; rows already measured with these settings are kept
    done = {r["name"]: r for r in previous.get("rows", []) if r.get("n_episodes") == args.episodes}
    if redo & {"collect", "train", "critic"}:
        done = {}  # new data, policy or critic: earlier rows measured something else
    rows: list[dict[str, Any]] = []

    def row(name: str, make_policy, extra: dict[str, Any]) -> None:
        if name in done and "eval" not in redo:
            rows.append(done[name])
        else:
            rows.append(eval_row(name, make_policy(), task, mixed, args, extra))
        results["rows"] = rows + [r for n, r in done.items() if n not in {x["name"] for x in rows}]
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    row("plain", lambda: policy, {})
    for k in [int(x) for x in args.ks.split(",") if x]:
        row(f"steered K={k}", lambda k=k: SteeredPolicy(policy, critics["iql"], k=k), {"critic": "iql", "k": k})
    if args.mc:
        row("steered K=16 (MC critic)", lambda: SteeredPolicy(policy, critics["mc"], k=16), {"critic": "mc", "k": 16})
    for scale in args.guidance:
        row(f"guided (scale {scale:g})", lambda s=scale: SteeredPolicy(policy, critics["iql"], k=1, guidance_scale=s),
            {"critic": "iql", "k": 1, "guidance": scale})
    rows = results["rows"]
    if args.diagnose:
        probe = close_heights(policy, task, args.diagnose)
        failed = [p["close_height_cm"] for p in probe if not p["success"] and p["close_height_cm"] is not None]
        ok = [p["close_height_cm"] for p in probe if p["success"] and p["close_height_cm"] is not None]
        results["plain_failure_probe"] = {"episodes": probe, "failed_close_height_cm": failed,
                                          "succeeded_close_height_cm": ok}
        print(f"plain policy, {len(probe)} batch-1 episodes: failures closed {failed} cm above the cube, "
              f"successes {ok} cm", flush=True)
    results["table"] = markdown(rows)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(results["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
