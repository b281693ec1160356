"""Envs in worker processes behind the `VectorEnv` contract (`SerialVectorEnv`, in robolearn.env, steps them in turn).

`SubprocVectorEnv` hosts the envs in worker processes that step
in parallel, for envs slow enough (robosuite, rendering) that a step outweighs the cost of a round trip; a worker
that dies or hangs is replaced and its envs end their episodes with `info["worker_error"]`, so an evaluation
never hangs on one broken simulator.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from robolearn.env import Env, EnvSpec, Observation, SerialVectorEnv, StepResult  # noqa: F401 (SerialVectorEnv: re-exported)

if TYPE_CHECKING:
    from robolearn.task import TaskConfig


# ---------------------------------------------------------------------------------------------------- worker side
# Messages are (command, argument) tuples sent over a multiprocessing Pipe, which pickles them. That is safe here:
# both ends are processes this module spawned on this machine from our own code, and the payloads are numpy
# arrays, floats and small dicts; no bytes from a file or a socket ever reach the unpickler.

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _pack(obs: Observation) -> tuple[dict[str, np.ndarray], float]:
    return {k: np.asarray(v) for k, v in obs.items()}, float(getattr(obs, "timestamp", 0.0))


def _worker_main(conn: Connection, make: Callable[..., Env], env_kwargs: dict[str, Any], n_envs: int) -> None:
    """Build `n_envs` envs, then answer reset/step/render/close commands until told to close or the parent is gone."""
    # Ctrl-C in a terminal signals the whole process group: only the parent should react, and it closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    if "torch" in sys.modules:  # importing robolearn imports torch; one thread per worker, the cores are shared
        sys.modules["torch"].set_num_threads(1)
    try:
        envs = [make(**env_kwargs) for _ in range(n_envs)]
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", envs[0].spec))
    try:
        while True:
            try:
                command, arg = conn.recv()
            except EOFError:  # the parent died without closing us: exit instead of lingering as an orphan
                break
            if command == "close":
                break
            try:
                if command == "reset":
                    reply: Any = {j: _pack(envs[j].reset(seed=seed)) for j, seed in arg.items()}
                elif command == "step":
                    reply = _step_envs(envs, arg, make, env_kwargs)
                elif command == "render":
                    reply = [np.asarray(envs[j].render()) for j in arg]
                else:
                    raise ValueError(f"unknown worker command {command!r}")
            except Exception:
                conn.send(("error", traceback.format_exc()))
            else:
                conn.send(("ok", reply))
    finally:
        for env in envs:
            env.close()
    # Our envs are closed; skip the interpreter's teardown, which takes over a second once torch is imported.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _step_envs(envs: list[Env], actions: dict[int, np.ndarray], make: Any, env_kwargs: dict[str, Any]) -> tuple[dict, dict]:
    """Step each env; an env whose step raises reports its traceback and is rebuilt (its state cannot be trusted)."""
    results: dict[int, tuple] = {}
    errors: dict[int, str] = {}
    for j, action in actions.items():
        try:
            obs, reward, done, info = envs[j].step(action)
            results[j] = (*_pack(obs), float(reward), bool(done), dict(info))
        except Exception:
            errors[j] = traceback.format_exc()
            try:
                envs[j].close()
            except Exception:
                errors[j] += "\nclosing the env afterwards also failed:\n" + traceback.format_exc()
            envs[j] = make(**env_kwargs)  # if even this fails, the worker reports it and the parent replaces the worker
    return results, errors


# ---------------------------------------------------------------------------------------------------- parent side
class _WorkerFailure(RuntimeError):
    """A worker died, hung or broke its protocol; the message says which and how."""


@contextmanager
def _single_threaded_environment() -> Iterator[None]:
    """Spawned children copy the parent's environment: give them one BLAS/OpenMP thread before they import numpy."""
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update({var: "1" for var in _THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


class _Worker:
    """One worker process hosting the envs `env_ids` (global indices); starts at once, is awaited on first use."""

    def __init__(self, slot: int, env_ids: list[int], make: Callable[..., Env], env_kwargs: dict[str, Any]):
        self.slot, self.env_ids = slot, env_ids
        ctx = mp.get_context("spawn")  # a fresh interpreter: its own GL context, no forked torch/GL state
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, make, env_kwargs, len(env_ids)),
                                   name=f"robolearn-env-worker-{slot}", daemon=True)
        with _single_threaded_environment():
            self.process.start()
        child.close()  # only the child holds its end now, so its death reads as EOF here
        self.spec: EnvSpec | None = None

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.process.pid}, envs {self.env_ids})"

    def death(self) -> str:
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is None:
            return f"{self.describe()} closed its pipe"
        if code < 0:
            return f"{self.describe()} died from signal {signal.Signals(-code).name}"
        return f"{self.describe()} exited with code {code}"

    def wait_ready(self, timeout_s: float, env_name: str) -> EnvSpec:
        if self.spec is not None:
            return self.spec
        if not self.conn.poll(timeout_s):
            raise _WorkerFailure(f"{self.describe()} did not start within {timeout_s:g} s")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError) as err:
            raise _WorkerFailure(f"{self.death()} while starting (its stderr above says why; a script that builds envs at "
                                 f"import time must do it under `if __name__ == '__main__':`, since spawned workers "
                                 f"import the main module)") from err
        if kind == "error":
            raise RuntimeError(f"{self.describe()} could not build env {env_name!r}; fix the env class or its env_kwargs. "
                               f"Worker traceback:\n{payload}")
        self.spec = payload
        return payload

    def send(self, message: tuple[str, Any]) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError) as err:  # BrokenPipeError: the process is already gone
            raise _WorkerFailure(self.death()) from err

    def stop(self, grace_s: float) -> None:
        """Ask to close and wait `grace_s`, then terminate, then kill. With grace_s=0 (a broken worker, perhaps
        stopped, where SIGTERM would wait) kill at once. Always reaps the process and closes the pipe."""
        if self.process.is_alive():
            if grace_s > 0:
                try:
                    self.conn.send(("close", None))
                except (OSError, EOFError):
                    pass  # it is going away already; the joins below reap it
                self.process.join(timeout=grace_s)
                if self.process.is_alive():
                    self.process.terminate()
                    self.process.join(timeout=1.0)
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Stop every worker; used by close() and, through weakref.finalize, at garbage collection or interpreter exit."""
    for worker in workers:
        worker.stop(grace_s=5.0)
    workers.clear()


class SubprocVectorEnv:
    """`num_envs` envs spread round-robin over `num_workers` spawned processes that step in parallel.

    Results equal `SerialVectorEnv`'s for the same seeds and actions. A worker that dies, hangs past `timeout_s`
    or whose env raises never stops the vector: the affected envs return done=True with info
    {"success": False, "worker_error": "<what happened>"}, the worker (or the env) is rebuilt, `restarts` counts
    it, and the next `reset` uses the replacement.
    """

    def __init__(self, env: str, env_kwargs: dict[str, Any] | None, num_envs: int, num_workers: int | None = None,
                 timeout_s: float = 120.0, start_timeout_s: float = 300.0):
        from robolearn.registry import ENVS

        env_kwargs = dict(env_kwargs or {})
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        num_workers = min(num_envs, os.cpu_count() or 1) if num_workers is None else num_workers
        if not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be between 1 and num_envs ({num_envs}), got {num_workers}")
        if timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError(f"timeout_s ({timeout_s}) and start_timeout_s ({start_timeout_s}) must be > 0 seconds")
        self.make = ENVS.get(env)  # an unknown env fails here, clearly, before any process starts; workers get the class
        try:
            pickle.dumps(env_kwargs)
        except Exception as err:
            raise TypeError(f"env_kwargs must be picklable to reach the worker processes (plain values, lists, "
                            f"dicts): {err}") from err
        self.env_name, self.env_kwargs = env, env_kwargs
        self.num_envs, self.num_workers = int(num_envs), int(num_workers)
        self.timeout_s, self.start_timeout_s = float(timeout_s), float(start_timeout_s)
        self.restarts = 0  # worker processes replaced plus envs rebuilt after their step raised
        # Round-robin placement: a partial batch (fewer seeds than envs) still spreads over every worker.
        self._slot_of = [i % self.num_workers for i in range(self.num_envs)]
        self._local = [i // self.num_workers for i in range(self.num_envs)]
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        self._last_obs: dict[int, Observation] = {}
        self._last_frame: dict[int, np.ndarray] = {}
        self._failed: dict[int, str] = {}  # env -> what went wrong, until its next reset
        self._closed = False
        try:
            for slot in range(self.num_workers):
                self._workers.append(self._new_worker(slot))
            specs = [w.wait_ready(self.start_timeout_s, env) for w in self._workers]
        except BaseException:
            self.close()
            raise
        mismatched = [s for s in specs[1:] if s != specs[0]]
        if mismatched:
            self.close()
            raise RuntimeError(f"the envs built from {env!r} disagree on their spec: {specs[0]} vs {mismatched[0]}")
        self.spec: EnvSpec = specs[0]

    @classmethod
    def from_task(cls, task: TaskConfig, num_envs: int, num_workers: int | None = None, **kwargs: Any) -> SubprocVectorEnv:
        """The task's env (`task.env`, `task.env_kwargs`) in worker processes."""
        return cls(task.env, task.env_kwargs, num_envs, num_workers, **kwargs)

    # ------------------------------------------------------------------ bookkeeping
    def _new_worker(self, slot: int) -> _Worker:
        ids = [i for i in range(self.num_envs) if self._slot_of[i] == slot]
        return _Worker(slot, ids, self.make, self.env_kwargs)

    def _restart(self, worker: _Worker, reason: str) -> str:
        """Replace a failed worker (the new one starts now and is awaited on its next use); its envs are failed."""
        message = f"{reason}; restarted it"
        worker.stop(grace_s=0.0)
        self._workers[worker.slot] = self._new_worker(worker.slot)
        self.restarts += 1
        for i in worker.env_ids:
            self._failed[i] = message
        return message

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this SubprocVectorEnv is closed; build a new one")

    @property
    def worker_pids(self) -> list[int | None]:
        """Process ids of the current workers, by slot (env i lives in slot i % num_workers)."""
        return [w.process.pid for w in self._workers]

    def _group(self, indices: Sequence[int]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i in indices:
            if not 0 <= i < self.num_envs:
                raise IndexError(f"env index {i} out of range for {self.num_envs} envs")
            groups.setdefault(self._slot_of[i], []).append(i)
        return groups

    def _ask(self, requests: dict[int, tuple[str, Any]]) -> dict[int, Any]:
        """Send each worker slot its command at once, then gather: they work in parallel.

        Returns slot -> ("ok", payload) | ("error", traceback) | _WorkerFailure. Waits at most `timeout_s` for
        the answers (a restarted worker first gets `start_timeout_s` to come up).
        """
        answers: dict[int, Any] = {}
        pending: dict[Connection, _Worker] = {}
        for slot, message in requests.items():
            worker = self._workers[slot]
            try:
                worker.wait_ready(self.start_timeout_s, self.env_name)
                worker.send(message)
            except _WorkerFailure as failure:
                answers[slot] = failure
            else:
                pending[worker.conn] = worker
        deadline = time.monotonic() + self.timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            ready = wait(list(pending), timeout=remaining) if remaining > 0 else []
            if not ready:
                break
            for conn in ready:
                worker = pending.pop(conn)  # type: ignore[arg-type]
                try:
                    answers[worker.slot] = worker.conn.recv()
                except (EOFError, OSError):
                    answers[worker.slot] = _WorkerFailure(worker.death())
        for worker in pending.values():
            answers[worker.slot] = _WorkerFailure(f"{worker.describe()} did not answer within timeout_s="
                                                  f"{self.timeout_s:g} s (hung); killed it")
        return answers

    # ------------------------------------------------------------------ VectorEnv
    def reset(self, seeds: Sequence[int]) -> list[Observation]:
        """Reset env i with seeds[i]; a worker found dead or hung is restarted and asked once more."""
        self._check_open()
        if not 1 <= len(seeds) <= self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        groups = self._group(range(len(seeds)))
        obs: dict[int, Observation] = {}
        for attempt in range(2):
            answers = self._ask({slot: ("reset", {self._local[i]: int(seeds[i]) for i in ids})
                                 for slot, ids in groups.items()})
            retry: dict[int, list[int]] = {}
            for slot, answer in answers.items():
                if isinstance(answer, _WorkerFailure):
                    message = self._restart(self._workers[slot], str(answer))
                    if attempt == 1:
                        raise RuntimeError(f"resetting envs {groups[slot]} failed twice: {message}")
                    retry[slot] = groups[slot]
                    continue
                kind, payload = answer
                if kind == "error":
                    raise RuntimeError(f"reset failed in {self._workers[slot].describe()} for seeds "
                                       f"{[int(seeds[i]) for i in groups[slot]]}. Worker traceback:\n{payload}")
                for i in groups[slot]:
                    values, timestamp = payload[self._local[i]]
                    obs[i] = Observation(values, timestamp)
            if not retry:
                break
            groups = retry
        for i in range(len(seeds)):
            self._failed.pop(i, None)
            self._last_obs[i] = obs[i]
        return [obs[i] for i in range(len(seeds))]

    def _failed_result(self, i: int) -> StepResult:
        return self._last_obs[i], 0.0, True, {"success": False, "worker_error": self._failed[i]}

    def step(self, actions: Mapping[int, np.ndarray]) -> dict[int, StepResult]:
        """Step the given envs in parallel; envs whose worker failed come back done with info["worker_error"]."""
        self._check_open()
        indices = [int(i) for i in actions]
        groups = self._group(indices)  # also checks the indices
        unknown = [i for i in indices if i not in self._last_obs]
        if unknown:
            raise RuntimeError(f"envs {unknown} were never reset; call reset() with a seed for each first")
        groups = {slot: [i for i in ids if i not in self._failed] for slot, ids in groups.items()}
        requests = {slot: ("step", {self._local[i]: np.asarray(actions[i]) for i in ids})
                    for slot, ids in groups.items() if ids}
        fresh: dict[int, StepResult] = {}
        for slot, answer in self._ask(requests).items():
            if isinstance(answer, _WorkerFailure):
                self._restart(self._workers[slot], str(answer))
                continue
            kind, payload = answer
            if kind == "error":  # the worker's own code failed, not an env's step: its state is unknown, replace it
                self._restart(self._workers[slot], f"{self._workers[slot].describe()} failed:\n{payload}")
                continue
            results, errors = payload
            for i in groups[slot]:
                j = self._local[i]
                if j in errors:
                    self.restarts += 1
                    self._failed[i] = f"env {i} raised in its step (the worker rebuilt the env):\n{errors[j]}"
                    continue
                values, timestamp, reward, done, info = results[j]
                self._last_obs[i] = Observation(values, timestamp)
                fresh[i] = (self._last_obs[i], reward, done, info)
        return {i: fresh[i] if i in fresh else self._failed_result(i) for i in indices}

    def render(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames of the given envs; an env whose worker failed shows its last frame again."""
        self._check_open()
        indices = [int(i) for i in indices]
        groups = self._group([i for i in indices if i not in self._failed])
        answers = self._ask({slot: ("render", [self._local[i] for i in ids]) for slot, ids in groups.items()})
        for slot, answer in answers.items():
            if isinstance(answer, _WorkerFailure):
                self._restart(self._workers[slot], str(answer))
                continue
            kind, payload = answer
            if kind == "error":
                raise RuntimeError(f"render failed in {self._workers[slot].describe()}. Worker traceback:\n{payload}")
            for i, frame in zip(groups[slot], payload):
                self._last_frame[i] = frame
        missing = [i for i in indices if i not in self._last_frame]
        if missing:
            raise RuntimeError(f"envs {missing} have no frame to show: "
                               f"{[self._failed.get(i, 'never rendered') for i in missing]}")
        return [self._last_frame[i] for i in indices]

    def close(self) -> None:
        """Stop every worker (idempotent); also runs at garbage collection and interpreter exit."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> SubprocVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
