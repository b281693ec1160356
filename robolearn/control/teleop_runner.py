"""`TeleopRunner`: a human's input device in the policy's place, so teleoperation runs through the same loop.

A `Teleop` reports an end-effector velocity and a gripper command; the runner turns them into one action per
control period in the env's action mode (`spec.extra["action_mode"]`, robot envs' convention):

    ee_delta     the velocity times the period: [dx, dy, dz, rx, ry, rz, gripper]
    ee_absolute  a target pose that starts at the measured pose at reset and integrates the velocity

Actions are clipped to the spec's action bounds before they leave, so what a recording stores is what was
commanded (the safety layer then enforces the robot's limits on top, as for a policy).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.env import EnvSpec
from robolearn.hal.teleop import Teleop

TELEOP_MODES = ("ee_delta", "ee_absolute")


def measured_pose(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(x, y, z, rx, ry, rz) from a robot observation's end-effector keys."""
    if "robot0_eef_pos" not in obs or not ({"robot0_eef_rotvec", "robot0_eef_quat"} & set(obs)):
        raise KeyError(f"absolute teleoperation starts from the measured pose: the rig's task must observe "
                       f"robot0_eef_pos and robot0_eef_quat (or robot0_eef_rotvec); it observes {sorted(obs)}")
    rotvec = obs["robot0_eef_rotvec"] if "robot0_eef_rotvec" in obs else Rotation.from_quat(obs["robot0_eef_quat"]).as_rotvec()
    return np.concatenate([np.asarray(obs["robot0_eef_pos"], np.float64), np.asarray(rotvec, np.float64)])


class TeleopRunner:
    """A ChunkRunner (reset / observe / act) driven by a Teleop; one env."""

    def __init__(self, teleop: Teleop, spec: EnvSpec):
        mode = spec.extra.get("action_mode")
        if mode not in TELEOP_MODES:
            raise ValueError(f"teleoperation drives the end effector: it needs action_mode in {TELEOP_MODES}, "
                             f"this env's is {mode!r}")
        if spec.action_dim != 7:
            raise ValueError(f"teleoperation produces 7-d actions (pose + gripper), this env takes {spec.action_dim}")
        self.teleop = teleop
        self.mode = mode
        self.period = 1.0 / spec.control_hz
        self.low = np.asarray(spec.action_low, np.float64)
        self.high = np.asarray(spec.action_high, np.float64)
        self._target: np.ndarray | None = None

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        if len(observations) != 1:
            raise ValueError(f"one operator drives one robot; got {len(observations)} envs")
        self._target = measured_pose(observations[0]) if self.mode == "ee_absolute" else None

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """The operator closes the loop by eye; observations change nothing here."""

    def act(self) -> np.ndarray:
        """(1, 7): this period's command from the device's current state."""
        command = self.teleop.read()
        velocity = np.asarray(command.ee_velocity, np.float64)
        if velocity.shape != (6,) or not np.all(np.isfinite(velocity)):
            raise ValueError(f"{self.teleop.name} reported an invalid velocity {velocity!r}; expected 6 finite values")
        step = velocity * self.period
        if self.mode == "ee_delta":
            pose = step
        else:
            if self._target is None:
                raise RuntimeError("call reset() before act()")
            rotation = Rotation.from_rotvec(step[3:]) * Rotation.from_rotvec(self._target[3:])
            pose = np.concatenate([self._target[:3] + step[:3], rotation.as_rotvec()])
        action = np.clip(np.append(pose, float(command.gripper)), self.low, self.high)
        if self.mode == "ee_absolute":
            self._target = action[:6].copy()  # the clipped target: holding a key against the workspace wall does not wind up
        return action[None].astype(np.float32)

    def close(self) -> None:
        """Forget the held target pose, so nothing stale is commanded if the runner is used again without a reset."""
        self._target = None
