"""Rigs: one YAML file describes a physical (or simulated) setup, and `load_rig(...).build_env()` gives its RobotEnv.

A rig names its robot and cameras by driver name (`robolearn.registry.ROBOTS` / `CAMERAS`: `ur_rtde`, `opencv`,
...) with constructor kwargs, and declares rates, limits, the home pose, calibration, the action mode and the
task's observation keys. Nothing a rig says is imported as code: an import path written by an older version is
accepted only where the registry lists it as an alias. Loading validates everything without importing a driver,
so a rig whose vendor SDK is missing still loads; building it fails with a message saying what to install. Every
error names the file and the field. See hardware/README.md.

Arguments the rig fills in when the class takes them and the kwargs do not set them: the robot gets `name`,
`command_hz`, `limits` and `calibration` (the `calibration.robot` section, passed through the annotated type's
`from_dict` when it has one); a camera gets `name` and, when it takes `arm`, the rig's robot (simulated cameras).
"""
from __future__ import annotations

import inspect
import math
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robolearn.env import EnvSpec
from robolearn.hal.camera import Camera
from robolearn.hal.robot import Robot, RobotLimits
from robolearn.hal.robot_env import ACTION_MODES, RobotEnv, SafetyConfig, make_robot_spec
from robolearn.paths import hardware_dir
from robolearn.registry import CAMERAS, ROBOTS, Registry, UnknownNameError

INSTALL_HINT = "hardware drivers need their vendor SDKs: pip install 'robolearn[hardware]'"
_TOP_KEYS = {"name", "description", "robot", "control_hz", "command_hz", "limits", "home", "cameras", "calibration",
             "action_mode", "task", "safety", "gripper_half_open_m"}
_REQUIRED = ("robot", "control_hz", "command_hz", "limits", "home", "action_mode", "task")
# Constructor arguments a file may not set: `sdk` replaces the vendor module (tests hand in fakes; from a file it
# would be a string the driver calls into), and the rest come from the rig's own validated fields.
_RESERVED_KWARGS = {"sdk": "only Python code may replace a driver's vendor SDK",
                    "limits": "set the top-level `limits`", "calibration": "set `calibration.robot`",
                    "arm": "a simulated camera is handed the rig's robot"}


class RigError(ValueError):
    """A rig file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Component:
    """A driver named in a registry (its canonical name) and the keyword arguments it is built with."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RigTask:
    name: str
    obs_keys: tuple[str, ...]
    image_size: tuple[int, int] | None = None  # (height, width) of every image observation; None: the camera's own
    max_episode_steps: int = 1000
    description: str = ""


