"""The `Robot` protocol: what the control loop needs from an arm, small enough to implement in an afternoon.

Poses are `(x, y, z, rx, ry, rz)`: position in metres in the robot's base frame and orientation as a rotation
vector (axis * angle, radians), the convention of UR's RTDE and of robosuite's OSC controller. The gripper is
one normalized value, 0 = open, 1 = closed, whatever the hardware's units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RobotLimits:
    """Declared limits of an arm; the safety layer enforces them on every command."""

    joint_lower: tuple[float, ...]  # rad
    joint_upper: tuple[float, ...]  # rad
    joint_max_velocity: tuple[float, ...]  # rad/s
    workspace_low: tuple[float, float, float]  # end-effector box in the base frame, m
    workspace_high: tuple[float, float, float]
    max_joint_step: float = 0.05  # rad per command: the most any joint target may move from the measured position
    max_ee_step: float = 0.02  # m per command: the most the end-effector target may move from the measured pose
    max_ee_rotation_step: float = 0.1  # rad per command

    def __post_init__(self) -> None:
        n = len(self.joint_lower)
        if not (len(self.joint_upper) == len(self.joint_max_velocity) == n):
            raise ValueError("joint_lower, joint_upper and joint_max_velocity must have one entry per joint")
        if any(lo >= hi for lo, hi in zip(self.joint_lower, self.joint_upper)):
            raise ValueError(f"every joint_lower must be below joint_upper: {self.joint_lower} vs {self.joint_upper}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"workspace_low must be below workspace_high: {self.workspace_low} vs {self.workspace_high}")
        if min(self.joint_max_velocity) <= 0 or min(self.max_joint_step, self.max_ee_step, self.max_ee_rotation_step) <= 0:
            raise ValueError("velocity and step limits must be positive")

    @property
    def n_joints(self) -> int:
        return len(self.joint_lower)


@dataclass(frozen=True)
class RobotState:
    joint_positions: np.ndarray  # (n_joints,) rad
    joint_velocities: np.ndarray  # (n_joints,) rad/s
    ee_pose: np.ndarray  # (6,) x, y, z, rx, ry, rz
    gripper: float  # 0 open .. 1 closed
    timestamp: float  # time.monotonic() when the state was measured


@runtime_checkable
class Robot(Protocol):
    name: str
    limits: RobotLimits
    command_hz: float  # the rate the controller expects commands at (UR e-Series RTDE: 500)

    def connect(self) -> None: ...

    def read_state(self) -> RobotState: ...

    def command_joint_positions(self, q: np.ndarray) -> None: ...

    def command_ee_pose(self, pose: np.ndarray) -> None: ...

    def command_gripper(self, closed: float) -> None: ...

    def stop(self) -> None: ...  # halt motion now (e-stop path); must be safe to call at any time

    def disconnect(self) -> None: ...
