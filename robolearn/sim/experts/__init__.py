"""Scripted experts for the robosuite tasks: `make_expert(task, env)`, then `expert.reset()` after each env reset
and `expert.act(obs)` each step, in the env's action mode."""
from __future__ import annotations

from robolearn.sim.experts.base import ScriptedExpert
from robolearn.sim.experts.can import CanExpert
from robolearn.sim.experts.lift import LiftExpert
from robolearn.sim.experts.square import SquareExpert
from robolearn.sim.experts.stack import StackExpert
from robolearn.sim.robosuite_env import RobosuiteEnv

EXPERTS: dict[str, type[ScriptedExpert]] = {"lift": LiftExpert, "can": CanExpert, "stack": StackExpert, "square": SquareExpert}


def make_expert(task: str, env: RobosuiteEnv) -> ScriptedExpert:
    """The scripted expert for `task`, driving `env` (a RobosuiteEnv of that task)."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[task](env)


__all__ = ["EXPERTS", "ScriptedExpert", "make_expert"]
