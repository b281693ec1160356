"""Where models run: the GPU when there is one, else the CPU; and how many CPU threads torch should use.

Why the thread count matters: torch's intra-op threads meet at a barrier after every parallel op, so when another
process takes one of the cores, every op waits for the thread that lost its core (measured on a 2-core VM: 0.28x
the idle steps/s with one competing process at the default 2 threads, 0.58x at 1 thread). `choose_num_threads`
counts the cores this process may use (affinity, cgroup quota) minus what other processes are using right now
(/proc/stat, less our own CPU time; the load average where /proc is missing), and `ThreadGovernor` re-checks it
during long runs.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None -> default_device(); otherwise the named device, checked to exist."""
    if name in (None, "", "auto"):
        return default_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine; use 'cpu' or 'auto'")
    return device


# ------------------------------------------------------------------ CPU threads

def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where the OS has no masks)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores allowed by a cgroup v2 quota (containers: `docker --cpus`), or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores() -> int:
    """Cores this process may use: its affinity, capped by a cgroup quota (at least 1)."""
    n = len(allowed_cpus())
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return max(1, n)


def _busy_seconds(cpus: list[int], proc_stat: Path = Path("/proc/stat")) -> float | None:
    """Seconds the given CPUs spent not idle since boot (steal included: the hypervisor took them), or None."""
    try:
        lines = proc_stat.read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    ticks = 0
    found = False
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            ticks += sum(values) - values[3] - values[4]
            found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


class LoadProbe:
    """Cores that *other* processes keep busy on our CPUs, averaged between two readings.

    Our own threads' CPU time (`time.process_time`, every thread of this process) is subtracted, so the reading
    is the same whether we are idle or computing."""

    def __init__(self, cpus: list[int] | None = None):
        self.cpus = allowed_cpus() if cpus is None else cpus
        self._last = self._read()

    def _read(self) -> tuple[float, float | None, float]:
        return time.monotonic(), _busy_seconds(self.cpus), time.process_time()

    def others_busy(self) -> float:
        """Cores used by other processes since the last call (or construction); restarts the window."""
        (t0, busy0, own0), (t1, busy1, own1) = self._last, self._read()
        self._last = (t1, busy1, own1)
        if busy0 is None or busy1 is None or t1 - t0 < 0.05:
            # no /proc (macOS) or no time elapsed: the 1-minute load average, which counts us too while we work
            return max(0.0, os.getloadavg()[0] - (own1 - own0) / max(t1 - t0, 1e-9)) if hasattr(os, "getloadavg") \
                else 0.0
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def threads_for(cores: int, others_busy: float, slack: float = 0.25) -> int:
    """Threads to use on `cores` when others keep `others_busy` cores busy: one core is given up as soon as
    others use more than `slack` of it (a thread that shares its core stalls every barrier), never below 1."""
    return max(1, min(cores, cores - math.ceil(others_busy - slack)))


def choose_num_threads(interval_s: float = 0.2, max_threads: int | None = None) -> int:
    """Torch CPU threads for this process now: usable cores minus the cores other processes are using,
    measured over `interval_s` (call it before the work starts; `ThreadGovernor` re-checks during a run)."""
    probe = LoadProbe()
    time.sleep(interval_s)
    cores = usable_cores() if max_threads is None else min(usable_cores(), max_threads)
    return threads_for(cores, probe.others_busy())


def configure_cpu_runtime() -> None:
    """Settings that only work before torch starts its thread pools: one inter-op thread (ops are launched from
    one Python thread; a second pool only adds waiting threads). Safe to call more than once."""
    with contextlib.suppress(RuntimeError):  # the pool already started: it keeps its size, nothing depends on it
        torch.set_num_interop_threads(1)


class ThreadGovernor:
    """Re-checks the thread count every `period_s` seconds of a long run and applies it with
    torch.set_num_threads. Call `update()` once per step; it costs a clock read between checks."""

    def __init__(self, period_s: float = 10.0, max_threads: int | None = None, initial: int | None = None,
                 probe: LoadProbe | None = None):
        self.period_s = period_s
        self.max_threads = max_threads
        self.threads = initial if initial is not None else choose_num_threads(max_threads=max_threads)
        torch.set_num_threads(self.threads)
        self.changes: list[tuple[float, int]] = []  # (monotonic time, new thread count): for logs
        self._probe = probe if probe is not None else LoadProbe()
        self._next = time.monotonic() + period_s

    def update(self) -> int:
        """The thread count in force (changed if the load changed since the last check)."""
        now = time.monotonic()
        if now < self._next:
            return self.threads
        self._next = now + self.period_s
        cores = usable_cores() if self.max_threads is None else min(usable_cores(), self.max_threads)
        threads = threads_for(cores, self._probe.others_busy())
        if threads != self.threads:
            self.threads = threads
            torch.set_num_threads(threads)
            self.changes.append((now, threads))
        return self.threads
