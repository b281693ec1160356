"""Universal Robots arms over RTDE (the `ur-rtde` package: `rtde_control`, `rtde_receive`, `rtde_io`).

A UR controller wants a servo setpoint every controller tick (500 Hz on e-Series, 125 Hz on CB3) and makes a
jerky, loud motion when a 10 Hz policy target is streamed unchanged. `URRobot` therefore runs its own servo
thread at `command_hz`, timed by RTDE's `initPeriod`/`waitPeriod`, which sends `servoJ` (joint targets) or
`servoL` (pose targets) and moves the setpoint in a straight line from where it is to the policy's latest
target over one policy period (measured from the interval between commands). Joint positions are in rad, poses
are x, y, z (m) and a rotation vector (rad), exactly RTDE's units, so nothing is converted.

The driver does not clip to policy limits (`SafeRobot` does); it enforces what the controller itself requires:
a tick rate the controller runs at, `lookahead_time` in [0.03, 0.2] s and `gain` in [100, 2000].
An optional gripper wired to a tool digital output is driven through `rtde_io` (binary: closed >= 0.5).
"""
from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from robolearn.hal.drivers.interpolation import Segment
from robolearn.hal.drivers.sdk import import_sdk
from robolearn.hal.robot import RobotLimits, RobotState

# UR5e datasheet: every joint +-360 deg at 180 deg/s; reach 850 mm. Rigs override these with their own cell.
UR5E_LIMITS = RobotLimits(
    joint_lower=(-2 * math.pi,) * 6,
    joint_upper=(2 * math.pi,) * 6,
    joint_max_velocity=(math.pi,) * 6,
    workspace_low=(-0.85, -0.85, 0.0),
    workspace_high=(0.85, 0.85, 1.0),
)
MAX_CONTROLLER_HZ = 500.0  # e-Series RTDE; a CB3 runs at 125 Hz
LOOKAHEAD_RANGE = (0.03, 0.2)  # s, URScript servoj/servol
GAIN_RANGE = (100.0, 2000.0)
# servoJ/servoL take a speed and an acceleration that the controller ignores in servo mode; ur_rtde still checks
# them against its joint/tool ranges, so send the values its own examples use.
_SERVO_SPEED, _SERVO_ACCELERATION = 0.5, 0.5
_TOOL_OUTPUT_BIT0 = 16  # actual_digital_output_bits: 0-7 standard, 8-15 configurable, 16-17 tool outputs


