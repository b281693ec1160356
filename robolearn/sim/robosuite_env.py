"""robosuite arm tasks (Lift, Stack, PickPlaceCan, NutAssemblySquare; Panda, OSC_POSE) behind robolearn's `Env` contract.

Observation keys follow robomimic's names, so robomimic datasets map onto them 1:1: `robot0_eef_pos` (3),
`robot0_eef_quat` (4, xyzw, the hand body as robomimic recorded it), `robot0_gripper_qpos` (2) and `object`
(the task's object observables in robomimic's order: object poses, then object-to-gripper offsets; the parts are
listed in `spec.extra["object_layout"]`), all float32. Image mode adds `<camera>_image`, uint8
(image_size, image_size, 3), upright.

Actions are 7-D: [position (3), orientation (3), gripper (1)], the gripper -1 open .. +1 closed. Both modes use
the world frame (the robot base is not rotated in these scenes, so base and world axes agree):
- `delta`: in [-1, 1], scaled by the controller to at most 5 cm and 0.5 rad per step from the current pose;
- `absolute`: the target grip-site position in metres and the target orientation as the axis-angle (rad) of the
  rotation that takes the top-down reference grasp (`REFERENCE_ROTATION`) to it. Relative to the reference, the
  usual grasps lie near zero; a raw world axis-angle of a downward gripper sits near |angle| = pi, where its sign
  flips and a policy learning it would see jumps.
Out-of-range actions are clipped to the spec's [action_low, action_high]; wrong shapes and non-finite values raise.

Rendering is our own: mujoco's Renderer on the robosuite model, built only for image observations or on the
first `render()`, shadows and reflections off, collision geoms hidden, one render per camera per control step,
no multisampling for policy frames. robosuite's own offscreen renderer stays off.

Determinism: the robosuite env is always built with seed 0 (object sizes are drawn when the model is built, so
every process gets the same model), and `reset(seed)` reseeds robosuite's generator in place and resets the sim
state (no model reload), so the same seed gives the same initial state whatever ran before.

Measured here (2-core CPU shared with other jobs, OMP_NUM_THREADS=1, MUJOCO_GL=egl on Mesa llvmpipe, zero
actions; best of 3 runs): low_dim 150 control steps/s on Lift, 130 on Square (bare robosuite: ~160; the 25 OSC
physics substeps per step dominate); image mode with two 84x84 cameras 30 steps/s on Lift, 39 on Square (~12 ms
per frame, mostly the 180k-triangle robot meshes); with shadows and reflections on, image mode ran at half that
(16 and 18 steps/s), and 4x multisampling adds a third per frame. `render()` at 256x256 (multisampled): 30-70 ms.
"""
from __future__ import annotations

import atexit
import logging
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.env import ArraySpec, EnvSpec, Observation

OBS_TYPES = ("low_dim", "image")
ACTION_MODES = ("delta", "absolute")
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")
LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")

# Grip-site orientation of a gripper pointing straight down with fingers closing along world y (columns: the
# site's x, y, z axes in world coordinates). The Panda starts within ~10 degrees of it.
REFERENCE_ROTATION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])

# Absolute targets are clipped to this world-frame box (metres): the table tops and bins with margin.
WORKSPACE_LOW = (-0.45, -0.55, 0.78)
WORKSPACE_HIGH = (0.45, 0.55, 1.40)


@dataclass(frozen=True)
class TaskInfo:
    robosuite_name: str
    max_episode_steps: int
    description: str
    # robosuite observables concatenated into `object`, in robomimic's order (robosuite 1.5 puts the
    # object-to-gripper parts of Can and SquareNut first; robomimic's datasets have them last)
    object_parts: tuple[str, ...]