@dataclass
class Rig:
    name: str
    path: Path | None
    robot: Component
    control_hz: float  # policy / env.step rate
    command_hz: float  # the rate the robot's controller takes setpoints (its driver interpolates up to it)
    limits: RobotLimits
    home: tuple[float, ...]
    cameras: dict[str, Component]
    calibration: dict[str, Any]
    action_mode: str
    task: RigTask
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    gripper_half_open_m: float = 0.04
    description: str = ""

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"rig {self.name!r}"

    def image_shapes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of each camera's observation."""
        if self.task.image_size is not None:
            return dict.fromkeys(self.cameras, self.task.image_size)
        return {name: (int(c.kwargs["height"]), int(c.kwargs["width"])) for name, c in self.cameras.items()}

    def spec(self) -> EnvSpec:
        extra: dict[str, Any] = {"rig": self.name}
        extrinsics = {name: c["extrinsics"] for name, c in self.calibration.get("cameras", {}).items()}
        if extrinsics:
            extra["camera_extrinsics"] = extrinsics
        return make_robot_spec(self.task.name, self.limits, self.task.obs_keys, self.image_shapes(), self.action_mode,
                               self.control_hz, self.task.max_episode_steps, extra=extra)

    # ------------------------------------------------------------------ building
    def _fail(self, where: str, err: BaseException) -> RuntimeError | ImportError:
        if isinstance(err, ImportError):
            return ImportError(f"{self.source}: {where}: {err}\n({INSTALL_HINT})")
        return RuntimeError(f"{self.source}: {where}: {type(err).__name__}: {err}")

    def build_robot(self) -> Robot:
        """The robot driver, not yet connected."""
        try:
            cls = ROBOTS.get(self.robot.cls)
        except ImportError as err:
            raise self._fail("robot.class", err) from err
        kwargs = dict(self.robot.kwargs)
        params = _parameters(cls)
        _fill(kwargs, params, "name", self.name)
        _fill(kwargs, params, "limits", self.limits)
        if "command_hz" in params:
            if kwargs.setdefault("command_hz", self.command_hz) != self.command_hz:
                raise RigError(f"{self.source}: robot.kwargs.command_hz={kwargs['command_hz']} contradicts "
                               f"command_hz={self.command_hz}; set it once, at the top level")
        if "robot" in self.calibration:
            if "calibration" not in params:
                raise RigError(f"{self.source}: calibration.robot is set but {self.robot.cls} takes no `calibration`")
            kwargs.setdefault("calibration", _calibration_value(cls, self.calibration["robot"]))
        try:
            robot = cls(**kwargs)
        except ImportError as err:
            raise self._fail("robot", err) from err
        except (TypeError, ValueError) as err:
            raise RigError(f"{self.source}: robot.kwargs: {self.robot.cls} rejected {sorted(kwargs)}: {err}") from err
        self._check_robot(robot)
        return robot

    def _check_robot(self, robot: Any) -> None:
        if not isinstance(robot, Robot):
            raise RigError(f"{self.source}: robot.class {self.robot.cls} does not implement the Robot protocol")
        if not math.isclose(float(robot.command_hz), self.command_hz):
            raise RigError(f"{self.source}: command_hz is {self.command_hz} but {self.robot.cls} runs at "
                           f"{robot.command_hz}; make them agree")
        own = robot.limits
        if own.n_joints != self.limits.n_joints:
            raise RigError(f"{self.source}: limits declare {self.limits.n_joints} joints but {self.robot.cls} has {own.n_joints}")
        wider = [i for i in range(own.n_joints) if self.limits.joint_lower[i] < own.joint_lower[i] - 1e-9
                 or self.limits.joint_upper[i] > own.joint_upper[i] + 1e-9
                 or self.limits.joint_max_velocity[i] > own.joint_max_velocity[i] + 1e-9]
        if wider:
            raise RigError(f"{self.source}: limits for joints {wider} are wider than the robot's own "
                           f"({own.joint_lower} .. {own.joint_upper}, {own.joint_max_velocity} rad/s); narrow them")

    def build_cameras(self, robot: Robot) -> dict[str, Camera]:
        cameras = {}
        for name, component in self.cameras.items():
            try:
                cls = CAMERAS.get(component.cls)
            except ImportError as err:
                raise self._fail(f"cameras.{name}.class", err) from err
            kwargs = dict(component.kwargs)
            params = _parameters(cls)
            _fill(kwargs, params, "name", name)
            _fill(kwargs, params, "arm", robot)
            try:
                camera = cls(**kwargs)
            except ImportError as err:
                raise self._fail(f"cameras.{name}", err) from err
            except (TypeError, ValueError) as err:
                raise RigError(f"{self.source}: cameras.{name}.kwargs: {component.cls} rejected them: {err}") from err
            if not isinstance(camera, Camera):
                raise RigError(f"{self.source}: cameras.{name}.class {component.cls} does not implement the Camera protocol")
            cameras[name] = camera
        return cameras

    def build_env(self, connect: bool = True, wait: Callable[[float], None] = time.sleep) -> RobotEnv:
        """Robot + cameras + safety layer as a RobotEnv, connected unless `connect=False`."""
        robot = self.build_robot()
        cameras = self.build_cameras(robot)
        try:
            return RobotEnv(robot, cameras, self.spec(), action_mode=self.action_mode, home=np.array(self.home),
                            safety=self.safety, limits=self.limits, wait=wait, connect=connect,
                            gripper_half_open_m=self.gripper_half_open_m)
        except ImportError as err:
            raise self._fail("connecting", err) from err
        except (ConnectionError, TimeoutError, OSError) as err:
            err.add_note(f"while connecting rig {self.name!r} ({self.source}); check power, cables and the host/port in "
                         "robot.kwargs")
            raise


