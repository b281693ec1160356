"""The safety layer: every command that reaches hardware passes through `SafeRobot`.

Policy of the layer (one rule per kind of bad command):
- wrong shape or not numbers (strings, None, bools, object or complex arrays): `ValueError` at once (a
  programming error, nothing is sent);
- non-finite values (NaN, inf, or a rotation too large to represent): REJECTED. The command is dropped, the robot
  holds via `stop()`, the rejection is counted and a `SafetyViolation` is kept. A NaN means the policy is broken,
  and no clipped version of it is meaningful;
- finite values out of range: CLIPPED and counted. Joint targets go into [lower, upper], then within
  `max_joint_step` and `joint_max_velocity / command_hz` of the measured position; end-effector targets go into
  the workspace box, then within `max_ee_step` (a ball) and `max_ee_rotation_step` of the measured pose; the gripper
  goes into [0, 1]. The step limits are applied last, so they always hold; the range limits hold whenever the
  measured position lies inside them (from outside, a command moves back toward them, one step at a time);
- a measured state that cannot be trusted: the command is rejected as for non-finite values (the robot holds via
  `stop()`), since limits relative to a wrong position mean nothing. `state_problem` says why; the rule:
  - its timestamp must be a finite number on `time.monotonic()`'s clock, no further than `stale_after_s` from now
    either way (older is stale; a wall-clock `time.time()` stamp lies far in the future) and never earlier than
    the last accepted state's;
  - joint positions, velocities and the gripper must be finite, the positions within one joint range (at least
    pi rad) of the limits, and no joint may move more than `JUMP_FACTOR` x the hardware's own top speed x the
    time since the last accepted state, plus `JUMP_SLACK_RAD` (encoder glitches and wrong units jump further);
  - the end-effector pose must be finite for pose commands (an arm without forward kinematics reports all NaN,
    which joint commands accept) and lie within `ABSURD_EE_M` of the workspace box.
  `read_state()` applies the same check and stops the robot when it fails, so a broken reading halts it even
  between commands;
- e-stop engaged or watchdog tripped: every command is refused (counted) until `clear_estop()` / watchdog `reset()`.

The workspace box bounds end-effector commands only: the Robot protocol has no forward kinematics, so joint
commands are held to the joint ranges and steps, not to the box. Give joint-controlled rigs narrow joint ranges.

`Watchdog` stops the robot once when the loop stops delivering fresh observations or an inference overruns, and
latches: a human decides when motion resumes. `feed` refuses (ValueError) a timestamp that is not a finite number
or lies in the future, and keeps its deadline: one bad value must not switch the watchdog off. An old timestamp
is accepted but never postpones the deadline. Every limit and timeout is checked finite and positive when built.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.hal.robot import Robot, RobotLimits, RobotState

# Outcomes of one command, returned by SafeRobot's command methods.
SENT, CLIPPED, REJECTED, BLOCKED = "sent", "clipped", "rejected", "blocked"
COUNTERS = ("commands", "sent", "clipped", "rejected_non_finite", "rejected_stale", "rejected_bad_state", "blocked_estop",
            "blocked_watchdog", "stops", "estops", "watchdog_trips")
_REJECT_COUNTER = {"non_finite": "rejected_non_finite", "stale_state": "rejected_stale", "bad_state": "rejected_bad_state"}

# The measured-state rule (see the module docstring).
JUMP_FACTOR = 1.5  # x the hardware's top joint speed: faster than the motors can move is a bad reading
JUMP_SLACK_RAD = 0.1  # rad allowed on top, for readings taken at (nearly) the same time
ABSURD_EE_M = 2.0  # m outside the workspace box: no arm on a table reaches that far
FEED_SLACK_S = 1e-3  # s a watchdog timestamp may lie ahead of the clock (rounding between the same clock's reads)


@dataclass(frozen=True)
class SafetyViolation:
    kind: str  # "non_finite", "stale_state", "clipped", "estop", "watchdog", "blocked"
    command: str  # "joint_positions", "ee_pose", "gripper" or "" for events
    detail: str
    timestamp: float  # time.monotonic()


def positive_finite(value: object, what: str) -> float:
    """`value` as a float, or a ValueError naming `what`: limits and timeouts must be positive finite numbers."""
    number = _real(value, what)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return number


def _real(value: object, what: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def command_array(values: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A command as float64 of `shape`, or a ValueError: only int/float numbers (not strings, None, bools, objects)."""
    if values is None or isinstance(values, str | bytes | bool | np.bool_):
        raise ValueError(f"{what} must be numbers, got {type(values).__name__} {values!r}")
    try:
        a = np.asarray(values)
    except (TypeError, ValueError) as err:  # ragged lists
        raise ValueError(f"{what} must be numbers, got {values!r}: {err}") from err
    if a.dtype.kind not in "iuf":  # "U"/"S" strings, "O" objects and huge ints, "b" bools, "c" complex
        raise ValueError(f"{what} must be numbers, got {values!r} (dtype {a.dtype})")
    if a.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got shape {a.shape}; check the action layout / rig's joint count")
    return a.astype(np.float64)


