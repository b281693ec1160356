"""Franka Panda / FR3 through `franky` (pip: franky-control, whose wheel must match the robot's firmware).

franky runs libfranka's 1 kHz loop and Ruckig trajectory generation in C++; a policy only sends targets. Each
command becomes an asynchronous `JointMotion` or `CartesianMotion` that preempts the running one, so a 10 Hz
policy streams targets and franky blends them jerk-limited. The robot-wide `relative_dynamics_factor` (0..1]
scales franky's velocity/acceleration/jerk limits. franky cannot preempt a motion with one of another control
type, so switching between joint and pose commands first waits for the running motion to finish.

Poses: franky's `Affine` carries a translation (m) and a quaternion (x, y, z, w); they are converted to and from
the protocol's rotation vectors. The Franka Hand is binary here (closed >= 0.5 grasps with any object width,
below it opens), sent only when the level changes; its width is polled in the background because reading it
waits on the gripper's own state stream.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.hal.drivers.sdk import import_sdk
from robolearn.hal.robot import RobotLimits, RobotState

# Franka Emika Panda datasheet joint limits (rad, rad/s); FR3 rigs pass their own.
PANDA_LIMITS = RobotLimits(
    joint_lower=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    joint_upper=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    joint_max_velocity=(2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100),
    workspace_low=(-0.855, -0.855, 0.0),
    workspace_high=(0.855, 0.855, 1.0),
)
FCI_HZ = 1000.0  # libfranka's control rate: no command stream can usefully be faster


class FrankaRobot:
    """A Franka arm behind the `Robot` protocol."""

    def __init__(
        self,
        host: str,
        relative_dynamics_factor: float = 0.1,
        command_hz: float = 10.0,
        limits: RobotLimits = PANDA_LIMITS,
        gripper: bool = True,
        gripper_speed: float = 0.05,
        gripper_force: float = 20.0,
        mode_switch_timeout_s: float = 10.0,
        name: str = "franka",
        sdk: Any = None,
    ):
        """`sdk` replaces the `franky` module, for tests."""
        if not host:
            raise ValueError("FrankaRobot needs the robot's FCI host name or IP address")
        if not 0 < relative_dynamics_factor <= 1:
            raise ValueError(f"relative_dynamics_factor must be in (0, 1], got {relative_dynamics_factor}")
        if not 0 < command_hz <= FCI_HZ:
            raise ValueError(f"command_hz={command_hz}: the Franka control interface runs at {FCI_HZ:g} Hz at most")
        if limits.n_joints != 7:
            raise ValueError(f"Franka arms have 7 joints; limits declare {limits.n_joints}")
        if not 0 < gripper_speed <= 0.1 or not 0 < gripper_force <= 70:
            raise ValueError("the Franka Hand moves at up to 0.1 m/s and grasps with up to 70 N "
                             f"(got speed {gripper_speed}, force {gripper_force})")
        self.host = host
        self.relative_dynamics_factor = relative_dynamics_factor
        self.command_hz = float(command_hz)
        self.limits = limits
        self.use_gripper = gripper
        self.gripper_speed = gripper_speed
        self.gripper_force = gripper_force
        self.mode_switch_timeout_s = mode_switch_timeout_s
        self.name = name
        self._sdk = sdk
        self._franky: Any = None
        self._robot: Any = None
        self._gripper: Any = None
        self._mode: str | None = None  # "joint" | "pose": the control type of the last motion sent
        self._gripper_closed: bool | None = None
        self._max_width = 0.0
        self._width = 0.0
        self._gripper_error: str | None = None
        self._closing = threading.Event()
        self._poller: threading.Thread | None = None

    def connect(self) -> None:
        if self._robot is not None:
            return
        franky = self._sdk or import_sdk("franky", "franky-control", "FrankaRobot", extra=None)
        try:
            robot = franky.Robot(self.host)
            gripper = franky.Gripper(self.host) if self.use_gripper else None
        except Exception as e:  # libfranka's network / version exceptions
            raise ConnectionError(f"FrankaRobot could not connect to {self.host}: {e}. Check that FCI is activated in Desk, "
                                  "the brakes are open, and the franky wheel matches the robot's server version") from e
        robot.recover_from_errors()
        robot.relative_dynamics_factor = self.relative_dynamics_factor
        self._franky, self._robot, self._gripper = franky, robot, gripper
        self._mode = None
        if gripper is not None:
            self._max_width = float(gripper.max_width)
            self._width = float(gripper.width)
            self._gripper_error = None
            self._closing.clear()
            self._poller = threading.Thread(target=self._poll_gripper, name=f"{self.name}-gripper", daemon=True)
            self._poller.start()

    def disconnect(self) -> None:
        if self._robot is None:
            return
        self.stop()
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout=2.0)
            self._poller = None
        self._robot = self._gripper = None

    def read_state(self) -> RobotState:
        robot = self._require_connected()
        joints = robot.current_joint_state
        ee = robot.current_cartesian_state.pose.end_effector_pose
        t = time.monotonic()
        rotvec = Rotation.from_quat(np.asarray(ee.quaternion, dtype=np.float64)).as_rotvec()
        pose = np.concatenate([np.asarray(ee.translation, dtype=np.float64), rotvec])
        gripper = 0.0
        if self._gripper_error is not None:
            raise RuntimeError(f"Franka Hand at {self.host} stopped reporting its width: {self._gripper_error}")
        if self._gripper is not None and self._max_width > 0:
            gripper = float(np.clip(1.0 - self._width / self._max_width, 0.0, 1.0))
        return RobotState(joint_positions=np.asarray(joints.position, dtype=np.float64),
                          joint_velocities=np.asarray(joints.velocity, dtype=np.float64), ee_pose=pose, gripper=gripper,
                          timestamp=t)

    def command_joint_positions(self, q: np.ndarray) -> None:
        self._require_connected()
        q = _finite(q, 7, "joint target q")
        self._move(self._franky.JointMotion(q.tolist(), self._franky.ReferenceType.Absolute), "joint")

    def command_ee_pose(self, pose: np.ndarray) -> None:
        self._require_connected()
        pose = _finite(pose, 6, "pose target (x, y, z, rx, ry, rz)")
        quaternion = Rotation.from_rotvec(pose[3:]).as_quat()  # x, y, z, w: franky's order
        target = self._franky.Affine(pose[:3].tolist(), quaternion.tolist())
        self._move(self._franky.CartesianMotion(target, self._franky.ReferenceType.Absolute), "pose")

    def command_gripper(self, closed: float) -> None:
        if not self.use_gripper:
            raise RuntimeError(f"FrankaRobot {self.name!r} was created with gripper=False")
        if not 0.0 <= closed <= 1.0:
            raise ValueError(f"gripper command must be in [0, 1] (0 open, 1 closed), got {closed}")
        self._require_connected()
        close = closed >= 0.5
        if close == self._gripper_closed:
            return
        if close:  # epsilon_outer=1 m: the grasp succeeds whatever the object's width
            self._gripper.grasp_async(0.0, self.gripper_speed, self.gripper_force, epsilon_inner=0.005, epsilon_outer=1.0)
        else:
            self._gripper.open_async(self.gripper_speed)
        self._gripper_closed = close

    def stop(self) -> None:
        """Stop the arm's motion (the gripper keeps its grasp). Safe before connect."""
        if self._robot is None:
            return
        self._robot.stop()
        self._mode = None

    def recover(self) -> None:
        """Clear a reflex or error (after its cause is removed) so that motions are accepted again."""
        self._require_connected().recover_from_errors()

    def _move(self, motion: Any, mode: str) -> None:
        robot = self._robot
        try:
            if self._mode is not None and self._mode != mode:
                # franky refuses to preempt a motion with one of another control type
                if not robot.join_motion(self.mode_switch_timeout_s):
                    raise RuntimeError(f"the running {self._mode} motion did not finish within {self.mode_switch_timeout_s} s")
            robot.move(motion, asynchronous=True)
        except Exception as e:
            self._mode = None
            raise RuntimeError(f"Franka at {self.host} did not accept the {mode} motion: {e}. Remove the cause (collision, "
                               "limit, user stop), then call recover()") from e
        self._mode = mode

    def _poll_gripper(self) -> None:
        while not self._closing.is_set():
            try:
                self._width = float(self._gripper.width)
            except Exception as e:  # surfaced by read_state rather than reporting a stale width
                self._gripper_error = f"{type(e).__name__}: {e}"
                return
            self._closing.wait(0.01)

    def _require_connected(self) -> Any:
        if self._robot is None:
            raise RuntimeError(f"FrankaRobot {self.name!r} is not connected: call connect() first")
        return self._robot


def _finite(value: np.ndarray, n: int, what: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be {n} finite values, got {np.asarray(value).tolist()}")
    return v
