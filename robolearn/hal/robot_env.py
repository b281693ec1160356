"""`RobotEnv`: a real (or simulated) arm with cameras behind the same `Env` contract as the simulators.

Every command goes through a `SafeRobot`. `step` sends one command and returns the newest observation; it never
sleeps (the control loop's clock paces it). Observations use the sim tasks' key names so one policy reads both:

    robot0_eef_pos (3)        end-effector position, m, base frame
    robot0_eef_quat (4)       its orientation, quaternion x, y, z, w (robosuite's order)
    robot0_eef_rotvec (3)     the same orientation as a rotation vector
    robot0_joint_pos (n)      joint positions, rad;  robot0_joint_vel (n) rad/s
    robot0_gripper (1)        0 open .. 1 closed
    robot0_gripper_qpos (2)   robosuite-style finger positions (+h, -h), h = gripper_half_open_m * (1 - gripper)
    <camera>_image (H, W, 3)  uint8, resized to the spec's shape when the camera delivers another size

Actions (`action_mode`), in the robot's base frame, the last entry always the gripper (0 open .. 1 closed):
    ee_delta     [dx, dy, dz (m), rx, ry, rz (rotation vector, rad), gripper]: moves the previous end-effector
                 target (the measured pose after reset or a refused command), rotation applied on the left;
    ee_absolute  [x, y, z, rx, ry, rz, gripper]: the target pose;
    joint        [q_1 .. q_n (rad), gripper]: joint targets.
reward is 0 and done is False: a human or the loop ends episodes. info["success"] is what the robot can judge
itself (`task_success()`, which the simulated arm has: the cube lifted), else False: a human labels real episodes.
The watchdog is fed with the timestamp of the oldest part of each observation, so a camera that stops delivering
also stops the robot.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.env import ArraySpec, EnvSpec, Observation
from robolearn.hal.camera import Camera
from robolearn.hal.robot import Robot, RobotLimits
from robolearn.hal.safety import (
    BLOCKED,
    REJECTED,
    RobotHalted,
    SafeRobot,
    Watchdog,
    command_array,
    finite_rotation,
    positive_finite,
)

ACTION_MODES = ("ee_delta", "ee_absolute", "joint")
IMAGE_SUFFIX = "_image"


def low_dim_shapes(n_joints: int) -> dict[str, tuple[int, ...]]:
    """The low-dim observation keys a RobotEnv can produce for an arm with `n_joints` joints."""
    return {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_eef_rotvec": (3,), "robot0_joint_pos": (n_joints,),
            "robot0_joint_vel": (n_joints,), "robot0_gripper": (1,), "robot0_gripper_qpos": (2,)}


def action_layout(action_mode: str, limits: RobotLimits) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """(action_dim, low, high, meaning) of an action mode; the bounds are what the safety layer lets through."""
    if action_mode == "ee_delta":
        p, r = limits.max_ee_step, limits.max_ee_rotation_step
        return 7, (-p, -p, -p, -r, -r, -r, 0.0), (p, p, p, r, r, r, 1.0), (
            "delta end-effector pose in the base frame: [dx, dy, dz] (m) and rotation vector [rx, ry, rz] (rad) from the "
            "previous target; gripper 0 open .. 1 closed")
    if action_mode == "ee_absolute":
        return 7, (*limits.workspace_low, -math.pi, -math.pi, -math.pi, 0.0), \
            (*limits.workspace_high, math.pi, math.pi, math.pi, 1.0), (
            "absolute end-effector pose in the base frame: [x, y, z] (m), rotation vector [rx, ry, rz] (rad); "
            "gripper 0 open .. 1 closed")
    if action_mode == "joint":
        return limits.n_joints + 1, (*limits.joint_lower, 0.0), (*limits.joint_upper, 1.0), (
            f"absolute joint positions q_1..q_{limits.n_joints} (rad); gripper 0 open .. 1 closed")
    raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")


def make_robot_spec(name: str, limits: RobotLimits, obs_keys: list[str] | tuple[str, ...],
                    image_shapes: Mapping[str, tuple[int, int]], action_mode: str, control_hz: float,
                    max_episode_steps: int = 1000, extra: dict[str, Any] | None = None) -> EnvSpec:
    """An EnvSpec for a robot task. `image_shapes` maps camera name -> (height, width) of its observation."""
    shapes = low_dim_shapes(limits.n_joints)
    obs: dict[str, ArraySpec] = {}
    for key in obs_keys:
        if key in shapes:
            obs[key] = ArraySpec(shapes[key], "float32")
        elif key.endswith(IMAGE_SUFFIX) and key[: -len(IMAGE_SUFFIX)] in image_shapes:
            h, w = image_shapes[key[: -len(IMAGE_SUFFIX)]]
            obs[key] = ArraySpec((int(h), int(w), 3), "uint8")
        else:
            cams = [f"{c}{IMAGE_SUFFIX}" for c in image_shapes]
            raise ValueError(f"unknown observation key {key!r}; a robot env produces {sorted(shapes)} and {cams}")
    if not control_hz > 0:
        raise ValueError(f"control_hz must be positive, got {control_hz}")
    dim, low, high, meaning = action_layout(action_mode, limits)
    return EnvSpec(name=name, obs=obs, action_dim=dim, control_hz=float(control_hz), action_meaning=meaning,
                   action_low=tuple(float(v) for v in low), action_high=tuple(float(v) for v in high),
                   max_episode_steps=int(max_episode_steps), extra={"action_mode": action_mode, **(extra or {})})


@dataclass
class SafetyConfig:
    stale_after_s: float = 0.1  # a robot state older than this when a command is checked rejects the command
    watchdog_timeout_s: float | None = 0.5  # stop when no fresh observation for this long (None: no watchdog)
    home_speed: float = 0.3  # rad/s per joint while reset() drives to the home pose
    home_tolerance: float = 0.01  # rad: home is reached when every joint is this close
    home_timeout_s: float = 60.0
    frame_timeout_s: float = 2.0  # reset() waits this long for each camera's first fresh frame

    def __post_init__(self) -> None:
        for name in ("stale_after_s", "home_speed", "home_tolerance", "home_timeout_s", "frame_timeout_s"):
            setattr(self, name, positive_finite(getattr(self, name), f"safety.{name}"))  # inf/NaN switch a check off
        if self.watchdog_timeout_s is not None:
            self.watchdog_timeout_s = positive_finite(self.watchdog_timeout_s, "safety.watchdog_timeout_s (or null: off)")


class RobotEnv:
    """The Env contract for hardware (see the module docstring)."""

    def __init__(self, robot: Robot, cameras: Mapping[str, Camera], spec: EnvSpec, action_mode: str = "ee_delta",
                 home: np.ndarray | None = None, safety: SafetyConfig | None = None, limits: RobotLimits | None = None,
                 wait: Callable[[float], None] = time.sleep, connect: bool = True, gripper_half_open_m: float = 0.04):
        self.safety = safety or SafetyConfig()
        self.spec = spec
        self.action_mode = action_mode
        self.raw_robot = robot
        self.cameras = dict(cameras)
        self.wait = wait  # only reset() waits; tests of a hand-stepped simulation pass a function that steps it
        self.gripper_half_open_m = float(gripper_half_open_m)
        watchdog = None
        if self.safety.watchdog_timeout_s is not None:
            if self.safety.watchdog_timeout_s <= 1.0 / spec.control_hz:
                raise ValueError(f"safety.watchdog_timeout_s={self.safety.watchdog_timeout_s} must exceed one control "
                                 f"period (1/{spec.control_hz} s), or the watchdog trips between steps")
            watchdog = Watchdog(self.safety.watchdog_timeout_s)
        self.robot = SafeRobot(robot, limits=limits, stale_after_s=self.safety.stale_after_s,
                               command_hz=spec.control_hz, watchdog=watchdog)
        self.watchdog = watchdog
        n = self.robot.limits.n_joints
        self.home = np.asarray(home if home is not None else getattr(robot, "home", None), dtype=np.float64)
        if self.home.shape != (n,):
            raise ValueError(f"home must list {n} joint positions (the rig's `home`), got {self.home.tolist()}")
        lo, hi = np.array(self.robot.limits.joint_lower), np.array(self.robot.limits.joint_upper)
        if np.any(self.home < lo) or np.any(self.home > hi):
            raise ValueError(f"home {self.home.tolist()} lies outside the joint limits {lo.tolist()} .. {hi.tolist()}")
        self._check_spec(n)
        self._ee_target: np.ndarray | None = None
        self._steps = 0
        self._ready = False  # reset() has run
        self._connected = False
        self._closed = False
        if connect:
            self.connect()

    # ------------------------------------------------------------------ setup
    def _check_spec(self, n_joints: int) -> None:
        dim = action_layout(self.action_mode, self.robot.limits)[0]
        if self.spec.action_dim != dim:
            raise ValueError(f"spec {self.spec.name!r} declares action_dim {self.spec.action_dim}, but action_mode "
                             f"{self.action_mode!r} on a {n_joints}-joint arm takes {dim}")
        shapes = low_dim_shapes(n_joints)
        for key, want in self.spec.obs.items():
            if key.endswith(IMAGE_SUFFIX):
                if key[: -len(IMAGE_SUFFIX)] not in self.cameras:
                    raise ValueError(f"spec observation {key!r} needs a camera named {key[: -len(IMAGE_SUFFIX)]!r}; "
                                     f"this env has cameras {sorted(self.cameras)}")
                if want.dtype != "uint8" or len(want.shape) != 3 or want.shape[2] != 3:
                    raise ValueError(f"spec observation {key!r} must be uint8 (H, W, 3), got {want}")
            elif key not in shapes:
                raise ValueError(f"spec observation {key!r} is not one a robot env produces: {sorted(shapes)}")
            elif tuple(want.shape) != shapes[key] or want.dtype != "float32":
                raise ValueError(f"spec observation {key!r} is {want}; a {n_joints}-joint arm gives float32 {shapes[key]}")

    def connect(self) -> None:
        """Connect the robot, then each camera (undoing what was connected if one fails)."""
        if self._connected:
            return
        self.robot.connect()
        done: list[Camera] = []
        try:
            for camera in self.cameras.values():
                camera.connect()
                done.append(camera)
        except BaseException:
            for camera in done:
                camera.disconnect()
            self.robot.disconnect()
            raise
        self._connected = True

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> Observation:
        """Open the gripper, drive slowly to the home pose through the safety layer, and return the first observation.

        Clears a tripped watchdog (starting an episode is the operator's call) but never an engaged e-stop. A
        simulated arm also re-places its objects from `seed`."""
        if self._closed:
            raise RuntimeError("this RobotEnv is closed; build a new one")
        self.connect()
        if self.robot.estopped:
            raise RobotHalted(self.robot.halted)
        self._ready = False
        if self.watchdog is not None:
            self.watchdog.reset()
        self._check_result(self.robot.command_gripper(0.0), "opening the gripper")
        self._go_home()
        place = getattr(self.raw_robot, "place_objects", None)
        if callable(place):
            place(seed)
        for name, camera in self.cameras.items():
            try:
                camera.read(timeout_s=self.safety.frame_timeout_s)
            except TimeoutError as err:
                raise RuntimeError(f"camera {name!r} delivered no frame within {self.safety.frame_timeout_s} s") from err
        obs, _, _ = self._observe()
        self._ee_target = None
        self._steps = 0
        self._ready = True
        if self.watchdog is not None:
            self.watchdog.arm()
            self.watchdog.start()
        return obs

    def _check_result(self, result: str, doing: str) -> None:
        if result in (REJECTED, BLOCKED):
            last = self.robot.violations[-1].detail if self.robot.violations else ""
            raise RobotHalted(f"{doing}: the safety layer {result} the command ({self.robot.halted or last})")

    def _go_home(self) -> None:
        hz = self.spec.control_hz
        step = self.safety.home_speed / hz
        target = np.asarray(self.robot.read_state().joint_positions, dtype=np.float64).copy()
        for _ in range(math.ceil(self.safety.home_timeout_s * hz)):
            q = np.asarray(self.robot.read_state().joint_positions, dtype=np.float64)
            if np.abs(q - self.home).max() <= self.safety.home_tolerance:
                return
            # a straight line in joint space, every joint arriving together, at most home_speed per joint
            rest = self.home - target
            far = np.abs(rest).max()
            target = target + rest * min(1.0, step / far) if far > 0 else target
            self._check_result(self.robot.command_joint_positions(target), "driving to the home pose")
            self.wait(1.0 / hz)
        q = self.robot.read_state().joint_positions
        raise RuntimeError(f"{self.raw_robot.name} did not reach the home pose within {self.safety.home_timeout_s} s "
                           f"(joint errors {np.round(self.home - q, 4).tolist()} rad); is it blocked or in protective stop?")

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        """Send one command through the safety layer and return the newest observation (never sleeps)."""
        a = command_array(action, (self.spec.action_dim,), f"action for action_mode {self.action_mode!r} "
                          f"({self.spec.action_meaning})")
        if self.robot.halted:
            raise RobotHalted(self.robot.halted)
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        if self.action_mode == "joint":
            arm = self.robot.command_joint_positions(a[:-1])
        elif self.action_mode == "ee_absolute":
            arm = self.robot.command_ee_pose(a[:6])
        else:
            arm = self.robot.command_ee_pose(self._delta_target(a[:6]))
            self._ee_target = self.robot.last_sent["ee_pose"] if arm not in (REJECTED, BLOCKED) else None
        gripper = self.robot.command_gripper(a[-1])
        self._steps += 1
        obs, state_time, frame_times = self._observe()
        judge = getattr(self.raw_robot, "task_success", None)
        info = {"success": bool(judge()) if callable(judge) else False, "steps": self._steps, "arm_command": arm,
                "gripper_command": gripper,
                "safety": dict(self.robot.counters), "state_timestamp": state_time, "frame_timestamps": frame_times}
        return obs, 0.0, False, info

    def _delta_target(self, delta: np.ndarray) -> np.ndarray:
        anchor = self._ee_target if self._ee_target is not None else self.robot.read_state().ee_pose
        if not (np.all(np.isfinite(delta[:3])) and finite_rotation(delta[3:])):
            return np.concatenate([anchor[:3] + delta[:3], delta[3:]])  # the safety layer rejects and records it
        rotation = Rotation.from_rotvec(delta[3:]) * Rotation.from_rotvec(anchor[3:])
        return np.concatenate([anchor[:3] + delta[:3], rotation.as_rotvec()])

    # ------------------------------------------------------------------ observations
    def _observe(self) -> tuple[Observation, float, dict[str, float]]:
        state = self.robot.read_state()
        frames = {name: camera.latest() for name, camera in self.cameras.items()}
        pose = np.asarray(state.ee_pose, dtype=np.float64)
        h = self.gripper_half_open_m * (1.0 - state.gripper)
        low_dim = {"robot0_eef_pos": pose[:3], "robot0_eef_quat": Rotation.from_rotvec(pose[3:]).as_quat(),
                   "robot0_eef_rotvec": pose[3:], "robot0_joint_pos": state.joint_positions,
                   "robot0_joint_vel": state.joint_velocities, "robot0_gripper": [state.gripper],
                   "robot0_gripper_qpos": [h, -h]}
        values: dict[str, np.ndarray] = {}
        for key, want in self.spec.obs.items():
            if key.endswith(IMAGE_SUFFIX):
                values[key] = _fit_image(frames[key[: -len(IMAGE_SUFFIX)]].image, want.shape)
            else:
                values[key] = np.asarray(low_dim[key], dtype=np.float32)
        frame_times = {name: f.timestamp for name, f in frames.items()}
        stamps = [state.timestamp, *frame_times.values()]
        # A broken state was already stopped and recorded by SafeRobot.read_state; a broken or future frame stamp is
        # recorded here. Neither feeds the watchdog, so a reading that stays broken trips it and ends the episode.
        if self.watchdog is not None and self.robot.state_problem(state) is None:
            try:
                for t in stamps:  # each checked: min() of a list holding NaN depends on the order
                    self.watchdog.check_timestamp(t)
                self.watchdog.feed(min(stamps))
            except ValueError as err:
                self.robot.reject_reading(f"observation timestamps {stamps}: {err}")
        return Observation(values, timestamp=state.timestamp), state.timestamp, frame_times

    def render(self) -> np.ndarray:
        """The first camera's newest full-size frame (for videos)."""
        if not self.cameras:
            raise RuntimeError("this RobotEnv has no cameras to render; add one to the rig")
        return next(iter(self.cameras.values())).latest().image

    def close(self) -> None:
        """Stop the robot, then disconnect it and the cameras. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.watchdog is not None:
            self.watchdog.close()
        try:
            if self._connected:
                self.robot.stop()
        finally:
            for camera in self.cameras.values():
                camera.disconnect()
            self.robot.disconnect()
            self._connected = False
            self._ready = False


def _fit_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(image.shape) == tuple(shape):
        return np.ascontiguousarray(image, dtype=np.uint8)
    import cv2

    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA).astype(np.uint8)
