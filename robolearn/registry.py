"""Registries: files *name* things, only robolearn's source says what a name means.

A checkpoint, a config or a rig file names its policy, env or driver by a short name (`diffusion`, `pusht`,
`ur_rtde`). Each registry maps its names to import paths written here, so nothing a file says is ever imported
or called as code: an unknown name is an error that lists the known ones. Files written before the registries
stored import paths (`robolearn.policies.diffusion:DiffusionPolicy`); those are aliases of the names, so they
keep loading when a module moves.

Python code can add its own entries (`ENVS.register("my_env", MyEnv)`): code is trusted, files are not.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


class UnknownNameError(ValueError):
    """A file named something no registry knows."""


class Registry:
    """Names -> classes (or factories), imported only when asked for."""

    def __init__(self, what: str, base: str | None = None):
        self.what = what  # "policy", "env", ... for messages
        self._base = base  # "module:Name" of the class every entry must subclass (checked when resolved)
        self._targets: dict[str, str | Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, target: str | Callable[..., Any], aliases: Iterable[str] = ()) -> None:
        """`target`: an object, or "package.module:Name" imported on first use. Aliases resolve to `name`."""
        if not name or ":" in name:
            raise ValueError(f"{self.what} names are short words, got {name!r}")
        self._targets[name] = target
        for alias in aliases:
            self._aliases[alias] = name
        if isinstance(target, str):
            self._aliases.setdefault(target, name)  # the import path an older file may have saved

    def names(self) -> list[str]:
        return sorted(self._targets)

    def canonical(self, name: Any) -> str:
        """The registered name that `name` (a name or an alias) stands for; an UnknownNameError otherwise."""
        if not isinstance(name, str):
            raise UnknownNameError(f"a {self.what} is named by a string, got {type(name).__name__} {name!r}")
        if name in self._targets:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownNameError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}")

    def target(self, name: str) -> str | Callable[..., Any]:
        return self._targets[self.canonical(name)]

    def get(self, name: Any) -> Any:
        """The class or factory `name` stands for, imported now and type-checked before anyone calls it."""
        canonical = self.canonical(name)
        obj = _load(self._targets[canonical])
        if self._base is not None:
            base = _load(self._base)
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise TypeError(f"{self.what} {canonical!r} is {obj!r}, not a subclass of {base.__name__}")
        elif not callable(obj):
            raise TypeError(f"{self.what} {canonical!r} is {obj!r}, which cannot be built")
        return obj

    def name_of(self, obj: Any) -> str:
        """The registered name of a class or factory (what a file should save); a TypeError if it has none."""
        path = f"{obj.__module__}:{obj.__qualname__}"
        for name, target in self._targets.items():
            if target is obj or target == path:
                return name
        raise TypeError(f"{obj.__qualname__} is not a registered {self.what}; register it: "
                        f"robolearn.registry.{self.what.upper()}S.register('name', {obj.__qualname__})")


def _load(target: str | Callable[..., Any]) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


POLICIES = Registry("policy", base="robolearn.policies.base:Policy")
POLICIES.register("diffusion", "robolearn.policies.diffusion:DiffusionPolicy")
POLICIES.register("flow", "robolearn.policies.flow:FlowMatchingPolicy")
POLICIES.register("energy_descent", "robolearn.policies.energy_descent:EnergyDescentPolicy")
# IBC was "energy" (and lived in policies/energy.py) until the energy-descent head took the name of the config
# group (`policy=energy`): checkpoints that say "energy" are IBC checkpoints.
POLICIES.register("energy_ibc", "robolearn.policies.ibc:IBCPolicy",
                  aliases=["energy", "robolearn.policies.energy:EnergyPolicy"])
POLICIES.register("regression", "robolearn.policies.regression:RegressionPolicy")

ENVS = Registry("env")  # classes or factories returning an Env
ENVS.register("pusht", "robolearn.sim.pusht:PushTEnv")
ENVS.register("robosuite", "robolearn.sim.robosuite_env:RobosuiteEnv")
ENVS.register("particle", "robolearn.sim.particle:ParticleEnv")
ENVS.register("imagined", "robolearn.eval.imagination:ImaginedEnv")
ENVS.register("rig", "robolearn.hal.rig:rig_env")  # a robot (real or the simulated arm) from a rig file

# Hardware: what a rig file (hardware/*.yaml) names as its robot and cameras, and the teleop devices.
ROBOTS = Registry("robot")
ROBOTS.register("sim_arm", "robolearn.hal.drivers.sim_arm:SimulatedArm",
                aliases=["robolearn.hal.sim_arm:SimulatedArm"])  # its module before it joined drivers/
ROBOTS.register("ur_rtde", "robolearn.hal.drivers.ur_rtde:URRobot")
ROBOTS.register("bus_arm", "robolearn.hal.drivers.bus_arm:BusArm")
ROBOTS.register("franka", "robolearn.hal.drivers.franka:FrankaRobot")

CAMERAS = Registry("camera")
CAMERAS.register("sim_camera", "robolearn.hal.drivers.sim_arm:SimulatedCamera",
                 aliases=["robolearn.hal.sim_arm:SimulatedCamera"])
CAMERAS.register("opencv", "robolearn.hal.drivers.opencv_camera:OpenCVCamera")
CAMERAS.register("realsense", "robolearn.hal.drivers.realsense_camera:RealSenseCamera")

TELEOPS = Registry("teleop device")
TELEOPS.register("keyboard", "robolearn.hal.drivers.keyboard_teleop:KeyboardTeleop")
TELEOPS.register("spacemouse", "robolearn.hal.drivers.spacemouse_teleop:SpaceMouseTeleop")
