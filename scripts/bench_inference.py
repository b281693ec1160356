"""Batch-1 inference latency per action chunk of a checkpoint, on one CPU thread (or the GPU if asked).

    .venv/bin/python scripts/bench_inference.py runs/pusht_state_cpu/checkpoints/last [--set scheduler=ddpm] ...

Prints the median and p90 time of one `act` call (one chunk) and the network evaluations it takes, for the
checkpoint's own sampler settings and for each `--set` variant. The observation is a real one from the task.
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
    parser.add_argument("checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                        help="a sampler variant to time, e.g. scheduler=ddpm (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = robolearn.load_policy(args.checkpoint, device=args.device)
    history = first_history(policy, load_task(args.checkpoint))
    base = policy.config
    print(f"{'setting':<32} {'NFE':>6} {'median ms':>10} {'p90 ms':>8}   ({args.device}, {args.threads} thread(s), batch 1)")
    for variant in ["", *args.set]:
        policy.config = with_overrides(base, [a for a in variant.split(",") if a])
        times = chunk_latency_ms(policy, history, args.repeats)
        print(f"{variant or 'checkpoint default':<32} {policy.nfe():>6} {np.median(times):>10.1f} {np.percentile(times, 90):>8.1f}")


if __name__ == "__main__":
    main()
