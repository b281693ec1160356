"""Scripted PickPlaceCan expert: grasp the can from above, carry it over the walls into its quadrant of the
right bin, lower it, let go and pull up (success needs the hand clear of the can).

Phase changes follow the observation: hand over the can, at grasp height, fingers settled, can lifted, can over
its target, can lowered, fingers open. A grasp that closes on nothing or a can that slips out restarts it.

Measured over seeds 0-99: 100/100 successes in delta mode, mean episode length 150.6 steps; 100/100 in
absolute mode, 151.6 steps (the limit is 400).
"""
from __future__ import annotations

import numpy as np

from robolearn.env import Observation
from robolearn.sim.experts.base import CLOSE, OPEN, ScriptedExpert, yaw_rotation


class CanExpert(ScriptedExpert):
    """Top-down grasp (the can is round, so the wrist keeps its heading), carry at a safe height, place, release."""

    task = "can"
    empty_gap, held_gap = 0.02, 0.065
    phases = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")

    def _sample_params(self) -> None:
        self.hover = self.rng.uniform(0.08, 0.12)
        self.offset = np.append(self.rng.uniform(-0.004, 0.004, size=2), self.rng.uniform(0.01, 0.025))
        self.speed = self.rng.uniform(0.035, 0.05)
        self.carry_z = self.rng.uniform(0.99, 1.04)  # grip height while crossing the bin walls
        # The target quadrant spans x 0.10..0.295, y 0.28..0.525; its far corner is at the edge of the arm's reach,
        # so the can goes in near the corner closest to the robot, clear of the dividers.
        self.place_xy = np.array([self.rng.uniform(0.14, 0.17), self.rng.uniform(0.33, 0.37)])
        self.yaw = self.rng.uniform(-0.15, 0.15)

    def _plan(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, float, float]:
        env = self.env.robosuite_env
        can, _ = self.env.body_pose("Can_main")
        pos, _ = self.eef()
        rot = yaw_rotation(self.yaw)
        grasp = can + self.offset
        above = grasp + [0.0, 0.0, self.hover]
        target_xy = self.place_xy
        floor = float(env.bin2_pos[2])
        if self.phase in ("lift", "carry", "lower") and not self.holding:
            self._go("approach")  # the can slipped: open and grasp it again where it lies
        command = self.pick(above, grasp, rot, descend_tol=0.006, descend_speed=0.6)  # stalls on the bin floor
        if command is not None:
            return command
        hold = pos - can  # where the hand sits relative to the can (constant while it is held)
        if self.phase == "lift":
            if pos[2] > self.carry_z - 0.02:
                self._go("carry")
            return np.array([pos[0], pos[1], self.carry_z]), rot, CLOSE, self.speed
        if self.phase == "carry":
            goal = np.array([*(target_xy + hold[:2]), self.carry_z])
            if self.reached(goal, 0.015):
                self._go("lower")
            return goal, rot, CLOSE, self.speed
        if self.phase == "lower":
            # can centre 6 cm above its bottom: let go with the bottom ~1.5 cm over the bin floor
            goal = np.array([*(target_xy + hold[:2]), floor + 0.075 + hold[2]])
            if self.reached(goal, 0.01) or can[2] < floor + 0.085 or self.stalled():
                self._go("release")
            return goal, rot, CLOSE, 0.7 * self.speed
        if self.phase == "release":
            if self.steps_in_phase >= 2 and self.fingers_settled():
                self._go("retreat")
            return pos, rot, OPEN, self.speed
        return np.array([pos[0], pos[1], self.carry_z]), rot, OPEN, self.speed
