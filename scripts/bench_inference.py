"""Batch-1 inference latency per action chunk of checkpoints and sampler variants, on one CPU thread (or the GPU).

    .venv/bin/python scripts/bench_inference.py runs/a/checkpoints/last runs/a/checkpoints/last@scheduler=ddpm \
        runs/b/checkpoints/last@descent_steps=1,num_starts=1

Each row is CHECKPOINT[@FIELD=VALUE,...]: the checkpoint with its own sampler settings, or with those fields
overridden. Rows are timed in interleaved rounds, so a machine whose load drifts slows every row alike and the
ratios to the first row stay fair. Prints the median and p90 time of one `act` call (one chunk), the network
evaluations it takes and the speed-up over the first row. The observation is a real one from each row's task.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import robolearn
from robolearn.cli import with_overrides
from robolearn.eval.latency import chunk_latency_ms, first_history
from robolearn.policies.checkpoint import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", metavar="CHECKPOINT[@FIELD=VALUE,...]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policies, histories = [], []
    for row in args.rows:
        checkpoint, _, overrides = row.partition("@")
        policy = robolearn.load_policy(checkpoint, device=args.device)
        policy.config = with_overrides(policy.config, [o for o in overrides.split(",") if o])
        policies.append(policy)
        histories.append(first_history(policy, load_task(checkpoint)))
    per_round = max(1, args.repeats // args.rounds)
    times = [[] for _ in args.rows]
    for _ in range(args.rounds):
        for policy, history, row_times in zip(policies, histories, times):
            row_times.extend(chunk_latency_ms(policy, history, per_round, warmup=1))
    print(f"{'row':<60} {'NFE':>4} {'median ms':>10} {'p90 ms':>8} {'speed-up':>9}   "
          f"({args.device}, {args.threads} thread(s), batch 1)")
    reference = np.median(times[0])
    for row, policy, row_times in zip(args.rows, policies, times):
        median = np.median(row_times)
        print(f"{row:<60} {policy.nfe():>4} {median:>10.1f} {np.percentile(row_times, 90):>8.1f} "
              f"{reference / median:>8.2f}x")


if __name__ == "__main__":
    main()
