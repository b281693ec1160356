"""Degraded scripted experts: the clean expert with a failure mode that shows in (observation, action chunk).

Mixed-quality demonstrations are what value-guided steering is for: a policy trained on them imitates the
mistakes, and a critic trained on the same data (with success labels) can see which chunks lead to failure. The
mistake must therefore be visible in what the policy proposes, not hidden in the simulator:

* "early_close" (Lift): the descent stops `close_height` (4-7 cm) above the grasp point and the fingers close on
  air; the expert then lifts the empty gripper and holds it there until the episode times out. In the data: a
  close command while the hand is still well above the cube.
* "release" (Lift): the fingers close on the cube, then open again at once; the expert then lifts the open
  gripper and holds it there. In the data: an open command while the cube is between the fingers.

Neither failure retries, so every degraded episode fails (success=False, 200 steps). With probability 1 - p an
episode is clean instead; the per-episode draw comes after the clean expert's own draws, so a clean episode of
the degraded expert is action for action the clean expert's episode of that seed.
"""
from __future__ import annotations

import numpy as np

from robolearn.env import Observation
from robolearn.sim.experts.base import CLOSE, OPEN, nearest_symmetric, object_yaw, yaw_rotation
from robolearn.sim.experts.lift import LiftExpert
from robolearn.sim.robosuite_env import RobosuiteEnv

FAILURES = ("early_close", "release")


class DegradedLiftExpert(LiftExpert):
    """LiftExpert that, with probability `p` per episode, makes the `failure` mistake and never recovers."""

    phases = (*LiftExpert.phases, "close_early", "release", "hold_empty")

    def __init__(self, env: RobosuiteEnv, failure: str = "early_close", p: float = 1.0):
        if failure not in FAILURES:
            raise ValueError(f"unknown failure {failure!r}; the degraded Lift expert knows {FAILURES}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p (probability that an episode fails) must be in [0, 1], got {p}")
        self.failure, self.p = failure, float(p)
        super().__init__(env)

    def _sample_params(self) -> None:
        super()._sample_params()  # first: the clean variation stays that of the clean expert
        self.fails = bool(self.rng.random() < self.p)
        self.close_height = self.rng.uniform(0.04, 0.07)
        self._hold_at: np.ndarray | None = None

    def episode_info(self) -> dict[str, object]:
        """Stored with each collected episode: which mistake this episode was given (None: a clean episode)."""
        return {"failure": self.failure if self.fails else None}

    def _plan(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, float, float]:
        if not self.fails:
            return super()._plan(obs)
        cube, cube_rot = self.env.body_pose("cube_main")
        rot = yaw_rotation(nearest_symmetric(object_yaw(cube_rot), np.pi / 2))
        pos, _ = self.eef()
        if self.phase == "hold_empty":
            table_z = float(self.env.robosuite_env.table_offset[2])
            gripper = CLOSE if self.failure == "early_close" else OPEN
            return np.array([pos[0], pos[1], table_z + self.lift_height]), rot, gripper, self.speed
        if self.phase in ("close_early", "release"):
            # hold still while the fingers move; then leave with nothing
            if self.phase == "close_early" and self.grasp_outcome() == "missed":
                self._go("hold_empty")
            elif self.phase == "release" and self.steps_in_phase >= 2 and self.fingers_settled():
                self._go("hold_empty")
            return self._hold_at, rot, CLOSE if self.phase == "close_early" else OPEN, self.speed
        if self.failure == "early_close" and self.phase == "descend":
            grasp = cube + self.offset
            if pos[2] <= grasp[2] + self.close_height:
                self._hold_at = pos.copy()
                self._go("close_early")
                return self._hold_at, rot, CLOSE, self.speed
        target = super()._plan(obs)
        if self.failure == "release" and self.phase == "lift":  # the clean expert just felt the cube: let go
            self._hold_at = pos.copy()
            self._go("release")
            return self._hold_at, rot, OPEN, self.speed
        return target
