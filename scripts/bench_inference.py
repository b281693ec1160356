"""Batch-1 inference latency per action chunk of a checkpoint, on one CPU thread (or the GPU if asked).

    .venv/bin/python scripts/bench_inference.py runs/pusht_state_cpu/checkpoints/last [--device cpu] [--repeats 30]

Prints, for each sampler setting the policy supports, the median and p90 time of one `act` call (one chunk)
and the network evaluations it takes. The observation is a real one from the task's env.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import robolearn
from robolearn.control.executor import PolicyRunner
from robolearn.policies.checkpoint import load_task


def settings(policy) -> list[tuple[str, dict]]:
    """Sampler variants worth timing for this head (its default first)."""
    if hasattr(policy, "schedulers"):
        return [("DDIM 10", {"scheduler": "ddim", "num_inference_steps": 10}), ("DDPM 100", {"scheduler": "ddpm"})]
    return [("default", {})]


def time_chunks(policy, history, kwargs, repeats: int) -> list[float]:
    obs = {k: torch.as_tensor(v, device=policy.device) for k, v in history.items()}
    gen = torch.Generator(device=policy.device).manual_seed(0)
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        policy.sample(obs, n=1, generator=gen, **kwargs)
        if policy.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up calls excluded
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = robolearn.load_policy(args.checkpoint, device=args.device)
    env = load_task(args.checkpoint).make_env()
    runner = PolicyRunner(policy)
    runner.reset([env.reset(seed=0)])
    print(f"{'sampler':<12} {'NFE':>5} {'median ms':>10} {'p90 ms':>8}   ({args.device}, {args.threads} thread(s), batch 1)")
    for name, kwargs in settings(policy):
        times = np.array(time_chunks(policy, runner.history, kwargs, args.repeats)) * 1000
        nfe = policy.nfe(**kwargs) if hasattr(policy, "nfe") else 1
        print(f"{name:<12} {nfe:>5} {np.median(times):>10.1f} {np.percentile(times, 90):>8.1f}")


if __name__ == "__main__":
    main()