def _parameters(cls: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}


def _fill(kwargs: dict[str, Any], params: Mapping[str, inspect.Parameter], name: str, value: Any) -> None:
    if name in params and name not in kwargs:
        kwargs[name] = value


def _calibration_value(cls: Any, section: Any) -> Any:
    """The rig's calibration mapping, converted through the constructor's annotated type when it has `from_dict`."""
    try:
        hint = typing.get_type_hints(cls.__init__).get("calibration")
    except Exception:  # unresolvable annotations: hand the mapping over as it is
        hint = None
    for candidate in typing.get_args(hint) or (hint,):
        if hasattr(candidate, "from_dict"):
            return candidate.from_dict(section)
    return section


# ---------------------------------------------------------------------- loading
def rig_path(path_or_name: str | Path) -> Path:
    """A rig file: an existing path, or `<name>` looked up as hardware/<name>.yaml (here, then in the project)."""
    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"rig file {path} does not exist")
        return path
    for folder in (Path.cwd() / "hardware", hardware_dir()):
        candidate = folder / f"{path_or_name}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no rig named {str(path_or_name)!r}; available: {available_rigs()} "
                            f"(hardware/<name>.yaml), or pass a path to a .yaml file")


def available_rigs() -> list[str]:
    names = {p.stem for folder in (Path.cwd() / "hardware", hardware_dir()) if folder.is_dir() for p in folder.glob("*.yaml")}
    return sorted(names)


def load_rig(path_or_name: str | Path) -> Rig:
    """Read and validate a rig file (no driver is imported)."""
    path = rig_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RigError(f"{path}: not valid YAML: {err}") from err
    return parse_rig(raw, path)


def rig_env(rig: str) -> RobotEnv:
    """A rig's RobotEnv, not yet connected (its first reset connects): a task config names a robot as its env with
    `env: rig` and `env_kwargs: {rig: NAME_OR_PATH}`."""
    return load_rig(rig).build_env(connect=False)


