"""Real-time chunk blending with asynchronous inference: the robot never waits for the policy.

Inference runs in a worker thread while the loop keeps executing the current plan. Step by step:

- Requests. The first chunk of an episode is computed blocking (there is nothing to execute yet). After that
  a new chunk is requested from the newest observation every `execute_steps` steps (s), counted from the
  previous request; if the previous inference is still running, the request waits for it.
- Arrival. A chunk requested at step r predicts steps r .. r+K-1 (K = horizon - n_obs_steps + 1). It is picked
  up by the first `act()` after it is ready, at step t; d = t - r is the measured latency in control periods.
  The actions of steps before t are committed (they were executed from the old plan while the policy ran),
  so the chunk's first d actions are skipped: latency compensation.
- Blending. Where the old plan still has actions (steps t .. end of old plan), the first `blend_steps` of them
  (all of the overlap by default) are blended into the new chunk with a linear schedule: over n blended steps,
  step t+j takes weight (n - j) / (n + 1) from the old plan and the rest from the new chunk, so the hand-over
  starts near the old plan (n / (n+1)) and ends near the new one (1 / (n+1)); later steps are the new chunk's.
  `blend_steps=0` switches at once (plain asynchronous chunking).
- Starvation. If the plan runs out before the next chunk arrives (latency above K - s periods), `act()` blocks
  until it does and counts the event; under a real-time clock the loop then reports the overrun.

The latency of every chunk is measured on the runner's clock (request to ready, seconds) and in periods (d).

In simulation, wall-clock latency means nothing to a stepped clock, so `delay_steps=d` simulates it instead:
the chunk is computed at once and handed over exactly d steps later. Evaluations stay deterministic and can
replay the delay measured on the robot.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robolearn.control.clock import Clock
from robolearn.control.executor import ObsHistory, policy_device, predict_future, use_cuda_graphs
from robolearn.policies.base import Policy


class InferenceThread:
    """One daemon worker thread running submitted calls in order; results come back as futures."""

    def __init__(self, name: str = "robolearn-inference"):
        self._queue: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        if not self._thread.is_alive():
            raise RuntimeError("the inference thread is closed; build a new runner")
        future: Future = Future()
        self._queue.put((future, fn))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as err:  # handed to the loop's thread, which re-raises it
                    future.set_exception(err)

    def close(self, timeout: float | None = None) -> None:
        """Let the running call finish, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)


@dataclass
class _Request:
    step: int  # r: the step of the observation the chunk was computed from
    time: float  # clock time of the request
    future: Future  # resolves to (chunk (n_envs, K, action_dim), clock time when it was ready)


@dataclass(frozen=True)
class ChunkArrival:
    """How one chunk reached the plan: for latency reports."""

    requested_step: int
    arrived_step: int  # t; the chunk's first (t - requested_step) actions were skipped
    latency_s: float  # request to ready, on the runner's clock
    blended: int  # steps blended with the old plan

    @property
    def delay_steps(self) -> int:
        return self.arrived_step - self.requested_step


