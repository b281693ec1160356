"""Straight-line segments between two servo targets, evaluated at controller ticks.

A policy commands at ~10 Hz while an arm controller wants a setpoint every 2-8 ms; sending the policy's target
unchanged makes the arm jump once per policy step. A segment moves the setpoint from where it is now to the new
target over one policy period instead. Joint vectors interpolate linearly; poses interpolate the position
linearly and the orientation along the shortest rotation (slerp), so the tool never swings the long way round.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Segment:
    start: np.ndarray  # (n,) joints, or (6,) pose x, y, z, rx, ry, rz
    end: np.ndarray
    t_start: float  # time.monotonic() when the segment began
    duration: float  # s; the setpoint reaches `end` at t_start + duration and stays there
    is_pose: bool = False

    def __post_init__(self) -> None:
        if self.start.shape != self.end.shape:
            raise ValueError(f"segment start {self.start.shape} and end {self.end.shape} differ in shape")
        if self.duration <= 0:
            raise ValueError(f"segment duration must be positive, got {self.duration}")
        if self.is_pose and self.start.shape != (6,):
            raise ValueError(f"a pose segment needs (6,) poses, got {self.start.shape}")

    def fraction(self, t: float) -> float:
        return float(np.clip((t - self.t_start) / self.duration, 0.0, 1.0))

    def at(self, t: float) -> np.ndarray:
        """The setpoint at monotonic time `t`."""
        return interpolate(self.start, self.end, self.fraction(t), self.is_pose)


def interpolate(start: np.ndarray, end: np.ndarray, alpha: float, is_pose: bool = False) -> np.ndarray:
    """The point `alpha` (0..1) of the way from `start` to `end`."""
    if not is_pose:
        return start + alpha * (end - start)
    position = start[:3] + alpha * (end[:3] - start[:3])
    r0, r1 = Rotation.from_rotvec(start[3:]), Rotation.from_rotvec(end[3:])
    step = (r0.inv() * r1).as_rotvec()  # shortest rotation from start to end, in the start frame
    rotation = r0 * Rotation.from_rotvec(alpha * step)
    return np.concatenate([position, rotation.as_rotvec()])


def rotation_angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (rad) of the rotation taking rotation vector `a` to rotation vector `b`."""
    return float((Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)).magnitude())