def parse_rig(raw: Any, path: Path | None = None) -> Rig:
    """A Rig from the mapping of a rig file (`path` only names it in errors)."""
    src = str(path) if path is not None else "rig"

    def fail(where: str, message: str) -> RigError:
        return RigError(f"{src}: {where}: {message}")

    if not isinstance(raw, Mapping):
        raise RigError(f"{src}: a rig file must be a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise fail(", ".join(map(str, unknown)), f"unknown field(s); a rig has {sorted(_TOP_KEYS)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise fail(", ".join(missing), "missing required field(s)")

    def number(value: Any, where: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise fail(where, f"expected a finite number, got {value!r}")
        if positive and not value > 0:
            raise fail(where, f"must be positive, got {value}")
        return float(value)

    def numbers(value: Any, where: str, length: int | None = None) -> tuple[float, ...]:
        if not isinstance(value, list | tuple):
            raise fail(where, f"expected a list of numbers, got {value!r}")
        if length is not None and len(value) != length:
            raise fail(where, f"expected {length} numbers, got {len(value)}")
        return tuple(number(v, f"{where}[{i}]") for i, v in enumerate(value))

    def mapping(value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise fail(where, f"expected a mapping, got {value!r}")
        return dict(value)

    def component(value: Any, where: str, registry: Registry) -> Component:
        value = mapping(value, where)
        extra = sorted(set(value) - {"class", "kwargs"})
        if extra:
            raise fail(where, f"unknown field(s) {extra}; expected `class` and `kwargs`")
        try:  # validated by name only: no driver module is imported while loading
            cls = registry.canonical(value.get("class"))
        except UnknownNameError as err:
            raise fail(f"{where}.class", f"{err}; name a registered driver, or register a new one in "
                       "robolearn/registry.py (see hardware/README.md)") from err
        kwargs = mapping(value.get("kwargs"), f"{where}.kwargs")
        for key in sorted(set(kwargs) & set(_RESERVED_KWARGS)):
            raise fail(f"{where}.kwargs.{key}", f"a rig file cannot set it: {_RESERVED_KWARGS[key]}")
        return Component(cls, kwargs)

    name = raw.get("name", path.stem if path is not None else "rig")
    if not isinstance(name, str) or not name:
        raise fail("name", f"expected a non-empty string, got {name!r}")
    control_hz = number(raw["control_hz"], "control_hz", positive=True)
    command_hz = number(raw["command_hz"], "command_hz", positive=True)
    if command_hz < control_hz:
        raise fail("command_hz", f"{command_hz} is below control_hz {control_hz}; the controller takes commands at least "
                   "as often as the policy sends them")

    lim = mapping(raw["limits"], "limits")
    lim_fields = {f.name for f in fields(RobotLimits)}
    unknown = sorted(set(lim) - lim_fields)
    if unknown:
        raise fail("limits", f"unknown field(s) {unknown}; RobotLimits has {sorted(lim_fields)}")
    for key in ("joint_lower", "joint_upper", "joint_max_velocity", "workspace_low", "workspace_high"):
        if key not in lim:
            raise fail(f"limits.{key}", "missing")
    n = len(lim["joint_lower"]) if isinstance(lim["joint_lower"], list) else 0
    values: dict[str, Any] = {}
    for key in ("joint_lower", "joint_upper", "joint_max_velocity"):
        values[key] = numbers(lim[key], f"limits.{key}", n)
    for key in ("workspace_low", "workspace_high"):
        values[key] = numbers(lim[key], f"limits.{key}", 3)
    for key in ("max_joint_step", "max_ee_step", "max_ee_rotation_step"):
        if key in lim:
            values[key] = number(lim[key], f"limits.{key}", positive=True)
    try:
        limits = RobotLimits(**values)
    except ValueError as err:
        raise fail("limits", str(err)) from err
    if n == 0:
        raise fail("limits.joint_lower", "expected one number per joint")

    home = numbers(raw["home"], "home", n)
    outside = [i for i, q in enumerate(home) if not limits.joint_lower[i] <= q <= limits.joint_upper[i]]
    if outside:
        raise fail("home", f"joints {outside} lie outside limits.joint_lower/joint_upper")

    action_mode = raw["action_mode"]
    if action_mode not in ACTION_MODES:
        raise fail("action_mode", f"expected one of {ACTION_MODES}, got {action_mode!r}")

    robot = component(raw["robot"], "robot", ROBOTS)
    cameras = {str(k): component(v, f"cameras.{k}", CAMERAS) for k, v in mapping(raw.get("cameras"), "cameras").items()}

    task_raw = mapping(raw["task"], "task")
    task_fields = {f.name for f in fields(RigTask)}
    unknown = sorted(set(task_raw) - task_fields)
    if unknown:
        raise fail("task", f"unknown field(s) {unknown}; a task has {sorted(task_fields)}")
    obs_keys = task_raw.get("obs_keys")
    if not isinstance(obs_keys, list) or not obs_keys or not all(isinstance(k, str) for k in obs_keys):
        raise fail("task.obs_keys", f"expected a non-empty list of observation names, got {obs_keys!r}")
    image_size = None
    if task_raw.get("image_size") is not None:
        hw = numbers(task_raw["image_size"], "task.image_size", 2)
        if min(hw) < 8 or any(v != int(v) for v in hw):
            raise fail("task.image_size", f"expected [height, width] in whole pixels >= 8, got {list(hw)}")
        image_size = (int(hw[0]), int(hw[1]))
    else:
        for cam, comp in cameras.items():
            if not all(isinstance(comp.kwargs.get(k), int) for k in ("width", "height")):
                raise fail(f"cameras.{cam}.kwargs", "give integer width and height, or set task.image_size")
    steps = task_raw.get("max_episode_steps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise fail("task.max_episode_steps", f"expected a positive integer, got {steps!r}")
    task = RigTask(name=str(task_raw.get("name", name)), obs_keys=tuple(obs_keys), image_size=image_size,
                   max_episode_steps=steps, description=str(task_raw.get("description", "")))

    calibration = _parse_calibration(mapping(raw.get("calibration"), "calibration"), cameras, fail)

    safety_raw = mapping(raw.get("safety"), "safety")
    safety_fields = {f.name for f in fields(SafetyConfig)}
    unknown = sorted(set(safety_raw) - safety_fields)
    if unknown:
        raise fail("safety", f"unknown field(s) {unknown}; safety has {sorted(safety_fields)}")
    for key, value in safety_raw.items():
        if not (key == "watchdog_timeout_s" and value is None):
            number(value, f"safety.{key}")
    try:
        safety = SafetyConfig(**safety_raw)
    except ValueError as err:
        raise fail("safety", str(err)) from err
    if safety.watchdog_timeout_s is not None and safety.watchdog_timeout_s <= 1.0 / control_hz:
        raise fail("safety.watchdog_timeout_s", f"{safety.watchdog_timeout_s} s must exceed one control period "
                   f"(1/{control_hz} s)")

    rig = Rig(name=name, path=path, robot=robot, control_hz=control_hz, command_hz=command_hz, limits=limits, home=home,
              cameras=cameras, calibration=calibration, action_mode=action_mode, task=task, safety=safety,
              gripper_half_open_m=number(raw.get("gripper_half_open_m", 0.04), "gripper_half_open_m", positive=True),
              description=str(raw.get("description", "")))
    try:
        rig.spec()  # observation keys and image shapes checked now, not when the robot is already moving
    except ValueError as err:
        raise fail("task.obs_keys", str(err)) from err
    return rig


def _parse_calibration(calibration: dict[str, Any], cameras: Mapping[str, Component],
                       fail: Callable[[str, str], RigError]) -> dict[str, Any]:
    """`robot`: handed to the driver; `cameras.<name>.extrinsics`: the camera's pose in the robot base frame (4x4)."""
    unknown = sorted(set(calibration) - {"robot", "cameras"})
    if unknown:
        raise fail("calibration", f"unknown field(s) {unknown}; expected `robot` and/or `cameras`")
    cams = calibration.get("cameras") or {}
    if not isinstance(cams, Mapping):
        raise fail("calibration.cameras", f"expected a mapping of camera name -> calibration, got {cams!r}")
    for cam, entry in cams.items():
        where = f"calibration.cameras.{cam}"
        if cam not in cameras:
            raise fail(where, f"no camera named {cam!r} in `cameras` ({sorted(cameras)})")
        if not isinstance(entry, Mapping) or set(entry) != {"extrinsics"}:
            raise fail(where, "expected exactly one field, `extrinsics` (a 4x4 base-from-camera transform)")
        try:
            matrix = np.array(entry["extrinsics"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise fail(f"{where}.extrinsics", f"expected a 4x4 matrix of numbers: {err}") from err
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise fail(f"{where}.extrinsics", f"expected a finite 4x4 matrix, got shape {matrix.shape}")
        rot = matrix[:3, :3]
        if not np.allclose(matrix[3], [0, 0, 0, 1]) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) \
                or np.linalg.det(rot) < 0:
            raise fail(f"{where}.extrinsics", "the top-left 3x3 must be a rotation and the last row 0 0 0 1")
    out = dict(calibration)
    if cams:
        out["cameras"] = {str(k): {"extrinsics": np.array(v["extrinsics"], float).tolist()} for k, v in cams.items()}
    return out
