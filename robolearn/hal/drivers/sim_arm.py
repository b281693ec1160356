"""A simulated arm and cameras behind the hardware protocols, so rigs, the safety layer and the control loop run on
any laptop exactly as they would on a real robot.

`SimulatedArm` is a compact MuJoCo model of a Franka Panda (Franka's published kinematics, joint ranges and speed
limits; capsule links instead of meshes so software rendering stays fast) on a table with a cube; the scene is
the MJCF file `sim_arm.xml` beside this module. Joints carry
position servos with gravity compensation; like a real controller, the servo setpoints move toward the commanded
targets no faster than the joints' speed limits. End-effector commands are solved to joint targets by damped
least-squares IK. With `realtime=True` a thread steps the physics at wall-clock speed; with `realtime=False` the
caller advances it (`step`, `advance`), which makes tests deterministic.

The robot's base frame is the world frame: the table top is z = 0 and the end-effector frame (`ee_site`) sits
between the fingertips, z pointing out of the hand.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.hal.camera import Frame
from robolearn.hal.robot import RobotLimits, RobotState

FINGER_TRAVEL = 0.04  # m per finger: 0 = closed, 0.04 = open (8 cm between the fingers)
CUBE_HALF = 0.025  # m: the cube is 5 cm on a side
LIFTED_M = 0.05  # the scene's task succeeds when the cube's bottom is this far above the table
SCENE_CAMERAS = ("front", "side", "wrist")


@dataclass(frozen=True)
class ArmModel:
    """What the simulator needs to know about an arm beyond its MJCF."""

    xml_file: str  # MJCF scene, a file next to this module (shipped as package data)
    joint_names: tuple[str, ...]
    max_velocity: tuple[float, ...]  # rad/s, the manufacturer's limits (MJCF has no field for them)
    home: tuple[float, ...]
    workspace_low: tuple[float, float, float]
    workspace_high: tuple[float, float, float]


MODELS: dict[str, ArmModel] = {
    "panda": ArmModel(
        xml_file="sim_arm.xml",
        joint_names=tuple(f"joint{i}" for i in range(1, 8)),
        max_velocity=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),  # Franka datasheet, rad/s
        home=(0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398),  # Franka's "ready" pose, gripper down
        workspace_low=(0.25, -0.4, 0.01),  # over the table, in front of the base
        workspace_high=(0.75, 0.4, 0.6),
    ),
}


class SimulatedArm:
    """A MuJoCo arm implementing the `Robot` protocol (see the module docstring)."""

    def __init__(self, model: str = "panda", command_hz: float = 100.0, realtime: bool = True,
                 camera_names: tuple[str, ...] | list[str] = ("front", "wrist"), name: str | None = None):
        import mujoco

        if model not in MODELS:
            raise ValueError(f"unknown simulated arm model {model!r}; available: {sorted(MODELS)}")
        if not command_hz > 0:
            raise ValueError(f"command_hz must be positive, got {command_hz}")
        unknown = [c for c in camera_names if c not in SCENE_CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the simulated scene has {list(SCENE_CAMERAS)}")
        spec = MODELS[model]
        self.spec = spec
        self.name = name or f"sim_{model}"
        self.command_hz = float(command_hz)
        self.realtime = bool(realtime)
        self.camera_names = tuple(camera_names)
        self.model = mujoco.MjModel.from_xml_path(str(Path(__file__).with_name(spec.xml_file)))
        self._data = mujoco.MjData(self.model)
        self._kin = mujoco.MjData(self.model)  # scratch data for forward kinematics and IK, never stepped
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in spec.joint_names])
        self._dofs = np.array([m.jnt_dofadr[m.joint(j).id] for j in spec.joint_names])
        self._act = np.array([m.actuator(j).id for j in spec.joint_names])
        self._fingers_q = np.array([m.jnt_qposadr[m.joint(f).id] for f in ("finger_left", "finger_right")])
        self._fingers_act = np.array([m.actuator(f).id for f in ("finger_left", "finger_right")])
        self._cube_q = m.jnt_qposadr[m.joint("cube").id]
        self._cube_v = m.jnt_dofadr[m.joint("cube").id]
        self._site = m.site("ee_site").id
        ranges = m.jnt_range[[m.joint(j).id for j in spec.joint_names]]
        self.limits = RobotLimits(
            joint_lower=tuple(float(v) for v in ranges[:, 0]), joint_upper=tuple(float(v) for v in ranges[:, 1]),
            joint_max_velocity=spec.max_velocity, workspace_low=spec.workspace_low, workspace_high=spec.workspace_high)
        self.home = np.array(spec.home)
        self._lower, self._upper = ranges[:, 0].copy(), ranges[:, 1].copy()
        self._vmax = np.array(spec.max_velocity)
        self._target = self.home.copy()
        self._gripper_target = 0.0
        self._lock = threading.RLock()  # guards _data and the targets
        self._kin_lock = threading.Lock()  # guards _kin
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._t0 = 0.0
        self.dropped_s = 0.0  # simulated time skipped because the physics thread fell behind the wall clock
        self.connected = False
        self.reset_scene()

    # ------------------------------------------------------------------ scene
    def reset_scene(self, seed: int | None = None) -> None:
        """Arm at home with the gripper open, the cube placed from `seed` (see `place_objects`)."""
        import mujoco

        with self._lock:
            d = self._data
            mujoco.mj_resetData(self.model, d)
            d.qpos[self._qadr] = self.home
            d.qpos[self._fingers_q] = FINGER_TRAVEL
            self._target = self.home.copy()
            self._gripper_target = 0.0
            d.ctrl[self._act] = self.home
            d.ctrl[self._fingers_act] = FINGER_TRAVEL
            self.place_objects(seed)
            self._t0 = time.monotonic() - d.time

    def place_objects(self, seed: int | None = None) -> None:
        """Put the cube at rest on the table at a random spot in front of the arm (seed None: the centre), as a
        person resetting the scene would; RobotEnv.reset calls it after homing."""
        import mujoco

        if seed is None:
            x, y, yaw = 0.5, 0.0, 0.0
        else:
            rng = np.random.default_rng(seed)
            x, y, yaw = rng.uniform(0.42, 0.6), rng.uniform(-0.15, 0.15), rng.uniform(-np.pi, np.pi)
        with self._lock:
            d = self._data
            d.qpos[self._cube_q:self._cube_q + 7] = [x, y, CUBE_HALF, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            d.qvel[self._cube_v:self._cube_v + 6] = 0.0
            mujoco.mj_forward(self.model, d)

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Position and (w, x, y, z) quaternion of the cube, for scripted experts and tests."""
        with self._lock:
            q = self._data.qpos[self._cube_q:self._cube_q + 7].copy()
        return q[:3], q[3:]

    def task_success(self) -> bool:
        """The scene's task ("pick up the red cube"), judged from the simulator as a person watching would."""
        return bool(self.cube_pose()[0][2] - CUBE_HALF > LIFTED_M)

    def copy_state_to(self, data) -> None:
        """Copy the simulation state into another MjData of this model (cameras render from such a copy)."""
        with self._lock:
            data.qpos[:] = self._data.qpos
            data.qvel[:] = self._data.qvel
            data.time = self._data.time

    @property
    def sim_time(self) -> float:
        return float(self._data.time)

    # ------------------------------------------------------------------ physics
    def _physics_step(self) -> None:
        import mujoco

        d = self._data
        dt = self.model.opt.timestep
        # The servo setpoint approaches the target at no more than the joints' speed limits.
        setpoint = d.ctrl[self._act]
        d.ctrl[self._act] = setpoint + np.clip(self._target - setpoint, -self._vmax * dt, self._vmax * dt)
        d.ctrl[self._fingers_act] = FINGER_TRAVEL * (1.0 - self._gripper_target)
        mujoco.mj_step(self.model, d)

    def step(self, n: int = 1) -> None:
        """Advance the physics `n` steps of `model.opt.timestep` (only when not running in real time)."""
        if self.realtime:
            raise RuntimeError("this SimulatedArm steps itself in real time; create it with realtime=False to step by hand")
        with self._lock:
            for _ in range(int(n)):
                self._physics_step()

    def advance(self, seconds: float) -> None:
        """Advance the physics by `seconds` of simulated time (realtime=False)."""
        self.step(max(0, round(seconds / self.model.opt.timestep)))

    def _run(self) -> None:
        dt = self.model.opt.timestep
        while self._running.is_set():
            with self._lock:
                behind = time.monotonic() - self._t0 - self._data.time
                if behind > 0.1:  # the machine stalled: skip ahead rather than rush through the backlog
                    self.dropped_s += behind
                    self._t0 += behind
                    behind = 0.0
                for _ in range(int(behind / dt)):
                    self._physics_step()
            time.sleep(dt)

    # ------------------------------------------------------------------ Robot protocol
    def connect(self) -> None:
        if self.connected:
            return
        self.connected = True
        if self.realtime:
            self._t0 = time.monotonic() - self._data.time
            self._running.set()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-physics", daemon=True)
            self._thread.start()

    def disconnect(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.connected = False

    def _check_connected(self) -> None:
        if not self.connected:
            raise RuntimeError(f"{self.name} is not connected; call connect() first")

    def _forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position and rotation matrix at joint positions q (caller holds _kin_lock)."""
        import mujoco

        k = self._kin
        k.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, k)
        return k.site_xpos[self._site].copy(), k.site_xmat[self._site].reshape(3, 3).copy()

    def read_state(self) -> RobotState:
        self._check_connected()
        with self._lock:
            q = self._data.qpos[self._qadr].copy()
            qd = self._data.qvel[self._dofs].copy()
            fingers = self._data.qpos[self._fingers_q].copy()
        stamp = time.monotonic()
        with self._kin_lock:
            pos, rot = self._forward(q)
        gripper = float(np.clip(1.0 - fingers.mean() / FINGER_TRAVEL, 0.0, 1.0))
        return RobotState(joint_positions=q, joint_velocities=qd,
                          ee_pose=np.concatenate([pos, Rotation.from_matrix(rot).as_rotvec()]), gripper=gripper,
                          timestamp=stamp)

    def _check(self, values, shape: tuple[int, ...], what: str) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64)
        if a.shape != shape:
            raise ValueError(f"{self.name}: {what} must have shape {shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: {what} must be finite, got {a.tolist()}")
        return a

    def command_joint_positions(self, q: np.ndarray) -> None:
        self._check_connected()
        q = self._check(q, (len(self._qadr),), "joint target")
        with self._lock:
            self._target = np.clip(q, self._lower, self._upper)

    def command_ee_pose(self, pose: np.ndarray) -> None:
        self._check_connected()
        pose = self._check(pose, (6,), "end-effector pose")
        with self._lock:
            q0 = self._data.qpos[self._qadr].copy()
        q, _ = self.solve_ik(pose, q0)
        with self._lock:
            self._target = q

    def command_gripper(self, closed: float) -> None:
        self._check_connected()
        g = float(self._check(closed, (), "gripper command"))
        with self._lock:
            self._gripper_target = float(np.clip(g, 0.0, 1.0))

    def stop(self) -> None:
        """Hold the measured position (safe at any time, connected or not)."""
        with self._lock:
            q = self._data.qpos[self._qadr].copy()
            self._target = q
            self._data.ctrl[self._act] = q

    # ------------------------------------------------------------------ inverse kinematics
    def solve_ik(self, pose: np.ndarray, q0: np.ndarray, iterations: int = 50, damping: float = 0.05,
                 tol: float = 1e-4) -> tuple[np.ndarray, bool]:
        """Joint positions reaching `pose` (x, y, z, rotation vector), starting from q0: damped least squares with
        a small null-space pull toward home (the arm is redundant) and the joint ranges enforced every iteration.
        Returns (q, converged); an unreachable pose gives the closest configuration found."""
        import mujoco

        target_p = np.asarray(pose[:3], dtype=np.float64)
        target_r = Rotation.from_rotvec(pose[3:6]).as_matrix()
        n = len(self._qadr)
        q = np.clip(np.asarray(q0, dtype=np.float64), self._lower, self._upper)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        converged = False
        with self._kin_lock:
            for _ in range(iterations):
                pos, rot = self._forward(q)
                err = np.concatenate([target_p - pos, Rotation.from_matrix(target_r @ rot.T).as_rotvec()])
                if np.linalg.norm(err[:3]) < tol and np.linalg.norm(err[3:]) < 10 * tol:
                    converged = True
                    break
                mujoco.mj_comPos(self.model, self._kin)
                mujoco.mj_jacSite(self.model, self._kin, jacp, jacr, self._site)
                jac = np.vstack([jacp[:, self._dofs], jacr[:, self._dofs]])
                dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), err)
                null = np.eye(n) - np.linalg.pinv(jac) @ jac  # an exact projector: the pull never disturbs the pose
                dq += null @ (0.1 * (self.home - q))
                step = np.abs(dq).max()
                if step > 0.2:
                    dq *= 0.2 / step
                q = np.clip(q + dq, self._lower, self._upper)
        return q, converged


class SimulatedCamera:
    """A camera of a `SimulatedArm`'s scene implementing `Camera`: a reader thread renders offscreen at `fps`
    (shadows and reflections off: software GL is far faster without them) from a copy of the simulation state."""

    def __init__(self, arm: SimulatedArm, camera: str = "front", width: int = 128, height: int = 96, fps: float = 30.0,
                 name: str | None = None):
        if camera not in arm.camera_names:
            raise ValueError(f"camera {camera!r} is not one of this arm's cameras {list(arm.camera_names)}; "
                             f"pass camera_names=(..., {camera!r}) to SimulatedArm")
        vis = arm.model.vis.global_
        if not (8 <= width <= vis.offwidth and 8 <= height <= vis.offheight):
            raise ValueError(f"camera size {width}x{height} must lie within 8x8 .. {vis.offwidth}x{vis.offheight}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.arm = arm
        self.camera = camera
        self.name = name or camera
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._last_read = -1
        self._error: BaseException | None = None
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self) -> None:
        """Start the reader thread and wait for its first frame (errors from the renderer surface here)."""
        if self._thread is not None:
            return
        self._running.set()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._error is not None, timeout=30.0)
        if self._error is not None or self._frame is None:
            self.disconnect()
            raise RuntimeError(f"simulated camera {self.name!r} could not render (is MUJOCO_GL=egl set?): {self._error}")

    def _run(self) -> None:
        import mujoco

        try:
            renderer = mujoco.Renderer(self.arm.model, height=self.height, width=self.width)
        except Exception as err:  # reported to connect()
            with self._cond:
                self._error = err
                self._cond.notify_all()
            return
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        data = mujoco.MjData(self.arm.model)
        period = 1.0 / self.fps
        deadline = time.monotonic()
        index = 0
        try:
            while self._running.is_set():
                self.arm.copy_state_to(data)
                stamp = time.monotonic()
                mujoco.mj_kinematics(self.arm.model, data)
                mujoco.mj_camlight(self.arm.model, data)
                renderer.update_scene(data, camera=self.camera)
                image = np.ascontiguousarray(renderer.render(), dtype=np.uint8)
                with self._cond:
                    self._frame = Frame(image=image, timestamp=stamp, index=index)
                    self._cond.notify_all()
                index += 1
                deadline = max(deadline + period, time.monotonic())
                time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            renderer.close()

    def read(self, timeout_s: float = 1.0) -> Frame:
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None and self._frame.index > self._last_read,
                                       timeout=timeout_s):
                raise TimeoutError(f"camera {self.name!r}: no new frame within {timeout_s} s (connected?)")
            frame = self._frame
            self._last_read = frame.index
            return frame

    def latest(self) -> Frame:
        with self._cond:
            if self._frame is None:
                raise RuntimeError(f"camera {self.name!r} has no frame yet; call connect() first")
            return self._frame

    def disconnect(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._cond:
            self._frame = None
            self._last_read = -1
