"""Clocks for the control loop: stepped time for simulation, an absolute real-time schedule for hardware.

Both hand out ticks on the schedule deadline_k = t0 + k / hz. `RealTimeClock` waits for each deadline by
sleeping until `spin_s` before it and then spinning on `time.perf_counter` (a bare `time.sleep` wakes
75-160 us late on a VM; the spin lands within ~1 us). Deadlines are absolute, so a late tick does not push
the later ones back (no drift), and a loop that overran its period is not allowed to burst through the ticks
it missed: it skips to the next deadline still in the future and counts the periods it lost.

`time.perf_counter` is CLOCK_MONOTONIC on Linux, the same time base as `time.monotonic` used for
observation timestamps, so tick times and observation times can be subtracted.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Tick:
    index: int  # schedule slot k: the tick's deadline is t0 + k * period
    deadline: float
    time: float  # when the tick was handed out (the loop sends its command now)
    lateness: float  # time - deadline, seconds (>= 0 for a real clock, 0 in stepped time)
    missed: int  # deadlines skipped because the loop reached this tick after them


@dataclass(frozen=True)
class ClockStats:
    """Timing of the ticks since `start`; lateness percentiles cover the last `window` ticks."""

    ticks: int
    overruns: int  # ticks requested after their deadline had passed (the loop's work overran a period)
    missed_periods: int  # deadlines skipped because of those overruns
    lateness_median_s: float
    lateness_p99_s: float
    lateness_max_s: float

    @property
    def missed_fraction(self) -> float:
        """Share of the schedule's periods in which no tick was handed out."""
        total = self.ticks + self.missed_periods
        return self.missed_periods / total if total else 0.0


@runtime_checkable
class Clock(Protocol):
    """What the loop needs: start a schedule, wait for the next tick, read the time, report timing."""

    period: float

    def start(self) -> None: ...  # begin a new schedule; its first tick is due at once

    def tick(self) -> Tick: ...

    def now(self) -> float: ...

    def stats(self) -> ClockStats: ...


class _LatenessLog:
    """Counters plus a ring buffer of recent lateness values: bounded memory for sessions of any length."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be >= 1 tick, got {window}")
        self._values = np.zeros(window, np.float64)
        self.ticks = self.overruns = self.missed = 0

    def add(self, lateness: float, missed: int) -> None:
        self._values[self.ticks % len(self._values)] = lateness
        self.ticks += 1
        self.missed += missed
        self.overruns += missed > 0

    def stats(self) -> ClockStats:
        recent = self._values[:min(self.ticks, len(self._values))]
        if not len(recent):
            return ClockStats(0, 0, 0, 0.0, 0.0, 0.0)
        return ClockStats(self.ticks, self.overruns, self.missed, float(np.median(recent)),
                          float(np.percentile(recent, 99)), float(recent.max()))


def _check_hz(hz: float) -> float:
    if not (isinstance(hz, (int, float)) and math.isfinite(hz) and hz > 0):
        raise ValueError(f"control rate must be a positive number of Hz, got {hz!r}")
    return float(hz)


class SteppedClock:
    """Simulated time: every tick is exactly one period after the previous one and nothing ever sleeps."""

    def __init__(self, hz: float, t0: float = 0.0, window: int = 65536):
        self.hz = _check_hz(hz)
        self.period = 1.0 / self.hz
        self.t0 = float(t0)
        self._window = window
        self._next = 0
        self._now = self.t0
        self._log = _LatenessLog(window)

    def start(self) -> None:
        self._next = 0
        self._now = self.t0
        self._log = _LatenessLog(self._window)

    def tick(self) -> Tick:
        k = self._next
        self._now = self.t0 + k * self.period
        self._next += 1
        self._log.add(0.0, 0)
        return Tick(k, self._now, self._now, 0.0, 0)

    def now(self) -> float:
        return self._now

    def stats(self) -> ClockStats:
        return self._log.stats()


class RealTimeClock:
    """Wall-clock ticks at `hz` on an absolute schedule: sleep until `spin_s` before a deadline, then spin.

    Spinning costs up to `spin_s` of one core per period (50 % of a core at 500 Hz with the 1 ms default);
    lower it on machines whose sleep is precise. Never run this under SCHED_FIFO: the kernel's real-time
    throttling freezes a spinning process for 50 ms every second.
    """

    def __init__(self, hz: float, spin_s: float = 1e-3, window: int = 65536,
                 time_fn: Callable[[], float] = time.perf_counter, sleep_fn: Callable[[float], None] = time.sleep):
        self.hz = _check_hz(hz)
        self.period = 1.0 / self.hz
        if not 0.0 <= spin_s < 1.0:
            raise ValueError(f"spin_s must be in [0, 1) seconds, got {spin_s}")
        self.spin_s = float(spin_s)
        self._time, self._sleep = time_fn, sleep_fn
        self._window = window
        self.t0 = self._time()
        self._next = 0
        self._log = _LatenessLog(window)

    def start(self) -> None:
        """Begin a new schedule: its first tick is handed out at once and sets t0, so work done between
        `start` and the first tick (a policy's first, slowest inference) does not count as an overrun."""
        self._next = 0
        self._log = _LatenessLog(self._window)

    def deadline(self, k: int) -> float:
        return self.t0 + k * self.period  # multiplied, not accumulated: no floating-point drift either

    def tick(self) -> Tick:
        """Wait for the next deadline still ahead (or due now) and return it."""
        k = self._next
        now = self._time()
        if k == 0:
            self.t0 = now
        missed = 0
        if now > self.deadline(k):  # overrun: the loop arrives after this tick's deadline; do not burst
            missed = math.ceil((now - self.deadline(k)) / self.period)
            k += missed
        deadline = self.deadline(k)
        remaining = deadline - now - self.spin_s
        if remaining > 0:
            self._sleep(remaining)
        now = self._time()
        while now < deadline:
            now = self._time()
        self._next = k + 1
        self._log.add(now - deadline, missed)
        return Tick(k, deadline, now, now - deadline, missed)

    def now(self) -> float:
        return self._time()

    def stats(self) -> ClockStats:
        return self._log.stats()
