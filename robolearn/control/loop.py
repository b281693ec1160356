"""The control loop: drives a batch of envs with one policy, one batched inference per replanning step.

Simulated envs run in stepped time (no sleeping). Envs that finish early stop stepping while the others go
on; each keeps its own seed, so results do not depend on how many envs share a batch or how they are stepped
(in turn in this process, or in parallel subprocess workers).

On hardware the loop takes a `RealTimeClock(spec.control_hz)`. Each step computes the action from the newest
observation first, then waits for the tick, then sends: the command leaves on the deadline (no jitter from
the computation) and a blocking inference overlaps the wait instead of adding to it. The clock's overruns,
missed periods and lateness come back in every result.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from robolearn.control.chunking import ChunkExecution, make_runner
from robolearn.control.clock import Clock, ClockStats, SteppedClock, Tick
from robolearn.control.executor import ChunkRunner
from robolearn.control.recorder import EpisodeRecorder
from robolearn.env import Env, SerialVectorEnv, StepResult, VectorEnv
from robolearn.policies.base import Policy


@dataclass
class EpisodeResult:
    seed: int
    steps: int
    total_reward: float
    max_reward: float  # Push-T's reward is clip(coverage / 0.95): its max is Diffusion Policy's episode score
    success: bool  # any step reported info["success"]
    final_info: dict[str, Any]
    frames: list[np.ndarray] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)  # clock time at which each of the env's commands went out
    end_reason: str = ""  # "done", "max_steps", "e-stop" or the reason an on_step hook gave
    timing: ClockStats | None = None  # the run's clock: ticks, overruns, missed periods, lateness
    episode_index: int | None = None  # where the recorder committed the episode (None: not recorded or discarded)


@dataclass(frozen=True)
class EndEpisode:
    """Returned by an `on_step` hook to end every running episode now (operator stop, re-record, quit...)."""

    reason: str
    save: bool = True  # False: a recorder drops the episodes (re-record)
    interrupted: bool = False  # an abnormal end (e-stop, abort): marked, and the recorder's on_interrupt applies
    success: bool | None = None  # the operator's verdict, which overrides the env's (real robots cannot judge)


@dataclass(frozen=True)
class StepEvent:
    """What the `on_step` hook sees after each step."""

    step: int
    tick: Tick
    actions: dict[int, np.ndarray]  # the commands sent, by env index
    results: dict[int, StepResult]  # (obs, reward, done, info) of the envs stepped
    n_active: int  # envs still running after this step


class Watchdog(Protocol):
    """The part of hal's Watchdog the loop drives: fed with fresh observations, told when inference runs."""

    def feed(self, timestamp: float | None = None) -> None: ...

    def inference(self) -> contextlib.AbstractContextManager[None]: ...


