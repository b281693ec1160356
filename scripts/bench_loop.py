"""Control-loop timing on this machine: the real-time clock against plain `time.sleep` loops, and the
observation-to-command latency of asynchronous vs blocking inference.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_loop.py [--seconds 10] [--out runs/bench_loop.json]

1. Timing at 100 Hz and 500 Hz, `--seconds` each, three loops with the same (tiny) work per period:
   - robolearn: `ControlLoop` with a `RealTimeClock` (absolute schedule, sleep until 1 ms before the deadline,
     then spin) stepping an in-memory env;
   - sleep (absolute): `time.sleep(deadline - now)` on the same absolute schedule;
   - sleep (relative): `time.sleep(period)` after the work, the loop most scripts write (it drifts).
   Lateness is (time the command goes out) - (its deadline on the schedule started at the first tick); a missed
   period is a deadline that passed with no command. Reported: median, p99, missed fraction.
2. Latency at 20 Hz with a policy that takes 100 ms per chunk (horizon 16, 8 actions executed per chunk):
   blocking receding-horizon inference vs asynchronous real-time chunking (inference in a worker thread).
   Reported: observation-to-command latency (time from the newest observation to the command sent after it)
   median / p99 / max, missed periods, and the chunk latency measured by the async runner.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from robolearn.control.clock import RealTimeClock
from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.control.rtc import RealTimeChunkRunner
from robolearn.env import ArraySpec, EnvSpec, Observation
from robolearn.policies.base import Policy, PolicyConfig


class TimestampEnv:
    """An in-memory env: each observation carries the time it was taken; the command sent is kept."""

    def __init__(self, hz: float, steps: int):
        self.spec = EnvSpec(name="timing", obs={"x": ArraySpec((1,), "float32")}, action_dim=1, control_hz=hz,
                            action_meaning="ignored", max_episode_steps=steps)
        self.obs_times: list[float] = []

    def _observe(self) -> Observation:
        now = time.perf_counter()
        self.obs_times.append(now)
        return Observation({"x": np.zeros(1, np.float32)}, now)

    def reset(self, seed: int | None = None) -> Observation:
        self.obs_times = []
        return self._observe()

    def step(self, action: np.ndarray):
        return self._observe(), 0.0, False, {}

    def render(self) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)

    def close(self) -> None:
        self.obs_times = []


class ConstantRunner:
    """Zero-cost 'policy': isolates the loop's own timing."""

    n_inferences = 0

    def reset(self, observations) -> None:
        self.n = len(observations)

    def observe(self, observations) -> None:
        return None

    def act(self) -> np.ndarray:
        return np.zeros((self.n, 1), np.float32)


class SlowPolicy(Policy):
    """Takes `delay_s` per chunk, like a diffusion policy on a small CPU."""

    def __init__(self, delay_s: float):
        super().__init__(PolicyConfig(obs_shapes={"x": [1]}, action_dim=1, n_obs_steps=2, horizon=16, n_action_steps=8))
        self.delay_s = delay_s

    def loss(self, batch):
        return torch.zeros(())

    def sample(self, obs, n=1, generator=None):
        time.sleep(self.delay_s)
        return torch.zeros(obs["x"].shape[0], n, 16, 1)


def summarize(lateness_s: list[float], missed: int) -> dict[str, float]:
    late = np.asarray(lateness_s)
    return {"median_us": float(np.median(late) * 1e6), "p99_us": float(np.percentile(late, 99) * 1e6),
            "max_us": float(late.max() * 1e6), "missed_fraction": missed / (len(late) + missed), "ticks": len(late)}


def robolearn_loop(hz: float, seconds: float) -> dict[str, float]:
    steps = int(hz * seconds)
    clock = RealTimeClock(hz, window=steps)  # the window holds every tick: percentiles over the whole run
    ControlLoop([TimestampEnv(hz, steps)], ConstantRunner(), clock=clock).run([0])
    stats = clock.stats()
    return {"median_us": stats.lateness_median_s * 1e6, "p99_us": stats.lateness_p99_s * 1e6,
            "max_us": stats.lateness_max_s * 1e6, "missed_fraction": stats.missed_fraction, "ticks": stats.ticks}


