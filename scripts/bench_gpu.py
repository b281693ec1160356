"""GPU timings for docs/gpu.md (run by scripts/gpu_check.sh): training steps/s and batch-1 inference latency.

Training: Push-T state (batch 256) and image (96x96 camera + agent position, batch 64) shapes on synthetic
batches already on the GPU, diffusion UNet [256, 512, 1024] (the paper's) and [64, 128, 256] (ours), in fp32
eager, bf16 autocast, and bf16 + torch.compile. Inference: batch-1 `act` of Push-T state policies (paper-size
UNet) for DDIM-10, DDPM-100, flow 1/2/4 steps and the energy head's DFO, eager vs CUDA graph (median of 50).
Rows that would not fit the time budget are listed as skipped.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from robolearn.policies.ibc import IBCConfig, IBCPolicy

CUDA = torch.device("cuda")
PAPER, OURS = [256, 512, 1024], [64, 128, 256]
SHAPES = {"state": ({"state": [5]}, [], 256), "image": ({"image": [96, 96, 3], "agent_pos": [2]}, ["image"], 64)}


def fit(policy):
    stats = {k: {"min": np.zeros(s[-1]), "max": np.full(s[-1], 512.0)} for k, s in policy.config.obs_shapes.items()
             if k not in policy.config.image_keys}
    policy.normalizer.fit({**stats, "action": {"min": np.zeros(2), "max": np.full(2, 512.0)}})
    return policy.to(CUDA)


def batch(obs_shapes, image_keys, b):
    obs = {k: (torch.randint(0, 256, (b, 2, *s), dtype=torch.uint8) if k in image_keys else torch.rand(b, 2, *s) * 512)
           for k, s in obs_shapes.items()}
    return {"obs": {k: v.to(CUDA) for k, v in obs.items()}, "action": (torch.rand(b, 16, 2) * 512).to(CUDA)}


def train_rate(kind, dims, mode, steps=20):
    obs_shapes, image_keys, b = SHAPES[kind]
    policy = fit(DiffusionPolicy(DiffusionConfig(obs_shapes=obs_shapes, image_keys=image_keys, action_dim=2,
                                                 down_dims=dims))).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=True)
    loss_fn = torch.compile(policy.loss) if mode == "bf16+compile" else policy.loss
    data = batch(obs_shapes, image_keys, b)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "fp32"):
            loss = loss_fn(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0), warm


def latency_ms(policy, graphs, repeats=50):
    policy.compile_for_inference(graphs)
    obs = {"state": np.random.default_rng(0).uniform(0, 512, (1, 2, 5)).astype(np.float32)}
    gen = torch.Generator(device=CUDA).manual_seed(0)
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        policy.act(obs, generator=gen)  # returns numpy: synchronized
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def inference_rows():
    state = {"obs_shapes": {"state": [5]}, "action_dim": 2}
    diffusion = fit(DiffusionPolicy(DiffusionConfig(**state, down_dims=PAPER))).eval()
    flow = fit(FlowMatchingPolicy(FlowConfig(**state, down_dims=PAPER))).eval()
    energy = fit(IBCPolicy(IBCConfig(**state))).eval()
    rows = []
    for name, policy, cfg in [("DDIM 10", diffusion, {"scheduler": "ddim", "num_inference_steps": 10}),
                              ("DDPM 100", diffusion, {"scheduler": "ddpm"}),
                              ("flow 1 step", flow, {"num_inference_steps": 1}),
                              ("flow 2 steps", flow, {"num_inference_steps": 2}),
                              ("flow 4 steps", flow, {"num_inference_steps": 4}),
                              ("energy DFO 1024 x 3", energy, {})]:
        for k, v in cfg.items():
            setattr(policy.config, k, v)
        rows.append((name, latency_ms(policy, False), latency_ms(policy, True)))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/gpu.md")
    parser.add_argument("--budget-s", type=float, default=400)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    lines = [f"# GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}, numpy {np.__version__}", "",
             "## Batch-1 inference (Push-T state, UNet [256, 512, 1024]; energy: MLP 3x512), median ms per `act`", "",
             "| sampler | eager | CUDA graph | speed-up |", "|---|---|---|---|"]
    for name, eager, graph in inference_rows():
        lines.append(f"| {name} | {eager:.2f} | {graph:.2f} | {eager / graph:.1f}x |")
    lines += ["", "## Training steps/s (synthetic batches on the GPU; state batch 256, image batch 64)", "",
              "| task | UNet | fp32 eager | bf16 | bf16 + compile | compile warm-up s |", "|---|---|---|---|---|---|"]
    for kind in ("image", "state"):
        for dims in (PAPER, OURS):
            cells, warm = [], ""
            for mode in ("fp32", "bf16", "bf16+compile"):
                if time.perf_counter() - start > args.budget_s:
                    cells.append("skipped (time budget)")
                    continue
                rate, warm_s = train_rate(kind, dims, mode)
                cells.append(f"{rate:.1f}")
                warm = f"{warm_s:.0f}" if mode == "bf16+compile" else warm
                print(kind, dims, mode, rate, flush=True)
            lines.append(f"| {kind} | {dims} | {' | '.join(cells)} | {warm} |")
    lines += ["", f"Total {time.perf_counter() - start:.0f} s."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