TASKS: dict[str, TaskInfo] = {
    "lift": TaskInfo("Lift", 200, "lift the red cube off the table", ("cube_pos", "cube_quat", "gripper_to_cube_pos")),
    "stack": TaskInfo("Stack", 400, "put the red cube on the green cube and let go",
                      ("cubeA_pos", "cubeA_quat", "cubeB_pos", "cubeB_quat", "cubeA_to_cubeB", "gripper_to_cubeA",
                       "gripper_to_cubeB")),
    "can": TaskInfo("PickPlaceCan", 400, "move the can from the left bin into its quadrant of the right bin",
                    ("Can_pos", "Can_quat", "Can_to_robot0_eef_pos", "Can_to_robot0_eef_quat")),
    "square": TaskInfo("NutAssemblySquare", 400, "fit the square nut over the square peg",
                       ("SquareNut_pos", "SquareNut_quat", "SquareNut_to_robot0_eef_pos", "SquareNut_to_robot0_eef_quat")),
}

# Advice robosuite logs on import and for every env (optional packages, macro files, config paths, controllers
# for body parts a Panda lacks); its other warnings pass.
_NOISY = ("private macro file", "macros.py", "Loading controller configuration", "robosuite_models", "mink-based",
          "but the robot does not have this component")


def _quiet_robosuite() -> None:
    """robosuite logs setup advice and a config path on every import and env; keep its real warnings."""
    logger = logging.getLogger("robosuite_logs")
    if not any(getattr(f, "_robolearn", False) for f in logger.filters):
        def drop(record: logging.LogRecord) -> bool:
            return not any(s in record.getMessage() for s in _NOISY)
        drop._robolearn = True  # type: ignore[attr-defined]
        logger.addFilter(drop)


_LIVE: weakref.WeakSet[RobosuiteEnv] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _free_renderers() -> None:
    """GL contexts left to the garbage collector at interpreter exit raise EGL errors; free them first."""
    for env in list(_LIVE):
        env._close_renderers()


def _controller_config(action_mode: str) -> dict[str, Any]:
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = config["body_parts"]["right"]
    if arm["type"] != "OSC_POSE":
        raise RuntimeError(f"robosuite's Panda default arm controller is {arm['type']}, expected OSC_POSE")
    # robosuite 1.5 reads input_type; the older control_delta=False key is silently ignored.
    arm["input_type"] = action_mode
    arm["input_ref_frame"] = "world"
    config["body_parts"] = {"right": arm}  # the Panda has one arm; the other parts are for humanoids and bases
    return config


