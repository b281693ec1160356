"""The jobs of the robot verbs (commands/teleop.py, collect.py --rig, deploy.py, replay.py): a rig file, its
RobotEnv, and the one ControlLoop on a real-time clock.

Every command reaches the robot through the rig's safety layer (joint, velocity and workspace limits, the largest
step per command, a watchdog on stale observations and overrunning inference). The loop runs at the rig's control
rate on an absolute schedule and reports its timing. Session keys in the terminal: n start, e end the episode
(saved), y end it as a success (saved, labelled), x drop it and redo it, q quit. Ctrl-C stops the robot; an
episode being recorded is saved whole and marked interrupted. Without a terminal (scripts, CI), episodes start at
once.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from robolearn.control.chunking import ChunkExecution
from robolearn.control.clock import Clock, RealTimeClock
from robolearn.control.executor import ChunkRunner
from robolearn.control.loop import ControlLoop, EndEpisode, EpisodeResult, StepEvent
from robolearn.control.recorder import EpisodeRecorder
from robolearn.control.replay_runner import ReplayRunner, recorded_actions
from robolearn.control.session import SessionSummary, record_session
from robolearn.control.session_keys import EventQueue, EventSource, KeyboardEvents, SessionEvent
from robolearn.control.teleop_runner import TeleopRunner
from robolearn.data.store import EpisodeStore
from robolearn.env import EnvSpec, observation_mismatches
from robolearn.hal.rig import Rig
from robolearn.hal.robot_env import RobotEnv
from robolearn.hal.teleop import Teleop
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.registry import TELEOPS

Message = Callable[[str], None]


def make_teleop(name: str) -> Teleop:
    return TELEOPS.get(name)()


@contextlib.contextmanager
def terminal_events() -> Iterator[tuple[EventSource, bool]]:
    """(events, interactive): the terminal's keys when stdin is one, else a queue nobody feeds (episodes start at once)."""
    if sys.stdin.isatty():
        with KeyboardEvents() as keys:
            yield keys, True
    else:
        yield EventQueue(), False


def check_policy_fits(config: PolicyConfig, spec: EnvSpec) -> None:
    """A policy runs on a rig only if the rig observes every key it reads, with the same shape, and takes its actions."""
    problems = observation_mismatches(config.obs_shapes, {k: s.shape for k, s in spec.obs.items()}, "it", "the rig")
    if config.action_dim != spec.action_dim:
        problems.append(f"it outputs {config.action_dim}-d actions, the rig's {spec.extra.get('action_mode')} mode takes "
                        f"{spec.action_dim}")
    if problems:
        raise ValueError(f"the policy does not fit rig task {spec.name!r}: {'; '.join(problems)}. Train on data "
                         f"recorded with this rig (robolearn collect --rig ...)")


def open_rig_store(out: Path, rig: Rig, spec: EnvSpec, source: str) -> EpisodeStore:
    """The store a session records into: a new one, or an existing one recorded with the same rig setup."""
    attrs = {"source": source, "rig": rig.name, "action_mode": rig.action_mode, "obs_keys": sorted(spec.obs),
             "action_meaning": spec.action_meaning}
    if not (out.exists() and any(out.iterdir())):
        out.parent.mkdir(parents=True, exist_ok=True)
        return EpisodeStore.create(out, fps=rig.control_hz, task=spec.name, attrs=attrs)  # writable, locked
    store = EpisodeStore.open(out, mode="a")
    have = store.attrs
    problems = [f"its {key} is {have[key]!r}, this rig's is {attrs[key]!r}"
                for key in ("rig", "action_mode", "obs_keys") if key in have and have[key] != attrs[key]]
    if store.fps is not None and float(store.fps) != float(rig.control_hz):
        problems.append(f"it was recorded at {store.fps} Hz, this rig runs at {rig.control_hz} Hz")
    if problems:
        store.close()
        raise ValueError(f"cannot add to {out}: {'; '.join(problems)}. Record into another store.")
    return store


def timing_line(result: EpisodeResult) -> str:
    """One line on how an episode ended and how well it kept its schedule."""
    t = result.timing
    line = f"{result.steps} steps, ended by {result.end_reason}"
    if t is not None:
        line += (f"; lateness median {t.lateness_median_s * 1e3:.2f} ms, p99 {t.lateness_p99_s * 1e3:.2f} ms, "
                 f"missed periods {t.missed_fraction:.1%}")
    return line


def latency_line(latencies_s: Sequence[float]) -> str:
    if not len(latencies_s):
        return "inference: no calls timed"
    lat = np.asarray(latencies_s) * 1e3
    return (f"inference: {len(lat)} calls, median {np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
            f"max {lat.max():.1f} ms")


