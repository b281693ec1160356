"""Forward kinematics of a serial chain of revolute joints, described the way a URDF does.

Bus-servo arms report only joint angles; the end-effector pose that `RobotState.ee_pose` carries comes from
this chain. Each joint is placed by a fixed transform from the previous joint's frame (`xyz` in m, `rpy` fixed-axis
roll-pitch-yaw in rad, as a URDF `<origin>`), then rotates about its `axis` by its angle; `tool_xyz`/`tool_rpy`
place the tool point in the last joint's frame. No inverse kinematics: these arms take joint commands.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class ChainJoint:
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if np.linalg.norm(self.axis) < 1e-9:
            raise ValueError(f"joint axis must be non-zero, got {self.axis}")


@dataclass(frozen=True)
class KinematicChain:
    joints: tuple[ChainJoint, ...]
    tool_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tool_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_dict(cls, d: Mapping) -> KinematicChain:
        """From `{"joints": [{"xyz": [...], "rpy": [...], "axis": [...]}, ...], "tool_xyz": [...], "tool_rpy": [...]}`."""
        joints = tuple(ChainJoint(tuple(j["xyz"]), tuple(j.get("rpy", (0, 0, 0))), tuple(j.get("axis", (0, 0, 1))))
                       for j in d["joints"])
        return cls(joints, tuple(d.get("tool_xyz", (0, 0, 0))), tuple(d.get("tool_rpy", (0, 0, 0))))

    def forward(self, q: Sequence[float]) -> np.ndarray:
        """Tool pose (x, y, z, rx, ry, rz) in the base frame for joint angles `q` (rad)."""
        if len(q) != len(self.joints):
            raise ValueError(f"the chain has {len(self.joints)} joints, got {len(q)} angles")
        position, rotation = np.zeros(3), Rotation.identity()
        for joint, angle in zip(self.joints, q):
            position = position + rotation.apply(joint.xyz)
            axis = np.asarray(joint.axis, float) / np.linalg.norm(joint.axis)
            rotation = rotation * Rotation.from_euler("xyz", joint.rpy) * Rotation.from_rotvec(axis * angle)
        position = position + rotation.apply(self.tool_xyz)
        rotation = rotation * Rotation.from_euler("xyz", self.tool_rpy)
        return np.concatenate([position, rotation.as_rotvec()])