class RobosuiteEnv:
    """A robosuite manipulation task with spec-typed observations, step counting, success and seeded resets."""

    def __init__(self, task: str = "lift", obs_type: str = "low_dim", action_mode: str = "delta",
                 cameras: tuple[str, ...] | list[str] = DEFAULT_CAMERAS, image_size: int = 84, render_size: int = 256,
                 control_hz: int = 20, max_episode_steps: int | None = None, terminate_on_success: bool = True):
        if task not in TASKS:
            raise ValueError(f"unknown robosuite task {task!r}; expected one of {sorted(TASKS)}")
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown obs_type {obs_type!r}; expected one of {OBS_TYPES}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")
        if image_size < 8 or render_size < 8:
            raise ValueError(f"image_size and render_size must be >= 8 pixels, got {image_size} and {render_size}")
        if not 1 <= control_hz <= 500 or 500 % control_hz:
            raise ValueError(f"control_hz must divide the 500 Hz physics rate (e.g. 10, 20, 50), got {control_hz}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        _quiet_robosuite()
        import mujoco
        import robosuite

        self.task = task
        self.obs_type = obs_type
        self.action_mode = action_mode
        self.cameras = tuple(cameras) if obs_type == "image" else ()
        self.image_size = int(image_size)
        self.render_size = int(render_size)
        self.terminate_on_success = bool(terminate_on_success)
        info = TASKS[task]
        self._env = robosuite.make(
            info.robosuite_name, robots="Panda", controller_configs=_controller_config(action_mode),
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, use_object_obs=True,
            control_freq=control_hz, horizon=10**9, ignore_done=True, hard_reset=False, reward_shaping=False, seed=0,
        )
        self._model = self._env.sim.model._model
        self._data = self._env.sim.data._data
        names = [self._model.camera(i).name for i in range(self._model.ncam)]
        unknown = [c for c in (cameras if obs_type == "image" else ()) if c not in names]
        if unknown:
            self._env.close()
            raise ValueError(f"unknown camera(s) {unknown} for task {task!r}; this scene has {names}")
        if obs_type == "image" and not self.cameras:
            self._env.close()
            raise ValueError("obs_type='image' needs at least one camera, e.g. cameras=('agentview',)")
        # Offscreen buffers must hold the largest frame we draw.
        biggest = max(self.image_size, self.render_size)
        self._model.vis.global_.offwidth = max(self._model.vis.global_.offwidth, biggest)
        self._model.vis.global_.offheight = max(self._model.vis.global_.offheight, biggest)
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[0] = 0  # robosuite's collision geoms; group 1 holds the visual meshes
        self._renderers: dict[tuple[int, bool], Any] = {}  # (size, for video) -> mujoco.Renderer
        _LIVE.add(self)
        self.render_camera = "agentview" if "agentview" in names else names[0]

        raw = self._env.reset()
        missing = [p for p in info.object_parts if p not in raw]
        if missing:
            self._env.close()
            raise RuntimeError(f"robosuite {info.robosuite_name} has no observables {missing}; "
                               f"robolearn expects robosuite 1.5.2")
        self._object_layout = [(name, int(np.size(raw[name]))) for name in info.object_parts]
        self.spec = self._make_spec(sum(n for _, n in self._object_layout), control_hz,
                                    max_episode_steps or info.max_episode_steps)
        self._steps = 0
        self._done = True
        self._needs_reset = True
        self.seed: int | None = None

    # ------------------------------------------------------------------ spec
    def _make_spec(self, object_dim: int, control_hz: int, max_steps: int) -> EnvSpec:
        obs = {"robot0_eef_pos": ArraySpec((3,), "float32"), "robot0_eef_quat": ArraySpec((4,), "float32"),
               "robot0_gripper_qpos": ArraySpec((2,), "float32"), "object": ArraySpec((object_dim,), "float32")}
        for cam in self.cameras:
            obs[f"{cam}_image"] = ArraySpec((self.image_size, self.image_size, 3), "uint8")
        if self.action_mode == "delta":
            meaning = ("delta end-effector pose in the world frame: [dx, dy, dz] (x 5 cm) and axis-angle [rx, ry, rz] "
                       "(x 0.5 rad) from the current pose, in [-1, 1]; gripper -1 open .. +1 closed")
            low, high = (-1.0,) * 7, (1.0,) * 7
        else:
            meaning = ("absolute end-effector pose in the world frame: grip-site position [x, y, z] (m), orientation "
                       "as axis-angle [rx, ry, rz] (rad) of the rotation from the top-down reference grasp "
                       "(extra['reference_rotation']); gripper -1 open .. +1 closed")
            low = (*WORKSPACE_LOW, -np.pi, -np.pi, -np.pi, -1.0)
            high = (*WORKSPACE_HIGH, np.pi, np.pi, np.pi, 1.0)
        name = self.task if self.obs_type == "low_dim" else f"{self.task}_image"
        return EnvSpec(
            name=name, obs=obs, action_dim=7, control_hz=float(control_hz), action_meaning=meaning,
            action_low=tuple(float(v) for v in low), action_high=tuple(float(v) for v in high),
            max_episode_steps=int(max_steps),
            extra={"robosuite_env": TASKS[self.task].robosuite_name, "description": TASKS[self.task].description,
                   "action_mode": self.action_mode,
                   "object_layout": [list(p) for p in self._object_layout],
                   "reference_rotation": REFERENCE_ROTATION.tolist(), "cameras": list(self.cameras),
                   "terminate_on_success": self.terminate_on_success},
        )

    # ------------------------------------------------------------------ privileged state (for scripted experts)
    @property
    def robosuite_env(self) -> Any:
        """The wrapped robosuite environment; experts read object poses from its sim."""
        return self._env

    def body_pose(self, body: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and 3x3 rotation of a MuJoCo body, by name."""
        i = self._model.body(body).id
        return self._data.xpos[i].copy(), self._data.xmat[i].reshape(3, 3).copy()

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and rotation of the grip site: the frame the controller and absolute actions use."""
        i = self._env.robots[0].eef_site_id["right"]
        return self._data.site_xpos[i].copy(), self._data.site_xmat[i].reshape(3, 3).copy()

    def is_success(self) -> bool:
        """robosuite's own success test for the task, on the current state."""
        return bool(self._env._check_success())

    # ------------------------------------------------------------------ episode
    def _observation(self, raw: dict[str, Any]) -> Observation:
        values = {key: np.asarray(raw[key], dtype=np.float32) for key in LOW_DIM_KEYS}
        values["object"] = np.concatenate([np.ravel(raw[name]) for name, _ in self._object_layout]).astype(np.float32)
        for cam in self.cameras:
            values[f"{cam}_image"] = self._draw(cam, self.image_size)
        return Observation(values, timestamp=self._steps / self.spec.control_hz)

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode; the same seed gives the same object placement and arm pose."""
        # robosuite's placement samplers and robot share env.rng by reference: reseed that generator in place.
        fresh = np.random.default_rng(seed)
        self._env.rng.bit_generator.state = fresh.bit_generator.state
        self._env.reset()
        # robosuite computes object-to-gripper observables from the previous update's cache, which reset has
        # just emptied (they come back as zeros): update once more so the first observation is complete.
        raw = self._env._get_observations(force_update=True)
        self.seed = seed
        self._steps = 0
        self._done = False
        self._needs_reset = False
        return self._observation(raw)

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ValueError(f"{self.task} action must have shape (7,) ([pos 3, axis-angle 3, gripper 1], "
                             f"{self.action_mode}), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.task} action must be finite, got {a.tolist()}")
        return np.clip(a, self.spec.action_low, self.spec.action_high)

    def to_robosuite_action(self, action: np.ndarray) -> np.ndarray:
        """Our action -> robosuite's: absolute orientations become world axis-angles of the target rotation."""
        a = self._check_action(action)
        if self.action_mode == "absolute":
            from scipy.spatial.transform import Rotation

            target = Rotation.from_rotvec(a[3:6]).as_matrix() @ REFERENCE_ROTATION
            a = np.concatenate([a[:3], Rotation.from_matrix(target).as_rotvec(), a[6:]])
        return a

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]:
        """Advance one control period (1 / control_hz s of physics) toward the commanded pose."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("episode is over (done was returned); call reset() to start a new one")
        raw, reward, _, _ = self._env.step(self.to_robosuite_action(action))
        self._steps += 1
        success = self.is_success()
        terminated = success and self.terminate_on_success
        at_limit = self._steps >= self.spec.max_episode_steps
        self._done = terminated or at_limit
        info = {"success": success, "terminated": terminated, "truncated": at_limit and not terminated,
                "steps": self._steps}
        return self._observation(raw), float(reward), self._done, info

    # ------------------------------------------------------------------ rendering
    def _draw(self, camera: str, size: int, video: bool = False) -> np.ndarray:
        renderer = self._renderers.get((size, video))
        if renderer is None:
            import mujoco

            # Policy frames skip multisampling (4x MSAA costs a third of a frame in software GL); the few video
            # frames keep the scene's antialiasing. The sample count is read when the GL context is made.
            samples = self._model.vis.quality.offsamples
            self._model.vis.quality.offsamples = samples if video else 0
            try:
                renderer = mujoco.Renderer(self._model, height=size, width=size)
            finally:
                self._model.vis.quality.offsamples = samples
            if not _EXIT_HOOK:  # registered after mujoco's own GL exit hook, so it runs before that one
                atexit.register(_free_renderers)
                _EXIT_HOOK.append(True)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._renderers[(size, video)] = renderer
        renderer.update_scene(self._data, camera=camera, scene_option=self._scene_option)
        return np.ascontiguousarray(renderer.render(), dtype=np.uint8)  # mujoco.Renderer returns rows top-down

    def render(self) -> np.ndarray:
        """An upright RGB uint8 (render_size, render_size, 3) frame from `render_camera` (agentview) for videos."""
        if self._needs_reset:
            raise RuntimeError("call reset() before render()")
        return self._draw(self.render_camera, self.render_size, video=True)

    def _close_renderers(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def close(self) -> None:
        self._close_renderers()
        self._env.close()
        self._needs_reset = True
