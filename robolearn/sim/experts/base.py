"""What every scripted robosuite expert shares: seeded per-episode variation, a speed-limited move toward a target
grip pose, and the conversion of that move into the env's action mode (delta or absolute).

The experts read object poses from the sim (privileged), but every quantity they decide on is also in the
low-dim observation (object poses, gripper position and finger opening), so a policy that sees the observation
history can learn when each phase ends. A move is a "carrot": the commanded pose is the current pose plus a
bounded step toward the target, which gives the same motion in delta and absolute mode.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.env import Observation
from robolearn.sim.robosuite_env import REFERENCE_ROTATION, RobosuiteEnv

OPEN, CLOSE = -1.0, 1.0
DELTA_POS_SCALE = 0.05  # metres per unit delta action (robosuite OSC_POSE output_max)
DELTA_ROT_SCALE = 0.5  # radians per unit delta action


def yaw_rotation(yaw: float) -> np.ndarray:
    """The top-down grasp rotated by `yaw` about the world z axis."""
    return Rotation.from_euler("z", yaw).as_matrix() @ REFERENCE_ROTATION


def object_yaw(rotation: np.ndarray, axis: int = 0) -> float:
    """Heading in the world xy plane of one of an object's body axes."""
    v = rotation[:, axis]
    return float(np.arctan2(v[1], v[0]))


def nearest_symmetric(yaw: float, period: float) -> float:
    """The yaw among yaw + k * period closest to zero: the smallest wrist turn that fits a symmetric object."""
    return float((yaw + period / 2) % period - period / 2)