class RealTimeChunkRunner(ObsHistory):
    """Asynchronous inference with latency compensation and blending; the module docstring has the schedule."""

    def __init__(self, policy: Policy, execute_steps: int | None = None, blend_steps: int | None = None,
                 delay_steps: int | None = None, clock: Clock | None = None,
                 generator: torch.Generator | None = None, cuda_graphs: bool | None = None):
        super().__init__(tuple(policy.config.obs_shapes), policy.config.n_obs_steps, policy_device(policy))
        use_cuda_graphs(policy, cuda_graphs)  # the worker replays the sampler's CUDA graph (captured in the worker)
        self.policy = policy
        self.generator = generator
        self.chunk_len = policy.config.horizon - policy.config.n_obs_steps + 1
        self.execute_steps = policy.config.n_action_steps if execute_steps is None else int(execute_steps)
        if not 1 <= self.execute_steps <= self.chunk_len:
            raise ValueError(f"execute_steps must be in [1, {self.chunk_len}] (the chunk's future actions: horizon - "
                             f"n_obs_steps + 1), got {self.execute_steps}")
        if blend_steps is not None and blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0 (0 switches chunks at once) or None for the whole overlap, "
                             f"got {blend_steps}")
        self.blend_steps = blend_steps
        if delay_steps is not None:
            if delay_steps < 0:
                raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
            if max(self.execute_steps, delay_steps) + delay_steps > self.chunk_len:
                raise ValueError(
                    f"a simulated delay of {delay_steps} steps with execute_steps={self.execute_steps} runs past the "
                    f"chunk's {self.chunk_len} actions (need max(execute_steps, delay) + delay <= {self.chunk_len}); "
                    f"lower execute_steps or predict longer chunks")
        self.delay_steps = delay_steps
        self._now: Callable[[], float] = clock.now if clock is not None else time.perf_counter
        self._worker = InferenceThread() if delay_steps is None else None
        self.n_inferences = 0
        self.n_starved = 0  # acts that had to wait for a chunk
        self.arrivals: list[ChunkArrival] = []
        self._reset_plan()

    def _reset_plan(self) -> None:
        self._t = 0
        self._plan: np.ndarray | None = None  # (n_envs, L, action_dim): actions for steps plan_start ..
        self._plan_start = 0
        self._last_request = 0
        self._pending: _Request | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Start new episodes; a chunk still being computed for the old ones is dropped when it arrives."""
        super().reset(observations)
        self._reset_plan()

    def act(self) -> np.ndarray:
        """(n_envs, action_dim): the plan's action for this step; never waits except for the first chunk
        of an episode or when the plan ran dry."""
        t = self._t
        if self._pending is not None and self._ready(self._pending, t):
            self._integrate(self._pending, t)
        if self._plan is None or t >= self._plan_start + self._plan.shape[1]:
            if self._plan is not None:
                self.n_starved += 1
            if self._pending is None:
                self._submit(t)
            self._integrate(self._pending, t)
        if self._pending is None and t - self._last_request >= self.execute_steps:
            self._submit(t)
            if self._ready(self._pending, t):  # zero simulated delay: use it now
                self._integrate(self._pending, t)
        self._t += 1
        return self._plan[:, t - self._plan_start]

    @property
    def latencies_s(self) -> list[float]:
        return [a.latency_s for a in self.arrivals]

    @property
    def in_flight(self) -> bool:
        """Whether a requested chunk has not been picked up yet."""
        return self._pending is not None

    def wait_for_inference(self, timeout: float | None = None) -> bool:
        """Block until the chunk in flight (if any) is ready; True once nothing is left computing.

        For shutdown and for tests that need to know a chunk is ready before the next `act()`."""
        if self._pending is None:
            return True
        try:
            self._pending.future.exception(timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close(timeout=10.0)
        super().close()

    def __enter__(self) -> RealTimeChunkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _submit(self, t: int) -> None:
        self._last_request = t
        self.n_inferences += 1
        if self._worker is None:  # simulated delay: compute now, hand over `delay_steps` later
            future: Future = Future()
            future.set_result((predict_future(self.policy, self._history, self.generator), None))
        else:
            # observe() mutates the live host history; on the GPU it replaces the tensors, so a reference is a snapshot
            snapshot = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self._history.items()}

            def infer() -> tuple[np.ndarray, float]:
                chunk = predict_future(self.policy, snapshot, self.generator)
                return chunk, self._now()

            future = self._worker.submit(infer)
        self._pending = _Request(t, self._now(), future)

    def _ready(self, request: _Request, t: int) -> bool:
        if self._worker is None:
            return t - request.step >= self.delay_steps
        return request.future.done()

    def _integrate(self, request: _Request, t: int) -> None:
        chunk, ready_time = request.future.result()  # waits if needed; re-raises a failed inference here
        self._pending = None
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 3 or chunk.shape[1] != self.chunk_len:
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}; expected (n_envs, {self.chunk_len}, "
                             f"action_dim) future actions")
        d = t - request.step
        new = chunk[:, d:].copy()  # steps t .. request.step + K - 1
        blended = 0
        if self._plan is not None:
            overlap = max(0, min(self._plan_start + self._plan.shape[1], request.step + self.chunk_len) - t)
            blended = overlap if self.blend_steps is None else min(overlap, self.blend_steps)
            if blended:
                w_old = ((blended - np.arange(blended)) / (blended + 1))[None, :, None]
                old = self._plan[:, t - self._plan_start:t - self._plan_start + blended]
                new[:, :blended] = w_old * old + (1.0 - w_old) * new[:, :blended]
        self._plan, self._plan_start = new, t
        ready = self._now() if ready_time is None else ready_time
        self.arrivals.append(ChunkArrival(request.step, t, ready - request.time, blended))