def _loop(env: RobotEnv, runner: ChunkRunner, clock: Clock | None, recorder: EpisodeRecorder | None = None,
          max_steps: int | None = None) -> ControlLoop:
    return ControlLoop([env], runner, max_steps=max_steps, clock=clock or RealTimeClock(env.spec.control_hz),
                       recorder=recorder, watchdog=env.watchdog)


# ------------------------------------------------------------------------------------------------ the four jobs
def teleoperate(rig: Rig, teleop: Teleop, seconds: float, events: EventSource, clock: Clock | None = None) -> EpisodeResult:
    """Drive the robot from the device for `seconds` (or until q / e), recording nothing."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    env = rig.build_env(connect=False)
    try:
        teleop.connect()
        loop = _loop(env, TeleopRunner(teleop, env.spec), clock, max_steps=max(1, round(seconds * rig.control_hz)))

        def keys(event: StepEvent) -> EndEpisode | None:
            polled = events.poll()
            return EndEpisode("operator") if SessionEvent.QUIT in polled or SessionEvent.STOP in polled else None

        return loop.run([0], on_step=keys)[0]
    finally:
        teleop.disconnect()
        env.close()


def collect_teleop(rig: Rig, out: Path, teleop: Teleop, events: EventSource, n_episodes: int | None,
                   wait_for_start: bool, clock: Clock | None = None, message: Message = print) -> SessionSummary:
    """Teleoperated demonstrations into `out`, one saved episode per operator start/stop; resumable."""
    env = rig.build_env(connect=False)
    store = None
    try:
        store = open_rig_store(out, rig, env.spec, source=f"teleop ({teleop.name})")
        recorder = EpisodeRecorder(store, obs_keys=list(env.spec.obs), meta={"rig": rig.name, "teleop": teleop.name})
        teleop.connect()
        loop = _loop(env, TeleopRunner(teleop, env.spec), clock, recorder)
        return record_session(loop, events, itertools.count(store.n_episodes), n_episodes, wait_for_start,
                              message=message)
    finally:
        teleop.disconnect()
        env.close()
        if store is not None:
            store.close()  # the write lock goes with the session


def deploy(rig: Rig, policy: Policy, n_episodes: int, events: EventSource, wait_for_start: bool,
           execution: ChunkExecution | None = None, record: Path | None = None, seed_start: int = 0,
           clock: Clock | None = None, message: Message = print) -> SessionSummary:
    """Run `policy` on the robot for `n_episodes` episodes, optionally recording them into `record`."""
    env = rig.build_env(connect=False)
    runner = store = None
    try:
        check_policy_fits(policy.config, env.spec)
        store = open_rig_store(record, rig, env.spec, source="policy rollouts") if record is not None else None
        recorder = EpisodeRecorder(store, obs_keys=list(env.spec.obs), meta={"rig": rig.name}) if store is not None else None
        clock = clock or RealTimeClock(env.spec.control_hz)
        loop = ControlLoop.for_policy([env], policy, execution, clock=clock, recorder=recorder, watchdog=env.watchdog)
        runner = loop.runner
        summary = record_session(loop, events, itertools.count(seed_start), n_episodes, wait_for_start, message=message)
        for result in summary.results:
            message(f"episode seed {result.seed}: {timing_line(result)}")
        message(latency_line(getattr(runner, "latencies_s", [])))
        return summary
    finally:
        close = getattr(runner, "close", None)
        if callable(close):
            close()
        env.close()
        if store is not None:
            store.close()


def replay(rig: Rig, store_path: Path, episode: int, clock: Clock | None = None) -> EpisodeResult:
    """Send the actions of a recorded episode again, at the rate they were recorded (the sim arm re-places its
    objects from the episode's seed)."""
    store = EpisodeStore.open(store_path)
    env = rig.build_env(connect=False)
    try:
        actions = recorded_actions(store, episode, env.spec)
        if store.fps is not None and float(store.fps) != float(env.spec.control_hz):
            raise ValueError(f"{store_path} was recorded at {store.fps} Hz and rig {rig.name!r} runs at "
                             f"{env.spec.control_hz} Hz: replayed at another rate the motion would differ")
        seed = store.episode_meta(episode).get("seed", 0)
        loop = _loop(env, ReplayRunner(actions), clock, max_steps=len(actions))
        return loop.run([int(seed)])[0]
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------ a verb's run
def on_robot(verb: str, job: Callable[[], int]) -> int:
    """Run a robot verb's job: a halt of the robot (e-stop, watchdog, safety limit) is exit code 3 and Ctrl-C 130,
    each one line, after the env has stopped the robot and saved any recording."""
    from robolearn.hal.safety import RobotHalted

    try:
        return job()
    except RobotHalted as err:
        print(f"robolearn {verb}: the robot was stopped: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"robolearn {verb}: interrupted; the robot was stopped", file=sys.stderr)
        return 130
