"""The `Teleop` protocol: a human input device turned into robot actions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TeleopCommand:
    # (6,) end-effector velocity command (vx, vy, vz, wx, wy, wz), in m/s and rad/s, in the robot's base frame
    ee_velocity: np.ndarray
    gripper: float  # 0 open .. 1 closed
    buttons: dict[str, bool] = field(default_factory=dict)  # device buttons / keys held, by name
    timestamp: float = 0.0


@runtime_checkable
class Teleop(Protocol):
    name: str

    def connect(self) -> None: ...

    def read(self) -> TeleopCommand: ...  # the current command; never blocks

    def disconnect(self) -> None: ...