def sleep_loop(hz: float, seconds: float, absolute: bool) -> dict[str, float]:
    env = TimestampEnv(hz, 0)
    env.reset()
    period, steps = 1.0 / hz, int(hz * seconds)
    t0 = time.perf_counter()
    lateness, missed, k = [], 0, 0
    while k < steps:
        now = time.perf_counter()
        deadline = t0 + k * period
        if absolute:
            if now > deadline + period:  # skip the slots already gone, as the real-time clock does
                skipped = int((now - deadline) // period)
                missed, k = missed + skipped, k + skipped
                deadline = t0 + k * period
            if deadline > now:
                time.sleep(deadline - now)
        elif k:
            time.sleep(period)
        sent = time.perf_counter()
        env.step(np.zeros(1, np.float32))
        if not absolute:  # relative sleeps drift: lateness against the schedule grows; count what it loses
            slot = int((sent - t0) // period)
            missed += max(0, slot - k)
            k = max(k, slot)
            deadline = t0 + k * period
        lateness.append(sent - deadline)
        k += 1
    return summarize(lateness, missed)


def inference_latency(asynchronous: bool, seconds: float, hz: float = 20.0, delay_s: float = 0.1) -> dict[str, float]:
    steps = int(hz * seconds)
    env = TimestampEnv(hz, steps)
    policy = SlowPolicy(delay_s)
    runner = RealTimeChunkRunner(policy, blend_steps=None) if asynchronous else PolicyRunner(policy)
    try:
        result = ControlLoop([env], runner, clock=RealTimeClock(hz)).run([0])[0]
    finally:
        if asynchronous:
            runner.close()
    # command k goes out after observation k (the reset observation, then one per step)
    latency = np.asarray(result.step_times) - np.asarray(env.obs_times[:len(result.step_times)])
    out = {"obs_to_command_median_ms": float(np.median(latency) * 1e3),
           "obs_to_command_p99_ms": float(np.percentile(latency, 99) * 1e3),
           "obs_to_command_max_ms": float(latency.max() * 1e3),
           "missed_fraction": result.timing.missed_fraction, "inferences": runner.n_inferences}
    if asynchronous:
        out["chunk_latency_median_ms"] = float(np.median(runner.latencies_s) * 1e3)
        out["chunk_delay_steps_median"] = float(np.median([a.delay_steps for a in runner.arrivals[1:]]))
        out["starved_steps"] = runner.n_starved
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_loop.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, object] = {"seconds": args.seconds, "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    print(f"{'loop':<26} {'Hz':>4} {'median us':>10} {'p99 us':>9} {'max us':>9} {'missed':>8}")
    timing = []
    for hz in (100, 500):
        for name, run in (("robolearn RealTimeClock", lambda hz=hz: robolearn_loop(hz, args.seconds)),
                          ("time.sleep, absolute", lambda hz=hz: sleep_loop(hz, args.seconds, absolute=True)),
                          ("time.sleep, relative", lambda hz=hz: sleep_loop(hz, args.seconds, absolute=False))):
            row = {"loop": name, "hz": hz, **run()}
            timing.append(row)
            print(f"{name:<26} {hz:>4} {row['median_us']:>10.2f} {row['p99_us']:>9.2f} {row['max_us']:>9.1f} "
                  f"{100 * row['missed_fraction']:>7.2f}%", flush=True)
    results["timing"] = timing
    print("\nobservation-to-command latency, 20 Hz, policy 100 ms per chunk")
    latency = {}
    for name, asynchronous in (("blocking", False), ("async rtc", True)):
        latency[name] = row = inference_latency(asynchronous, args.seconds)
        print(f"{name:<10} median {row['obs_to_command_median_ms']:6.1f} ms  p99 {row['obs_to_command_p99_ms']:6.1f} ms  "
              f"max {row['obs_to_command_max_ms']:6.1f} ms  missed {100 * row['missed_fraction']:5.1f}%", flush=True)
    results["latency"] = latency
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