class ControlLoop:
    def __init__(self, envs: Sequence[Env] | VectorEnv, runner: ChunkRunner, max_steps: int | None = None,
                 clock: Clock | None = None, recorder: EpisodeRecorder | None = None, watchdog: Watchdog | None = None):
        self.envs = envs if isinstance(envs, VectorEnv) else SerialVectorEnv(envs)
        self.runner = runner
        self.max_steps = max_steps or self.envs.spec.max_episode_steps
        self.clock = clock if clock is not None else SteppedClock(self.envs.spec.control_hz)
        self.recorder = recorder
        self.watchdog = watchdog

    @classmethod
    def for_policy(cls, envs: Sequence[Env] | VectorEnv, policy: Policy, execution: ChunkExecution | None = None,
                   generator: torch.Generator | None = None, clock: Clock | None = None, **kwargs: Any) -> ControlLoop:
        """A loop running `policy` with the chunk execution `execution.mode` (receding, ensemble or rtc)."""
        envs = envs if isinstance(envs, VectorEnv) else SerialVectorEnv(envs)
        clock = clock if clock is not None else SteppedClock(envs.spec.control_hz)
        return cls(envs, make_runner(policy, execution, generator=generator, clock=clock), clock=clock, **kwargs)

    def run(self, seeds: Sequence[int], record: Sequence[bool] | None = None,
            on_step: Callable[[StepEvent], EndEpisode | None] | None = None,
            meta: dict[str, Any] | None = None) -> list[EpisodeResult]:
        """One episode each for the first len(seeds) envs, env i reset with seeds[i]; `record[i]` keeps its frames.

        With a recorder, every episode is committed when it ends (`meta` joins its metadata); an exception or
        Ctrl-C ends the running ones as interrupted before it propagates."""
        if not 1 <= len(seeds) <= self.envs.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.envs.num_envs} envs")
        record = list(record) if record is not None else [False] * len(seeds)
        recorded = [i for i, r in enumerate(record) if r]
        obs = self.envs.reset(seeds)
        results = [EpisodeResult(int(s), 0, 0.0, -np.inf, False, {}) for s in seeds]
        for i, frame in zip(recorded, self.envs.render(recorded)):
            results[i].frames.append(frame)
        self.runner.reset(obs)
        active = np.ones(len(seeds), bool)
        if self.recorder is not None:
            for i, seed in enumerate(seeds):
                self.recorder.start(env=i, seed=int(seed), **(meta or {}))

        def end(i: int, reason: str, save: bool = True, interrupted: str | None = None) -> None:
            active[i] = False
            results[i].end_reason = reason
            if self.recorder is None:
                return
            if save:
                results[i].episode_index = self.recorder.finish(i, success=results[i].success, reason=reason,
                                                                interrupted=interrupted)
            else:
                self.recorder.discard(i)

        self.clock.start()
        try:
            for k in range(self.max_steps):
                with self.watchdog.inference() if self.watchdog is not None else contextlib.nullcontext():
                    actions = self.runner.act()
                tick = self.clock.tick()  # computed first, sent on the deadline
                sent = {int(i): actions[i] for i in np.flatnonzero(active)}
                stepped = self.envs.step(sent)
                for i, (o, reward, done, info) in stepped.items():
                    res = results[i]
                    if self.recorder is not None:
                        self.recorder.add(obs[i], sent[i], reward, env=i, timestamp=getattr(obs[i], "timestamp", tick.time))
                    obs[i] = o
                    res.steps += 1
                    res.step_times.append(tick.time)
                    res.total_reward += float(reward)
                    res.max_reward = max(res.max_reward, float(reward))
                    res.success = res.success or bool(info.get("success", False))
                    res.final_info = info
                    if self.watchdog is not None:
                        self.watchdog.feed(getattr(o, "timestamp", None))
                    if info.get("estop", False):
                        end(i, "e-stop", interrupted="e-stop")
                    elif "worker_error" in info:  # cut short by a dead worker: not an episode; it is run again
                        end(i, "worker_error", save=False)
                    elif done:
                        end(i, "done")
                frames_of = [i for i in recorded if i in stepped]
                for i, frame in zip(frames_of, self.envs.render(frames_of)):
                    results[i].frames.append(frame)
                if on_step is not None:
                    control = on_step(StepEvent(k, tick, sent, stepped, int(active.sum())))
                    if control is not None:
                        for i in np.flatnonzero(active):
                            if control.success is not None:
                                results[int(i)].success = control.success
                            end(int(i), control.reason, control.save, control.reason if control.interrupted else None)
                if not active.any():
                    break
                self.runner.observe(obs)
            for i in np.flatnonzero(active):
                end(int(i), "max_steps")
        except BaseException as err:
            if self.recorder is not None:
                reason = type(err).__name__ + (f": {err}" if str(err) else "")
                for i in self.recorder.open_envs:
                    self.recorder.finish(i, success=results[i].success, reason="interrupted", interrupted=reason)
            raise
        finally:
            timing = self.clock.stats()
            for res in results:
                res.timing = timing
        return results