def finite_rotation(rotvec: np.ndarray) -> bool:
    """Whether a rotation vector names a rotation: finite, and its norm too (1e308 is finite, its square is not)."""
    return bool(np.all(np.isfinite(rotvec)) and np.isfinite(np.linalg.norm(rotvec)))


class RobotHalted(RuntimeError):
    """Raised by RobotEnv when the e-stop or the watchdog holds the robot: the episode cannot go on."""


class Watchdog:
    """Stops the robot when observations go stale or an inference overruns `timeout_s`; latches until `reset()`.

    The loop calls `feed(t)` with each fresh observation's timestamp and wraps inference in `with inference():`.
    `check()` does the test; `start()` runs it in a background thread so a hung loop is still caught. Until the
    first `feed` or `arm()` nothing is watched (startup and homing are not episodes).
    """

    def __init__(self, timeout_s: float, stop: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.timeout_s = positive_finite(timeout_s, "watchdog timeout_s")
        self.stop = stop
        self.clock = clock
        self._lock = threading.Lock()
        self._last_fresh: float | None = None
        self._inference_started: float | None = None
        self._tripped = False
        self.reason = ""
        self.trips = 0
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def tripped(self) -> bool:
        return self._tripped

    @property
    def armed(self) -> bool:
        return self._last_fresh is not None

    def arm(self) -> None:
        """Start watching now, as if a fresh observation had just arrived."""
        with self._lock:
            self._last_fresh = self.clock()

    def disarm(self) -> None:
        with self._lock:
            self._last_fresh = None
            self._inference_started = None

    def check_timestamp(self, timestamp: object) -> float:
        """`timestamp` as a float if `feed` would take it, else a ValueError saying why."""
        now = self.clock()
        t = _real(timestamp, "watchdog.feed(timestamp)")
        if not math.isfinite(t):
            raise ValueError(f"watchdog.feed(timestamp): {t} is not a finite time; the observation's timestamp is broken")
        if t > now + FEED_SLACK_S:
            raise ValueError(f"watchdog.feed(timestamp): {t} lies {t - now:.3g} s in the future; timestamps must come "
                             "from time.monotonic() (not time.time())")
        return t

    def feed(self, timestamp: float | None = None) -> None:
        """A fresh observation measured at `timestamp` (monotonic; default now). An old timestamp does not refresh;
        one that is not a finite number or lies in the future raises ValueError and changes nothing."""
        t = self.clock() if timestamp is None else self.check_timestamp(timestamp)
        with self._lock:
            self._last_fresh = t if self._last_fresh is None else max(self._last_fresh, t)

    def inference_started(self) -> None:
        with self._lock:
            self._inference_started = self.clock()
            if self._last_fresh is None:
                self._last_fresh = self._inference_started

    def inference_finished(self) -> None:
        with self._lock:
            self._inference_started = None

    @contextmanager
    def inference(self) -> Iterator[None]:
        self.inference_started()
        try:
            yield
        finally:
            self.inference_finished()

    def check(self, now: float | None = None) -> bool:
        """Trip if observations are stale or an inference overran; returns whether the watchdog is tripped."""
        now = self.clock() if now is None else _real(now, "watchdog.check(now)")
        if not math.isfinite(now):  # a NaN `now` compares False with every deadline: it would never trip
            raise ValueError(f"watchdog.check(now): {now} is not a finite time")
        with self._lock:
            if self._tripped or self._last_fresh is None:
                return self._tripped
            if self._inference_started is not None and now - self._inference_started > self.timeout_s:
                reason = f"inference has run {now - self._inference_started:.3f} s (timeout {self.timeout_s} s)"
            elif now - self._last_fresh > self.timeout_s:
                reason = f"no fresh observation for {now - self._last_fresh:.3f} s (timeout {self.timeout_s} s)"
            else:
                return False
            self._tripped = True  # latched before stopping, so stop() runs exactly once
            self.reason = reason
            self.trips += 1
        if self.stop is not None:
            self.stop()
        return True

    def reset(self) -> None:
        """Clear a trip and stop watching until the next feed / arm."""
        with self._lock:
            self._tripped = False
            self.reason = ""
            self._last_fresh = None
            self._inference_started = None

    def start(self, poll_s: float | None = None) -> None:
        """Check in a background thread every `poll_s` (default a fifth of the timeout, at most 20 ms)."""
        if self._thread is not None:
            return
        period = positive_finite(poll_s, "watchdog poll_s") if poll_s is not None else min(self.timeout_s / 5, 0.02)
        self._closing.clear()

        def run() -> None:
            while not self._closing.wait(period):
                self.check()

        self._thread = threading.Thread(target=run, name="watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None


class SafeRobot:
    """A `Robot` that wraps another and enforces `limits` on every command (see the module docstring).

    `command_hz` is the rate at which commands pass through this wrapper (the velocity limit allows
    `joint_max_velocity / command_hz` per command); by default the wrapped robot's. Command methods return
    SENT, CLIPPED, REJECTED or BLOCKED.
    """

    def __init__(self, robot: Robot, limits: RobotLimits | None = None, stale_after_s: float = 0.1,
                 command_hz: float | None = None, watchdog: Watchdog | None = None, max_violations: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        self.robot = robot
        self.limits = limits if limits is not None else robot.limits
        if not isinstance(self.limits, RobotLimits):
            raise TypeError(f"limits must be a RobotLimits, got {type(self.limits).__name__}")
        self.stale_after_s = positive_finite(stale_after_s, "stale_after_s")
        self.command_hz = positive_finite(command_hz if command_hz is not None else robot.command_hz, "command_hz")
        if isinstance(max_violations, bool) or not isinstance(max_violations, int) or max_violations < 1:
            raise ValueError(f"max_violations must be a positive integer, got {max_violations!r}")
        robot_limits = getattr(robot, "limits", None)
        if isinstance(robot_limits, RobotLimits) and robot_limits.n_joints != self.limits.n_joints:
            raise ValueError(f"limits declare {self.limits.n_joints} joints but {robot.name} has {robot_limits.n_joints}")
        self.name = f"safe({robot.name})"
        self.clock = clock
        lim = self.limits
        # how fast the joints can physically move: the hardware's own limits when the driver declares them
        top = robot_limits if isinstance(robot_limits, RobotLimits) else lim
        self._top_speed = np.maximum(np.array(top.joint_max_velocity, float), np.array(lim.joint_max_velocity, float))
        self._q_margin = np.maximum(np.array(lim.joint_upper, float) - np.array(lim.joint_lower, float), math.pi)
        self._last_state: RobotState | None = None  # the last measured state that passed state_problem()
        self._state_lock = threading.Lock()
        self._lower, self._upper = np.array(lim.joint_lower, float), np.array(lim.joint_upper, float)
        self._joint_step = np.minimum(lim.max_joint_step, np.array(lim.joint_max_velocity, float) / self.command_hz)
        self._box_low, self._box_high = np.array(lim.workspace_low, float), np.array(lim.workspace_high, float)
        # _lock serializes commands (held across driver calls); _stats guards counters and records and is never
        # held across a driver call, so estop() and the watchdog reach stop() even while a command hangs.
        self._lock = threading.Lock()
        self._stats = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.violations: deque[SafetyViolation] = deque(maxlen=max_violations)
        self._estop_reason: str | None = None
        self.last_sent: dict[str, np.ndarray | float] = {}  # the latest command of each kind that reached the robot
        self.watchdog: Watchdog | None = None
        if watchdog is not None:
            self.attach_watchdog(watchdog)

    # ------------------------------------------------------------------ state
    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def halted(self) -> str:
        """Why commands are refused now ("" when they are not)."""
        if self._estop_reason is not None:
            return f"e-stop engaged ({self._estop_reason}); call clear_estop() once it is safe"
        if self.watchdog is not None and self.watchdog.tripped:
            return f"watchdog tripped: {self.watchdog.reason}; call watchdog.reset() once it is safe"
        return ""

    def attach_watchdog(self, watchdog: Watchdog) -> None:
        """Make `watchdog` stop the wrapped robot when it trips, and refuse commands while it is tripped."""
        watchdog.stop = self._on_watchdog
        self.watchdog = watchdog

    def _count(self, key: str, kind: str = "", command: str = "", detail: str = "") -> None:
        """Count an event and, when `kind` is given, keep a SafetyViolation record of it."""
        with self._stats:
            self.counters[key] += 1
            if kind:
                self.violations.append(SafetyViolation(kind, command, detail, time.monotonic()))

    def _on_watchdog(self) -> None:
        self.stop()
        self._count("watchdog_trips", "watchdog", "", self.watchdog.reason if self.watchdog else "")

    def estop(self, reason: str = "operator") -> None:
        """Stop now and refuse every command until `clear_estop()`. Safe to call from any thread, at any time."""
        first = self._estop_reason is None
        self._estop_reason = reason  # every command checks this before and after it reaches the robot
        self.stop()
        if first:
            self._count("estops", "estop", "", reason)

    def clear_estop(self) -> None:
        self._estop_reason = None

    # ------------------------------------------------------------------ Robot protocol
    def connect(self) -> None:
        self.robot.connect()

    def disconnect(self) -> None:
        self.robot.disconnect()

    def read_state(self) -> RobotState:
        """The wrapped robot's state; one that fails `state_problem` stops the robot and is recorded (not raised:
        the caller sees the state, and the next command is rejected)."""
        state = self.robot.read_state()
        problem = self.state_problem(state)
        if problem:
            self._reject(*problem, "read_state")
        return state

    def stop(self) -> None:
        self.robot.stop()
        self._count("stops")

    # ------------------------------------------------------------------ measured state
    def state_problem(self, state: RobotState, need_pose: bool = False) -> tuple[str, str] | None:
        """None when `state` can be trusted, else (kind, reason) by the rule in the module docstring. An accepted
        state becomes the reference for the next one's timestamp order and jump test."""
        kind, reason = self._judge(state, need_pose)
        if kind:
            return kind, reason
        with self._state_lock:
            if self._last_state is None or state.timestamp >= self._last_state.timestamp:
                self._last_state = state
        return None

    def _judge(self, state: RobotState, need_pose: bool) -> tuple[str, str]:
        t = state.timestamp
        if isinstance(t, bool | np.bool_) or not isinstance(t, int | float | np.integer | np.floating) \
                or not math.isfinite(t):
            return "stale_state", f"measured state has timestamp {t!r}, not a finite time.monotonic() value"
        age = self.clock() - float(t)
        if age > self.stale_after_s:
            return "stale_state", f"measured state is {age:.3f} s old (limit {self.stale_after_s} s)"
        if age < -self.stale_after_s:
            return "stale_state", (f"measured state is stamped {-age:.3g} s in the future: its timestamp is not on "
                                   "time.monotonic()'s clock (time.time()?)")
        with self._state_lock:
            last = self._last_state
        if last is not None and t < last.timestamp:
            return "stale_state", f"measured state's timestamp went backwards ({t} after {last.timestamp})"
        n = self.limits.n_joints
        arrays = {}
        for name in ("joint_positions", "joint_velocities", "ee_pose"):
            try:
                arrays[name] = np.asarray(getattr(state, name), dtype=np.float64)
            except (TypeError, ValueError):
                return "bad_state", f"measured {name} are not numbers: {getattr(state, name)!r}"
            want = (6,) if name == "ee_pose" else (n,)
            if arrays[name].shape != want:
                return "bad_state", f"measured {name} have shape {arrays[name].shape}, expected {want}"
        q, pose = arrays["joint_positions"], arrays["ee_pose"]
        for name in ("joint_positions", "joint_velocities"):
            if not np.all(np.isfinite(arrays[name])):
                return "bad_state", f"measured {name.replace('_', ' ')} not finite: {arrays[name].tolist()}"
        try:
            gripper = _real(state.gripper, "gripper")
        except ValueError:
            gripper = math.nan
        if not math.isfinite(gripper):
            return "bad_state", f"measured gripper {state.gripper!r} is not a finite number"
        outside = np.flatnonzero((q < self._lower - self._q_margin) | (q > self._upper + self._q_margin))
        if outside.size:
            return "bad_state", (f"measured joint positions {q[outside].tolist()} (joints {outside.tolist()}) lie "
                                 "further outside the joint limits than an arm can be: a broken reading or wrong units")
        if last is not None:
            dt = max(float(t) - float(last.timestamp), 0.0)
            jump = np.abs(q - np.asarray(last.joint_positions, dtype=np.float64))
            allowed = JUMP_FACTOR * self._top_speed * dt + JUMP_SLACK_RAD
            if np.any(jump > allowed):
                j = int(np.argmax(jump - allowed))
                return "bad_state", (f"measured joint {j} jumped {jump[j]:.4g} rad in {dt:.4g} s (at most "
                                     f"{allowed[j]:.4g} rad possible): a broken reading")
        pose_known = not np.all(np.isnan(pose))  # all NaN: the arm has no forward kinematics
        if pose_known or need_pose:
            if not (np.all(np.isfinite(pose[:3])) and finite_rotation(pose[3:])):
                return "bad_state", f"measured pose not finite: {pose.tolist()}"
            gap = np.maximum(self._box_low - pose[:3], 0) + np.maximum(pose[:3] - self._box_high, 0)
            if np.linalg.norm(gap) > ABSURD_EE_M:
                return "bad_state", (f"measured end-effector position {pose[:3].tolist()} lies {np.linalg.norm(gap):.3g} m "
                                     f"outside the workspace box (more than {ABSURD_EE_M} m): a broken reading")
        return "", ""

    # ------------------------------------------------------------------ gating
    @staticmethod
    def _as_array(values, shape: tuple[int, ...], what: str) -> np.ndarray:
        return command_array(values, shape, what)

    def _blocked(self, command: str) -> bool:
        """Count and refuse a command while the e-stop or the watchdog holds the robot."""
        if self._estop_reason is not None:
            self._count("blocked_estop")
            return True
        if self.watchdog is not None and (self.watchdog.tripped or self.watchdog.check()):
            self._count("blocked_watchdog")
            return True
        return False

    def _reject(self, kind: str, detail: str, command: str) -> str:
        self.stop()
        self._count(_REJECT_COUNTER[kind], kind, command, detail)
        return REJECTED

    def reject_reading(self, detail: str) -> None:
        """Stop the robot and record a broken reading found outside this wrapper (e.g. a camera frame's timestamp)."""
        self._reject("bad_state", detail, "read_state")

    def _measured(self, command: str) -> RobotState | str:
        """The measured state, or REJECTED (the robot stopped) when `state_problem` finds it untrustworthy."""
        state = self.robot.read_state()
        problem = self.state_problem(state, need_pose=command == "ee_pose")
        if problem:
            return self._reject(*problem, command)
        return state

    def _sent(self, command: str, clipped: bool, detail: str) -> str:
        """Bookkeeping after a command reached the robot; an e-stop that came in meanwhile stops it again."""
        if self._estop_reason is not None or (self.watchdog is not None and self.watchdog.tripped):
            self.robot.stop()
        self._count("sent")
        if clipped:
            self._count("clipped", "clipped", command, detail)
        return CLIPPED if clipped else SENT

    # ------------------------------------------------------------------ commands
    def command_joint_positions(self, q: np.ndarray) -> str:
        target = self._as_array(q, (self.limits.n_joints,), "joint position command")
        with self._lock:
            self._count("commands")
            if self._blocked("joint_positions"):
                return BLOCKED
            if not np.all(np.isfinite(target)):
                return self._reject("non_finite", f"non-finite joint targets {target.tolist()}", "joint_positions")
            state = self._measured("joint_positions")
            if isinstance(state, str):
                return state
            measured = np.asarray(state.joint_positions, dtype=np.float64)
            if measured.shape != target.shape:
                raise RuntimeError(f"{self.robot.name} reports {measured.size} joints but its limits declare {target.size}")
            safe = np.clip(target, self._lower, self._upper)
            safe = np.clip(safe, measured - self._joint_step, measured + self._joint_step)
            clipped = not np.array_equal(safe, target)
            self.robot.command_joint_positions(safe)
            self.last_sent["joint_positions"] = safe
            return self._sent("joint_positions", clipped, f"joint targets moved by up to {np.abs(safe - target).max():.4g} rad")

    def command_ee_pose(self, pose: np.ndarray) -> str:
        target = self._as_array(pose, (6,), "end-effector pose command (x, y, z, rx, ry, rz)")
        with self._lock:
            self._count("commands")
            if self._blocked("ee_pose"):
                return BLOCKED
            # A finite rotation vector whose norm overflows names no rotation: treat it like a NaN.
            if not (np.all(np.isfinite(target[:3])) and finite_rotation(target[3:])):
                return self._reject("non_finite", f"non-finite end-effector target {target.tolist()}", "ee_pose")
            state = self._measured("ee_pose")
            if isinstance(state, str):
                return state
            measured = np.asarray(state.ee_pose, dtype=np.float64)
            position = np.clip(target[:3], self._box_low, self._box_high)
            move = position - measured[:3]
            distance = np.linalg.norm(move)
            if distance > self.limits.max_ee_step:
                position = measured[:3] + move * (self.limits.max_ee_step / distance)
            current = Rotation.from_rotvec(measured[3:])
            relative = Rotation.from_rotvec(target[3:]) * current.inv()
            angle = relative.magnitude()
            rotation = target[3:]
            if angle > self.limits.max_ee_rotation_step:
                limited = Rotation.from_rotvec(relative.as_rotvec() * (self.limits.max_ee_rotation_step / angle))
                rotation = (limited * current).as_rotvec()
            safe = np.concatenate([position, rotation])
            clipped = not np.array_equal(safe, target)
            self.robot.command_ee_pose(safe)
            self.last_sent["ee_pose"] = safe
            return self._sent("ee_pose", clipped, f"position moved by {np.linalg.norm(position - target[:3]):.4g} m, "
                              f"rotation limited from {angle:.4g} rad")

    def command_gripper(self, closed: float) -> str:
        g = float(self._as_array(closed, (), "gripper command (0 open .. 1 closed)"))
        with self._lock:
            self._count("commands")
            if self._blocked("gripper"):
                return BLOCKED
            if not np.isfinite(g):
                return self._reject("non_finite", f"non-finite gripper command {g}", "gripper")
            safe = min(max(g, 0.0), 1.0)
            self.robot.command_gripper(safe)
            self.last_sent["gripper"] = safe
            return self._sent("gripper", safe != g, f"gripper {g} clipped to {safe}")
