"""Scripted experts for the robosuite tasks: `make_expert(task, env)`, then `expert.reset()` after each env reset
and `expert.act(obs)` each step, in the env's action mode."""
from __future__ import annotations

from robolearn.sim.experts.base import ScriptedExpert
from robolearn.sim.experts.can import CanExpert
from robolearn.sim.experts.degraded import DegradedLiftExpert
from robolearn.sim.experts.lift import LiftExpert
from robolearn.sim.experts.square import SquareExpert
from robolearn.sim.experts.stack import StackExpert
from robolearn.sim.robosuite_env import RobosuiteEnv

EXPERTS: dict[str, type[ScriptedExpert]] = {"lift": LiftExpert, "can": CanExpert, "stack": StackExpert, "square": SquareExpert}
# experts that make a mistake on purpose (mixed-quality data for critics and steering), options as keyword args
DEGRADED_EXPERTS: dict[str, type[ScriptedExpert]] = {"lift": DegradedLiftExpert}


def make_expert(task: str, env: RobosuiteEnv) -> ScriptedExpert:
    """The scripted expert for `task`, driving `env` (a RobosuiteEnv of that task)."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[task](env)


def make_degraded_expert(task: str, env: RobosuiteEnv, **options) -> ScriptedExpert:
    """The degraded expert for `task` (see robolearn.sim.experts.degraded), e.g. failure="early_close", p=0.5."""
    if task not in DEGRADED_EXPERTS:
        raise ValueError(f"no degraded expert for task {task!r}; degraded experts exist for {sorted(DEGRADED_EXPERTS)}")
    return DEGRADED_EXPERTS[task](env, **options)


__all__ = ["DEGRADED_EXPERTS", "EXPERTS", "ScriptedExpert", "make_degraded_expert", "make_expert"]
