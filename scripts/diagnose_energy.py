"""Offline diagnosis of an energy-descent checkpoint on its own training windows: no rollouts, about a minute.

    .venv/bin/python scripts/diagnose_energy.py runs/heads/energy/checkpoints/last

Prints, in normalized action units (the box [-1, 1]):
- one descent step's MSE to the demonstrated chunk from starts that carry the target (demonstration + noise, as in
  training), that carry a wrong target (another window's demonstration + noise) and that carry none (noise, as at
  inference): a head that lands much closer from the first than from the last learned to denoise its start rather
  than to read the observation;
- from noise starts after 1, 2 and 4 steps: the MSE of each start, the spread between starts of one observation,
  and the roughness of the chunks (mean |second difference| over time) against the demonstrations': rough chunks
  are start noise the descent did not remove, and they make the robot jitter.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from robolearn.data.sources import open_task_store
from robolearn.data.windows import Windows, WindowSpec, to_tensors
from robolearn.policies.checkpoint import load_policy, load_task
from robolearn.policies.energy_descent import EnergyDescentPolicy


def roughness(chunks: torch.Tensor) -> float:
    """Mean |second difference| along the chunk's time axis (dim -2)."""
    return chunks.diff(n=2, dim=-2).abs().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--windows", type=int, default=256, help="training windows to diagnose on")
    parser.add_argument("--starts", type=int, default=8, help="noise starts per window")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if min(args.windows, args.starts, args.threads) < 1:
        parser.error("--windows, --starts and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    if not isinstance(policy, EnergyDescentPolicy):
        raise SystemExit(f"{args.checkpoint} holds a {type(policy).__name__}, not an energy-descent policy")
    policy.eval()
    task, cfg = load_task(args.checkpoint), policy.config
    windows = Windows(open_task_store(task), WindowSpec(tuple(task.obs_keys), cfg.n_obs_steps, cfg.horizon,
                                                        cfg.n_action_steps, task.action_key),
                      obs_sources=task.obs_sources)
    rng = np.random.default_rng(args.seed)
    batch = to_tensors(windows.gather(rng.choice(len(windows), min(args.windows, len(windows)), replace=False)))
    torch.manual_seed(args.seed)
    with torch.no_grad():
        cond, demo = policy.encode_batch(batch)
    other = demo[torch.randperm(len(demo))]

    def descend(starts: torch.Tensor, conds: torch.Tensor, target: torch.Tensor,
                steps: int) -> tuple[torch.Tensor, float]:
        """Where `steps` steps (no early stop) take the starts, and their MSE to the target."""
        chunks = policy.descend(conds, starts, steps=steps, early_stop_tol=0).chunks
        return chunks, (chunks - target).square().mean().item()

    print(f"{type(policy).__name__} ({cfg.backbone}), step size {policy.step_size.item():.3f}, "
          f"{len(demo)} windows, demonstrations' roughness {roughness(demo):.4f}")
    print("\none step from | MSE to the demonstration\n---|---")
    for sigma in (0.1, 0.5, 1.0):
        noise = sigma * torch.randn_like(demo)
        print(f"demonstration + {sigma} noise | {descend(demo + noise, cond, demo, 1)[1]:.4f}")
        print(f"other window's demonstration + {sigma} noise | {descend(other + noise, cond, demo, 1)[1]:.4f}")
    starts = policy.initial_noise(len(demo), args.starts).flatten(0, 1)  # row i * starts + j: start j of window i
    conds, targets = cond.repeat_interleave(args.starts, 0), demo.repeat_interleave(args.starts, 0)
    from_noise = {steps: descend(starts, conds, targets, steps) for steps in (1, 2, 4)}
    print(f"noise (inference) | {from_noise[1][1]:.4f}")

    print(f"\nfrom {args.starts} noise starts | MSE | spread between starts | roughness\n---|---|---|---")
    for steps, (chunks, mse) in from_noise.items():
        per_obs = chunks.unflatten(0, (len(demo), args.starts))
        print(f"{steps} step{'s' if steps > 1 else ''} | {mse:.4f} | {per_obs.std(dim=1).mean().item():.4f} | "
              f"{roughness(chunks):.4f}")


if __name__ == "__main__":
    main()