class ScriptedExpert(ABC):
    """Base class: subclasses implement `_plan(obs) -> (target_pos, target_rot, gripper, speed)` as a phase machine."""

    task = ""
    phases: tuple[str, ...] = ()
    empty_gap = 0.01  # finger opening (m) below which the fingers hold nothing
    held_gap = 0.055  # fingers that stop closing below this opening (m) hold the object

    def __init__(self, env: RobosuiteEnv):
        if not isinstance(env, RobosuiteEnv):
            raise TypeError(f"scripted experts drive a RobosuiteEnv, got {type(env).__name__}")
        if env.task != self.task:
            raise ValueError(f"{type(self).__name__} is the expert for task {self.task!r}, but the env runs {env.task!r}")
        self.env = env
        self.reset()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """Call after each env reset. Without a seed the variation follows the env's reset seed (reproducible)."""
        if seed is None and self.env.seed is not None:
            seed = 1_000_003 + int(self.env.seed)  # offset: not the generator that placed the objects
        self.rng = np.random.default_rng(seed)
        self.phase = self.phases[0]
        self.steps_in_phase = 0
        self._prev_gap: float | None = None
        self._gap_change = np.inf
        self._prev_pos: np.ndarray | None = None
        self.moved = np.inf  # how far the hand moved during the last step (m)
        self.gap = 0.0  # finger opening (m)
        self._t = 0
        # a slow sum of two sinusoids (<= 4 mm) added to every target: smooth, different in every episode
        self._wobble = self.rng.uniform(-1.0, 1.0, size=(2, 3)) * 0.002
        self._wobble_freq = self.rng.uniform(0.05, 0.2, size=2)
        self._wobble_phase = self.rng.uniform(0, 2 * np.pi, size=(2, 3))
        self._sample_params()

    @abstractmethod
    def _sample_params(self) -> None:
        """Draw this episode's variation (heights, offsets, speed) from self.rng."""

    def act(self, obs: Observation) -> np.ndarray:
        """The next action (7,) in the env's action mode."""
        gap = float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])
        self._gap_change = np.inf if self._prev_gap is None else abs(gap - self._prev_gap)
        self._prev_gap = gap
        self.gap = gap
        pos = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        self.moved = np.inf if self._prev_pos is None else float(np.linalg.norm(pos - self._prev_pos))
        self._prev_pos = pos
        before = self.phase
        target_pos, target_rot, gripper, speed = self._plan(obs)
        self.steps_in_phase = self.steps_in_phase + 1 if self.phase == before else 0
        self._t += 1
        return self._command(target_pos + self._wobble_offset(), target_rot, gripper, speed)

    @abstractmethod
    def _plan(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, float, float]:
        """This step's target grip position (3,), rotation (3, 3), gripper command and speed (m per step)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def pick(self, above: np.ndarray, grasp: np.ndarray, rot: np.ndarray, descend_tol: float, descend_speed: float,
             stop_on_contact: bool = True) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """The phases every expert starts with: hover `above` the grasp point ("approach"), go down to `grasp`
        ("descend", until within `descend_tol`, or until the hand stalls on something with `stop_on_contact`),
        close ("grasp"); a missed grasp starts over. The command while in them, None once the object is held."""
        if self.phase == "approach":
            if self.reached(above, 0.012, rot):
                self._go("descend")
            return above, rot, OPEN, self.speed
        if self.phase == "descend":
            if self.reached(grasp, descend_tol) or (stop_on_contact and self.stalled()):
                self._go("grasp")
            return grasp, rot, OPEN, descend_speed * self.speed
        if self.phase == "grasp":
            outcome = self.grasp_outcome()
            if outcome:
                self._go("lift" if outcome == "held" else "approach")
            return grasp, rot, CLOSE, self.speed
        return None

    def _go(self, phase: str) -> None:
        self.phase = phase
        self.steps_in_phase = -1  # act() counts this step as the phase's first

    def fingers_settled(self, tol: float = 4e-4) -> bool:
        """The finger opening stopped changing: the fingers closed on something or all the way."""
        return self._gap_change < tol

    def grasp_outcome(self) -> str | None:
        """While closing: "held" once the fingers stop on the object, "missed" once they close on nothing."""
        if self.steps_in_phase < 2 or not self.fingers_settled():
            return None
        if self.gap < self.empty_gap:
            return "missed"
        return "held" if self.gap < self.held_gap else None  # stopped wide open: still pressing, wait

    @property
    def holding(self) -> bool:
        return self.gap > self.empty_gap

    def stalled(self, min_steps: int = 3, tol: float = 0.001) -> bool:
        """The hand has not moved for a step after `min_steps` in this phase: something blocks it."""
        return self.steps_in_phase >= min_steps and self.moved < tol

    def eef(self) -> tuple[np.ndarray, np.ndarray]:
        return self.env.eef_pose()

    def reached(self, target: np.ndarray, tol: float, rot: np.ndarray | None = None, rot_tol: float = 0.08) -> bool:
        pos, cur = self.eef()
        if np.linalg.norm(pos - target) > tol:
            return False
        return rot is None or float(np.linalg.norm(Rotation.from_matrix(rot @ cur.T).as_rotvec())) < rot_tol

    def _wobble_offset(self) -> np.ndarray:
        angles = 2 * np.pi * self._wobble_freq[:, None] * self._t / self.env.spec.control_hz + self._wobble_phase
        return (self._wobble * np.sin(angles)).sum(axis=0)

    def _command(self, target_pos: np.ndarray, target_rot: np.ndarray, gripper: float, speed: float) -> np.ndarray:
        """A bounded step toward the target pose, as the env's action."""
        pos, cur = self.eef()
        step = target_pos - pos
        dist = float(np.linalg.norm(step))
        if dist > speed:
            step *= speed / dist
        rot_err = Rotation.from_matrix(target_rot @ cur.T).as_rotvec()
        angle = float(np.linalg.norm(rot_err))
        max_angle = 0.15
        if angle > max_angle:
            rot_err *= max_angle / angle
        if self.env.action_mode == "delta":
            action = np.concatenate([step / DELTA_POS_SCALE, rot_err / DELTA_ROT_SCALE, [gripper]])
            return np.clip(action, -1.0, 1.0)
        carrot = Rotation.from_rotvec(rot_err).as_matrix() @ cur
        rel = Rotation.from_matrix(carrot @ REFERENCE_ROTATION.T).as_rotvec()
        return np.concatenate([pos + step, rel, [gripper]])
