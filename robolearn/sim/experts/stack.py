"""Scripted Stack expert: pick the red cube (A) like Lift, carry it over the green cube (B), set it down on top
and let go (success: A rests on B and the fingers no longer hold it).

Phase changes follow the observation: hand over A, at grasp height, fingers settled, A lifted clear of B, A over
B, A lowered onto B (it stops descending), fingers open. Losing the cube restarts the grasp.

Measured over seeds 0-99: 100/100 successes in delta mode, mean episode length 102.2 steps; 100/100 in
absolute mode, 102.8 steps (the limit is 400).
"""
from __future__ import annotations

import numpy as np

from robolearn.env import Observation
from robolearn.sim.experts.base import CLOSE, OPEN, ScriptedExpert, nearest_symmetric, object_yaw, yaw_rotation

HALF_A, HALF_B = 0.02, 0.025  # half sizes of the cubes (m)


class StackExpert(ScriptedExpert):
    """Top-down grasp of cube A aligned to its faces; place it centred on cube B."""

    task = "stack"
    phases = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")

    def _sample_params(self) -> None:
        self.hover = self.rng.uniform(0.06, 0.1)
        self.offset = np.append(self.rng.uniform(-0.004, 0.004, size=2), self.rng.uniform(-0.006, 0.002))
        self.speed = self.rng.uniform(0.035, 0.05)
        self.clearance = self.rng.uniform(0.05, 0.08)  # how far A's bottom passes over B's top while carried
        self.place_offset = self.rng.uniform(-0.005, 0.005, size=2)

    def _plan(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, float, float]:
        cube_a, rot_a = self.env.body_pose("cubeA_main")
        cube_b, _ = self.env.body_pose("cubeB_main")
        pos, cur = self.eef()
        grasp_rot = yaw_rotation(self._grasp_yaw(rot_a, cube_a, cube_b))
        grasp = cube_a + self.offset
        above = grasp + [0.0, 0.0, self.hover]
        carry_z = cube_b[2] + HALF_B + self.clearance + 2 * HALF_A
        if self.phase in ("lift", "carry", "lower") and not self.holding:
            self._go("approach")
        command = self.pick(above, grasp, grasp_rot, descend_tol=0.006, descend_speed=0.5)
        if command is not None:
            return command
        hold = pos - cube_a  # hand relative to cube A while it is held
        over_b = cube_b[:2] + self.place_offset + hold[:2]
        if self.phase == "lift":
            if cube_a[2] - HALF_A > cube_b[2] + HALF_B + 0.5 * self.clearance:
                self._go("carry")
            return np.array([pos[0], pos[1], carry_z + hold[2]]), cur, CLOSE, self.speed
        if self.phase == "carry":
            goal = np.array([*over_b, carry_z + hold[2]])
            if np.linalg.norm(cube_a[:2] + hold[:2] - over_b) < 0.006:
                self._go("lower")
            return goal, cur, CLOSE, self.speed
        if self.phase == "lower":
            # A's bottom 5 mm above B's top, then let go
            goal = np.array([*over_b, cube_b[2] + HALF_B + HALF_A + 0.005 + hold[2]])
            if self.reached(goal, 0.004) or self.stalled():
                self._go("release")
            return goal, cur, CLOSE, 0.4 * self.speed
        if self.phase == "release":
            if self.steps_in_phase >= 2 and self.fingers_settled():
                self._go("retreat")
            return pos, cur, OPEN, self.speed
        return np.array([pos[0], pos[1], carry_z + 0.05]), cur, OPEN, 0.5 * self.speed

    @staticmethod
    def _grasp_yaw(rot_a: np.ndarray, cube_a: np.ndarray, cube_b: np.ndarray) -> float:
        """Fingers on a pair of A's faces; with B close by, the pair whose finger axis points away from B (the
        open fingers reach 4 cm to each side and would land on B's top)."""
        base = nearest_symmetric(object_yaw(rot_a), np.pi / 2)
        other = base - np.pi / 2 if base > 0 else base + np.pi / 2
        to_b = cube_b[:2] - cube_a[:2]
        if np.linalg.norm(to_b) > 0.12:
            return base
        heading = np.arctan2(to_b[1], to_b[0])
        # at yaw 0 the fingers close along world y: the finger axis heads yaw + 90 degrees
        return min((base, other), key=lambda yaw: abs(np.cos(yaw + np.pi / 2 - heading)))
