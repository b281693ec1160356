"""Training steps/s on the CPU, idle and next to one competing CPU-bound process, per thread policy.

Push-T state shapes (state 5, action 2, 2 observed frames, horizon 16), diffusion UNet [64, 128, 256], batch
256, AdamW; batches are gathered with numpy from a synthetic in-RAM store of Push-T's size (25,650 frames),
as the RAM-cached windows do. Each configuration runs in a fresh process (thread pools are sized at start).

    OMP_NUM_THREADS= .venv/bin/python scripts/bench_threads.py --steps 200
Thread policies: "default" (torch's own count), "1", "auto" (robolearn.device.choose_num_threads + ThreadGovernor).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import numpy as np, torch
from robolearn.device import ThreadGovernor, configure_cpu_runtime
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy

mode, steps = sys.argv[1], int(sys.argv[2])
configure_cpu_runtime()
governor = None
if mode == "auto":
    governor = ThreadGovernor(period_s=5.0)
elif mode != "default":
    torch.set_num_threads(int(mode))
torch.manual_seed(0)
cfg = DiffusionConfig(obs_shapes={"state": [5]}, action_dim=2, n_obs_steps=2, horizon=16, n_action_steps=8,
                      down_dims=[64, 128, 256])
policy = DiffusionPolicy(cfg)
rng = np.random.default_rng(0)
frames = 25_650
state = rng.uniform(0, 512, (frames, 5)).astype(np.float32)
action = rng.uniform(0, 512, (frames, 2)).astype(np.float32)
policy.normalizer.fit({"state": {"min": state.min(0), "max": state.max(0)},
                       "action": {"min": action.min(0), "max": action.max(0)}})
opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

def batch():
    start = rng.integers(0, frames - 16, 256)
    idx = start[:, None] + np.arange(16)[None]
    return {"obs": {"state": torch.from_numpy(state[idx[:, :2]])}, "action": torch.from_numpy(action[idx])}

def step():
    loss = policy.loss(batch())
    opt.zero_grad()
    loss.backward()
    opt.step()
    if governor is not None:
        governor.update()

for _ in range(5):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = time.perf_counter() - t0
print(json.dumps({"mode": mode, "steps_per_s": steps / dt, "threads": torch.get_num_threads(),
                  "changes": [] if governor is None else [c[1] for c in governor.changes]}))
"""


def run_child(mode: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps)], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--modes", default="default,1,auto")
    args = parser.parse_args()
    rows = []
    for competitor in (False, True):
        for mode in args.modes.split(","):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
            try:
                load = os.getloadavg()[0]
                result = run_child(mode, args.steps)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            rows.append({**result, "competitor": competitor, "load_before": load})
            print(json.dumps(rows[-1]), flush=True)
            time.sleep(2)
    idle = {r["mode"]: r["steps_per_s"] for r in rows if not r["competitor"]}
    print("\n| threads | competitor | steps/s | vs idle default | threads used |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {'one CPU-bound process' if r['competitor'] else 'none'} | {r['steps_per_s']:.2f} | "
              f"{r['steps_per_s'] / idle['default']:.2f}x | {r['threads']} |")


if __name__ == "__main__":
    main()
