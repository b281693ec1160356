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
        # A NaN bound compares False with everything, so an unchecked one silently switches its limit off.
        for key in ("joint_lower", "joint_upper", "joint_max_velocity", "workspace_low", "workspace_high"):
            object.__setattr__(self, key, _finite_tuple(getattr(self, key), key))
        for key in ("max_joint_step", "max_ee_step", "max_ee_rotation_step"):
            object.__setattr__(self, key, _finite_number(getattr(self, key), key, positive=True))
        n = len(self.joint_lower)
        if n == 0:
            raise ValueError("RobotLimits.joint_lower: expected one number per joint, got none")
        if not (len(self.joint_upper) == len(self.joint_max_velocity) == n):
            raise ValueError("joint_lower, joint_upper and joint_max_velocity must have one entry per joint")
        for key in ("workspace_low", "workspace_high"):
            if len(getattr(self, key)) != 3:
                raise ValueError(f"RobotLimits.{key}: expected 3 numbers (x, y, z in m), got {getattr(self, key)}")
        if any(lo >= hi for lo, hi in zip(self.joint_lower, self.joint_upper)):
            raise ValueError(f"every joint_lower must be below joint_upper: {self.joint_lower} vs {self.joint_upper}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"workspace_low must be below workspace_high: {self.workspace_low} vs {self.workspace_high}")
        if min(self.joint_max_velocity) <= 0:
            raise ValueError(f"RobotLimits.joint_max_velocity: velocity limits must be positive, got {self.joint_max_velocity}")

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


def _finite_number(value: object, what: str, positive: bool = False) -> float:
    """`value` as a float, or a ValueError naming the field: bools, strings, NaN and inf are not limits."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"RobotLimits.{what}: expected a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"RobotLimits.{what}: must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"RobotLimits.{what}: must be positive, got {value}; velocity and step limits must be positive")
    return float(value)


def _finite_tuple(values: object, what: str) -> tuple[float, ...]:
    if not isinstance(values, list | tuple | np.ndarray) or np.ndim(values) != 1:
        raise ValueError(f"RobotLimits.{what}: expected a list of numbers, got {values!r}")
    return tuple(_finite_number(v, f"{what}[{i}]") for i, v in enumerate(values))


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
