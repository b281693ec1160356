"""Head-to-head of the policy heads on one task: same data, same training steps, same evaluation seeds.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_heads.py --steps 8000 --episodes 100 --out runs/heads

Each run trains a head from its config (configs/policy/<group>.yaml, RUNS below) with the shared overrides, then every
sampler variant of it is evaluated on the same seeds and timed at batch 1 on one CPU thread. Prints a Markdown
table and writes `<out>/results.json`. Runs whose checkpoint in `<out>/<run>` has reached `--steps` are not retrained,
and an interrupted run continues from its last checkpoint, so delete the folder before rerunning with other settings.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import robolearn
from robolearn.cli import compose, with_overrides
from robolearn.eval.latency import chunk_latency_ms, first_history
from robolearn.eval.rollout import evaluate
from robolearn.policies.checkpoint import load_task, read_record
from robolearn.train import RunConfig, Trainer

# run -> (policy config group, its training overrides, sampler variants as FIELD=VALUE overrides of its config)
TRANSFORMER = ["policy.backbone=transformer", "policy.n_layer=4", "policy.n_emb=128"]
DESCENT = {f"descent {k}": [f"descent_steps={k}"] for k in (1, 2, 4)}
RUNS = {
    "diffusion": ("diffusion", [], {"DDIM 10": ["scheduler=ddim", "num_inference_steps=10"],
                                    "DDPM 100": ["scheduler=ddpm"]}),
    "flow": ("flow", [], {f"{k} step{'s' if k > 1 else ''}": ["integrator=euler", f"num_inference_steps={k}"]
                          for k in (1, 2, 4, 10)}),
    "energy": ("energy", [], DESCENT),
    "energy_ibc": ("energy_ibc", [], {"DFO 256x3": ["sampler=dfo", "dfo_samples=256"]}),
    "regression": ("regression", [], {"MSE": []}),
    "diffusion_transformer": ("diffusion", TRANSFORMER, {"DDIM 10": ["scheduler=ddim", "num_inference_steps=10"]}),
    "flow_transformer": ("flow", TRANSFORMER, {f"{k} steps": ["integrator=euler", f"num_inference_steps={k}"]
                                               for k in (2, 4, 10)}),
    "energy_transformer": ("energy", TRANSFORMER, DESCENT),
}
UNET_GROUPS = ("diffusion", "flow", "energy")


def train_head(run: str, args: argparse.Namespace) -> Path:
    out = Path(args.out) / run
    checkpoint = out / "checkpoints" / "last"
    if (checkpoint / "policy.json").exists() and read_record(checkpoint)["info"].get("step") == args.steps:
        return checkpoint
    group, run_overrides, _ = RUNS[run]
    overrides = [f"task={args.task}", f"policy={group}", f"out_dir={out}", f"train.steps={args.steps}",
                 f"train.lr={args.lr}", f"train.batch_size={args.batch_size}", "train.final_eval_episodes=0",
                 f"train.num_threads={args.threads}", f"train.seed={args.seed}"]
    if group in UNET_GROUPS:
        overrides.append(f"policy.down_dims={args.down_dims}")
    overrides += run_overrides + args.train_overrides
    trainer = Trainer(RunConfig.from_dict(compose("train", overrides)))
    trainer.resume()  # an interrupted run continues from its last checkpoint (train.checkpoint_every)
    trainer.fit()
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pusht")
    parser.add_argument("--heads", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--down-dims", default="[64,128,256]", help="UNet widths of the UNet runs")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra hydra overrides for training, e.g. policy.n_negatives=63 (say so when reporting)")
    parser.add_argument("--out", default="runs/heads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = Path(args.out) / "results.json"
    # rows of heads not run this time are kept, so the table can be built up one head at a time
    rows = [r for r in json.loads(results.read_text()) if r["head"] not in args.heads] if results.exists() else []
    for head in args.heads:
        checkpoint = train_head(head, args)
        policy = robolearn.load_policy(checkpoint)
        info = read_record(checkpoint)["info"]
        task = load_task(checkpoint)
        history = first_history(policy, task)
        base = policy.config
        for name, overrides in RUNS[head][2].items():
            policy.config = with_overrides(base, overrides)
            report = evaluate(policy, task, n_episodes=args.episodes)
            latency = chunk_latency_ms(policy, history)
            rows.append({"head": head, "sampler": name, "train_steps": info["step"],
                         "train_min": info["train_seconds"] / 60, "nfe": policy.nfe(),
                         "latency_ms": float(np.median(latency)), **report.to_dict()})
            print(f"{head:<10} {name:<9} coverage {report.score_mean:.3f} success {report.success_rate:.2f}", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(rows, indent=2))

    print(f"\n{args.task}, {args.episodes} episodes each (seeds from 100000), {args.steps} training steps per head\n")
    print("| head | sampler | mean max coverage | success rate | train min | NFE | batch-1 ms/chunk |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['head']} | {r['sampler']} | {r['score_mean']:.3f} [{r['score_low']:.3f}, {r['score_high']:.3f}] | "
              f"{r['success_rate']:.2f} [{r['success_low']:.2f}, {r['success_high']:.2f}] | {r['train_min']:.1f} | "
              f"{r['nfe']} | {r['latency_ms']:.1f} |")


if __name__ == "__main__":
    main()