class URRobot:
    """A UR arm behind the `Robot` protocol; call `connect()` before anything else and `disconnect()` at the end."""

    def __init__(
        self,
        host: str,
        command_hz: float = 500.0,
        lookahead_time: float = 0.1,
        gain: float = 300.0,
        limits: RobotLimits = UR5E_LIMITS,
        name: str = "ur",
        interpolation_s: float | None = None,
        first_interpolation_s: float = 0.1,
        max_interpolation_s: float = 0.5,
        servo_stop_deceleration: float = 10.0,
        stop_deceleration: float = 2.0,
        gripper_tool_output: int | None = None,
        sdk: Any = None,
    ):
        """`interpolation_s` fixes the time each new target is approached over; None measures it as the interval
        since the previous command (the policy period), clamped to [2 ticks, `max_interpolation_s`]; the first
        command after connect/stop/mode change uses `first_interpolation_s`. `sdk` replaces the ur_rtde modules
        (an object with `rtde_control`, `rtde_receive` and `rtde_io` attributes), for tests."""
        if not host:
            raise ValueError("URRobot needs the robot's host name or IP address")
        if not 0 < command_hz <= MAX_CONTROLLER_HZ:
            raise ValueError(f"command_hz={command_hz}: UR controllers take servo commands at up to {MAX_CONTROLLER_HZ:g} Hz "
                             "(500 on e-Series, 125 on CB3)")
        if not LOOKAHEAD_RANGE[0] <= lookahead_time <= LOOKAHEAD_RANGE[1]:
            raise ValueError(f"lookahead_time={lookahead_time} s is outside the controller's range {LOOKAHEAD_RANGE}")
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
            raise ValueError(f"gain={gain} is outside the controller's range {GAIN_RANGE}")
        if limits.n_joints != 6:
            raise ValueError(f"UR arms have 6 joints; limits declare {limits.n_joints}")
        min_s = 2.0 / command_hz
        for label, value in (("first_interpolation_s", first_interpolation_s), ("max_interpolation_s", max_interpolation_s),
                             ("interpolation_s", interpolation_s)):
            if value is not None and value < min_s:
                raise ValueError(f"{label}={value} s is shorter than two controller ticks ({min_s} s)")
        if gripper_tool_output not in (None, 0, 1):
            raise ValueError(f"gripper_tool_output={gripper_tool_output}: UR tools have digital outputs 0 and 1")
        self.host = host
        self.name = name
        self.limits = limits
        self.command_hz = float(command_hz)
        self.lookahead_time = float(lookahead_time)
        self.gain = float(gain)
        self.interpolation_s = interpolation_s
        self.first_interpolation_s = first_interpolation_s
        self.max_interpolation_s = max_interpolation_s
        self.servo_stop_deceleration = servo_stop_deceleration
        self.stop_deceleration = stop_deceleration
        self.gripper_tool_output = gripper_tool_output
        self._sdk = sdk
        self._control: Any = None
        self._receive: Any = None
        self._io: Any = None
        self._lock = threading.Lock()  # guards the segment and command bookkeeping
        self._sdk_lock = threading.Lock()  # one caller of the control interface at a time (servo thread vs stop)
        self._segment: Segment | None = None
        self._last_command_t: float | None = None
        self._gripper_level: bool | None = None
        self._fault: str | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # -- connection

    def connect(self) -> None:
        if self._control is not None:
            return
        sdk = self._sdk or _load_sdk(with_io=self.gripper_tool_output is not None)
        try:
            self._receive = sdk.rtde_receive.RTDEReceiveInterface(self.host, self.command_hz)
            self._control = sdk.rtde_control.RTDEControlInterface(self.host, self.command_hz)
            if self.gripper_tool_output is not None:
                self._io = sdk.rtde_io.RTDEIOInterface(self.host)
        except RuntimeError as e:
            self._close_interfaces()
            raise ConnectionError(
                f"URRobot could not connect to {self.host}: {e}. Check that the arm is powered and reachable, that an "
                "e-Series is in Remote Control mode, and that no other program holds its RTDE interface") from e
        q = self._receive.getActualQ()
        if len(q) != 6:
            self._close_interfaces()
            raise ConnectionError(f"URRobot at {self.host} reported {len(q)} joint positions instead of 6")
        self._fault = None
        self._closing.clear()
        self._thread = threading.Thread(target=self._servo_loop, name=f"{self.name}-servo", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        if self._control is None:
            return
        self.stop()
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._sdk_lock:
            self._control.stopScript()
        self._close_interfaces()

    def _close_interfaces(self) -> None:
        for interface in (self._control, self._receive, self._io):
            if interface is not None:
                interface.disconnect()
        self._control = self._receive = self._io = None

    # -- state

    def read_state(self) -> RobotState:
        receive = self._require_connected()
        q = np.asarray(receive.getActualQ(), dtype=np.float64)
        qd = np.asarray(receive.getActualQd(), dtype=np.float64)
        pose = np.asarray(receive.getActualTCPPose(), dtype=np.float64)
        t = time.monotonic()
        gripper = 0.0
        if self.gripper_tool_output is not None:
            bits = int(receive.getActualDigitalOutputBits())
            gripper = float((bits >> (_TOOL_OUTPUT_BIT0 + self.gripper_tool_output)) & 1)
        return RobotState(joint_positions=q, joint_velocities=qd, ee_pose=pose, gripper=gripper, timestamp=t)

    # -- commands

    def command_joint_positions(self, q: np.ndarray) -> None:
        self._command(_as_vector(q, 6, "joint target q"), is_pose=False)

    def command_ee_pose(self, pose: np.ndarray) -> None:
        self._command(_as_vector(pose, 6, "pose target (x, y, z, rx, ry, rz)"), is_pose=True)

    def command_gripper(self, closed: float) -> None:
        if self.gripper_tool_output is None:
            raise RuntimeError(f"URRobot {self.name!r} has no gripper configured: pass gripper_tool_output=0 or 1 "
                               "for a gripper wired to a tool digital output")
        if not 0.0 <= closed <= 1.0:
            raise ValueError(f"gripper command must be in [0, 1] (0 open, 1 closed), got {closed}")
        self._require_connected()
        level = closed >= 0.5
        if level != self._gripper_level:  # the output is a level: resending the same one every step is pointless
            if not self._io.setToolDigitalOut(self.gripper_tool_output, level):
                raise RuntimeError(f"UR at {self.host} refused to set tool digital output {self.gripper_tool_output}")
            self._gripper_level = level

    def stop(self) -> None:
        """Decelerate to a halt: servoStop when servoing, stopJ otherwise. Safe before connect and after faults."""
        with self._lock:
            servoing = self._segment is not None
            self._segment = None
            self._last_command_t = None
        if self._control is None:
            return
        with self._sdk_lock:
            if servoing:
                self._control.servoStop(self.servo_stop_deceleration)
            else:
                self._control.stopJ(self.stop_deceleration)

    def _command(self, target: np.ndarray, is_pose: bool) -> None:
        receive = self._require_connected()
        now = time.monotonic()
        with self._lock:
            if self._fault is not None:
                raise RuntimeError(self._fault)
            current = self._segment
            if current is not None and current.is_pose == is_pose:
                start = current.at(now)
                duration = self._policy_period(now)
            else:  # (re)starting servo mode: begin from where the arm is, not from a stale target
                start = np.asarray(receive.getActualTCPPose() if is_pose else receive.getActualQ(), dtype=np.float64)
                duration = self.interpolation_s or self.first_interpolation_s
            self._segment = Segment(start, target, now, duration, is_pose=is_pose)
            self._last_command_t = now
        self._wake.set()

    def _policy_period(self, now: float) -> float:
        if self.interpolation_s is not None:
            return self.interpolation_s
        if self._last_command_t is None:
            return self.first_interpolation_s
        return float(np.clip(now - self._last_command_t, 2.0 / self.command_hz, self.max_interpolation_s))

    # -- servo thread

    def _servo_loop(self) -> None:
        tick = 1.0 / self.command_hz
        control = self._control
        while not self._closing.is_set():
            segment = self._segment
            if segment is None:  # idle: nothing to hold, so do not spin the controller's period timer
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            t_cycle = control.initPeriod()
            setpoint = segment.at(time.monotonic()).tolist()
            with self._sdk_lock:
                if self._segment is not segment:  # stop() or a new command won the race; take the next tick
                    continue
                try:
                    if segment.is_pose:
                        ok = control.servoL(setpoint, _SERVO_SPEED, _SERVO_ACCELERATION, tick, self.lookahead_time, self.gain)
                    else:
                        ok = control.servoJ(setpoint, _SERVO_SPEED, _SERVO_ACCELERATION, tick, self.lookahead_time, self.gain)
                except Exception as e:  # a lost connection must not kill the thread silently
                    ok, reason = False, f"{type(e).__name__}: {e}"
                else:
                    reason = "the controller is not running the RTDE control script (protective stop, e-stop or " \
                             "program stopped on the pendant?)"
            if not ok:
                self._fault_stop(f"UR at {self.host} rejected a servo command: {reason}. Clear the cause on the "
                                 "pendant, then disconnect() and connect() again")
                continue
            control.waitPeriod(t_cycle)

    def _fault_stop(self, message: str) -> None:
        with self._lock:
            self._fault = message
            self._segment = None

    def _require_connected(self) -> Any:
        if self._receive is None:
            raise RuntimeError(f"URRobot {self.name!r} is not connected: call connect() first")
        return self._receive


def _load_sdk(with_io: bool) -> SimpleNamespace:
    return SimpleNamespace(
        rtde_control=import_sdk("rtde_control", "ur-rtde", "URRobot"),
        rtde_receive=import_sdk("rtde_receive", "ur-rtde", "URRobot"),
        rtde_io=import_sdk("rtde_io", "ur-rtde", "URRobot") if with_io else None,
    )


def _as_vector(value: np.ndarray, n: int, what: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.shape != (n,):
        raise ValueError(f"{what} must have {n} values, got shape {np.shape(value)}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contains NaN or inf: {v}")
    return v
