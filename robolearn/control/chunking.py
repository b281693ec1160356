"""How the loop executes action chunks: one setting (`ChunkExecution.mode`) picks the runner.

- "receding": execute `n_action_steps` of each chunk, then replan (blocking). Diffusion Policy's scheme.
- "ensemble": query every step, average all chunks' predictions for the step (ACT's temporal ensembling).
- "rtc": asynchronous inference with latency compensation and blending (real-time chunking); in stepped
  time give `delay_steps` to simulate the inference latency deterministically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robolearn.control.clock import Clock
from robolearn.control.energy_gate import EnergyGate
from robolearn.control.ensemble import TemporalEnsembleRunner
from robolearn.control.executor import ChunkRunner, PolicyRunner
from robolearn.control.rtc import RealTimeChunkRunner
from robolearn.policies.base import Policy

MODES = ("receding", "ensemble", "rtc")


@dataclass
class ChunkExecution:
    mode: str = "receding"
    ensemble_decay: float = 0.01  # ensemble: weight exp(-m * i), i = 0 for the oldest prediction (ACT's m)
    execute_steps: int | None = None  # rtc: steps between requests (default: the policy's n_action_steps)
    blend_steps: int | None = None  # rtc: overlap steps blended into a new chunk (None: all; 0: hard switch)
    delay_steps: int | None = None  # rtc: simulated latency in periods (stepped time); None: real worker thread
    energy_threshold: float | None = None  # receding, heads with an energy: decisions above it are re-planned
    energy_replans: int = 1  # ... this many times at most (robolearn.control.energy_gate)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown chunk execution mode {self.mode!r}; expected one of {MODES}")
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite, got {self.ensemble_decay}")
        for name in ("execute_steps", "blend_steps", "delay_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (1 if name == "execute_steps" else 0)):
                raise ValueError(f"{name} must be a non-negative integer (execute_steps >= 1) or None, got {value!r}")
        if self.energy_threshold is not None:
            if self.mode != "receding":
                raise ValueError(f"energy_threshold gates receding-horizon decisions; mode is {self.mode!r}")
            EnergyGate(self.energy_threshold, replans=self.energy_replans)  # checks both values


def make_runner(policy: Policy, execution: ChunkExecution | None = None, generator: torch.Generator | None = None,
                clock: Clock | None = None) -> ChunkRunner:
    """The runner for `execution.mode`; `clock` times the rtc runner's latencies (default: perf_counter)."""
    execution = execution or ChunkExecution()
    if execution.mode == "receding":
        gate = (EnergyGate(execution.energy_threshold, replans=execution.energy_replans)
                if execution.energy_threshold is not None else None)
        return PolicyRunner(policy, generator=generator, energy_gate=gate)
    if execution.mode == "ensemble":
        return TemporalEnsembleRunner(policy, decay=execution.ensemble_decay, generator=generator)
    return RealTimeChunkRunner(policy, execute_steps=execution.execute_steps, blend_steps=execution.blend_steps,
                               delay_steps=execution.delay_steps, clock=clock, generator=generator)
