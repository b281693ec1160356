"""The robosuite adapter against the real robosuite simulator (Panda, OSC_POSE)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.env import Env, Observation
from robolearn.sim.robosuite_env import REFERENCE_ROTATION, TASKS, RobosuiteEnv

OBJECT_DIMS = {"lift": 10, "stack": 23, "can": 14, "square": 14}
MAX_STEPS = {"lift": 200, "stack": 400, "can": 400, "square": 400}


@pytest.fixture(scope="module")
def envs():
    """One low-dim delta env per task, shared by the module's tests (building one takes ~0.3 s, the first ~4 s)."""
    made = {}

    def get(task: str) -> RobosuiteEnv:
        if task not in made:
            made[task] = RobosuiteEnv(task)
        return made[task]

    yield get
    for env in made.values():
        env.close()


@pytest.fixture(scope="module")
def image_env():
    env = RobosuiteEnv("lift", obs_type="image", image_size=64, render_size=128)
    yield env
    env.close()


def _project(env: RobosuiteEnv, camera: str, point: np.ndarray, size: int) -> tuple[float, float]:
    """Pixel (row, col) of a world point in an upright image from a MuJoCo camera (looking along its -z, y up)."""
    cam = env._model.camera(camera).id
    pos, rot = env._data.cam_xpos[cam], env._data.cam_xmat[cam].reshape(3, 3)
    x, y, z = rot.T @ (point - pos)
    f = 0.5 * size / np.tan(np.radians(env._model.cam_fovy[cam]) / 2)
    return size / 2 - f * y / -z, size / 2 + f * x / -z


def _red_centroid(image: np.ndarray) -> tuple[float, float]:
    img = image.astype(int)
    mask = img[..., 0] - np.maximum(img[..., 1], img[..., 2]) > 60
    assert mask.sum() >= 3, "the red cube is not visible"
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_spec_declares_robomimic_keys_and_limits(envs, task):
    spec = envs(task).spec
    assert spec.name == task and spec.action_dim == 7 and spec.control_hz == 20.0
    assert spec.max_episode_steps == MAX_STEPS[task]
    assert {k: (v.shape, v.dtype) for k, v in spec.obs.items()} == {
        "robot0_eef_pos": ((3,), "float32"), "robot0_eef_quat": ((4,), "float32"),
        "robot0_gripper_qpos": ((2,), "float32"), "object": ((OBJECT_DIMS[task],), "float32")}
    assert spec.action_low == (-1.0,) * 7 and spec.action_high == (1.0,) * 7
    assert "delta" in spec.action_meaning and "world frame" in spec.action_meaning
    assert sum(n for _, n in spec.extra["object_layout"]) == OBJECT_DIMS[task]


def test_absolute_spec_and_image_keys(image_env):
    env = RobosuiteEnv("can", action_mode="absolute")
    try:
        spec = env.spec
        assert "absolute" in spec.action_meaning and "world frame" in spec.action_meaning
        assert spec.action_low[6] == -1.0 and spec.action_high[6] == 1.0 and spec.action_high[3] == pytest.approx(np.pi)
        assert all(lo < hi for lo, hi in zip(spec.action_low, spec.action_high))
        np.testing.assert_allclose(spec.extra["reference_rotation"], REFERENCE_ROTATION)
    finally:
        env.close()
    spec = image_env.spec
    assert spec.name == "lift_image"
    for cam in ("agentview", "robot0_eye_in_hand"):
        assert spec.obs[f"{cam}_image"].shape == (64, 64, 3) and spec.obs[f"{cam}_image"].is_image


@pytest.mark.parametrize("task", sorted(TASKS))
def test_reset_and_step_match_spec(envs, task):
    env = envs(task)
    assert isinstance(env, Env)
    obs = env.reset(seed=0)
    assert isinstance(obs, Observation) and obs.timestamp == 0.0 and set(obs) == set(env.spec.obs)
    env.spec.check_obs(obs)
    obs, reward, done, info = env.step(np.zeros(7))
    env.spec.check_obs(obs)
    assert obs.timestamp == pytest.approx(0.05)
    assert isinstance(reward, float) and done is False
    assert info["success"] is False and info["truncated"] is False and info["steps"] == 1
    assert env._renderers == {}, "low-dim mode must not render"
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (256, 256, 3) and frame.std() > 10


def test_object_vector_in_robomimic_order(envs):
    env = envs("can")
    obs = env.reset(seed=5)
    can, can_rot = env.body_pose("Can_main")
    eef, _ = env.eef_pose()
    obj = obs["object"]
    np.testing.assert_allclose(obj[:3], can, atol=1e-5)  # Can_pos first, as in robomimic's datasets
    np.testing.assert_allclose(np.abs(obj[3:7]), np.abs(Rotation.from_matrix(can_rot).as_quat()), atol=1e-5)  # xyzw
    # the can-in-gripper offset is filled in from the first observation on (robosuite leaves it zero at reset)
    assert np.linalg.norm(obj[7:10]) == pytest.approx(np.linalg.norm(can - eef), abs=1e-4)
    lift = envs("lift").reset(seed=5)
    cube, _ = envs("lift").body_pose("cube_main")
    np.testing.assert_allclose(lift["object"][:3], cube, atol=1e-5)  # cube_pos, cube_quat, gripper_to_cube_pos
    np.testing.assert_allclose(lift["object"][7:10], cube - lift["robot0_eef_pos"], atol=1e-4)


def test_seeded_reset_is_deterministic_whatever_ran_before(envs):
    env = envs("stack")
    first = env.reset(seed=3)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(10, 7))
    run1 = [env.step(a)[0] for a in actions]
    other = env.reset(seed=4)
    assert not np.array_equal(first["object"], other["object"])
    again = env.reset(seed=3)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    run2 = [env.step(a)[0] for a in actions]
    for a, b in zip(run1, run2):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    fresh = RobosuiteEnv("stack")  # a second instance (as in another process) starts the same way
    try:
        for key, value in fresh.reset(seed=3).items():
            np.testing.assert_array_equal(value, first[key])
    finally:
        fresh.close()


def test_image_observations_are_upright(image_env):
    first = image_env.reset(seed=1)
    image_env.spec.check_obs(first)
    # put the red cube near the camera's lower right, where an upside-down or mirrored frame would miss it
    sim, cube = image_env.robosuite_env.sim, image_env.robosuite_env.cube
    z = image_env.body_pose("cube_main")[0][2]
    sim.data.set_joint_qpos(cube.joints[0], np.array([0.15, 0.1, z, 1.0, 0.0, 0.0, 0.0]))
    sim.forward()
    obs = image_env.step(np.zeros(7))[0]
    image_env.spec.check_obs(obs)
    where, _ = image_env.body_pose("cube_main")
    for image in (obs["agentview_image"], image_env.render()):
        size = image.shape[0]
        row, col = _project(image_env, "agentview", where, size)
        assert row > 0.6 * size and col > 0.6 * size
        got_row, got_col = _red_centroid(image)
        assert abs(got_row - row) < 0.05 * size and abs(got_col - col) < 0.05 * size
    assert image_env.render().shape == (128, 128, 3)
    assert not np.array_equal(obs["robot0_eye_in_hand_image"], first["robot0_eye_in_hand_image"])


def test_delta_actions_move_the_hand_in_the_world_frame(envs):
    env = envs("lift")
    start = env.reset(seed=0)["robot0_eef_pos"].copy()
    for _ in range(6):
        obs, *_ = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
    moved = obs["robot0_eef_pos"] - start
    assert moved[0] > 0.03 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01


def test_absolute_targets_are_reached():
    env = RobosuiteEnv("lift", action_mode="absolute")
    try:
        env.reset(seed=0)
        pos, _ = env.eef_pose()
        target = pos + np.array([0.08, -0.06, -0.05])
        rotvec = np.array([0.0, 0.1, 0.4])  # relative to the top-down reference grasp
        for _ in range(40):
            env.step(np.concatenate([target, rotvec, [-1.0]]))
        pos, rot = env.eef_pose()
        assert np.linalg.norm(pos - target) < 0.005
        want = Rotation.from_rotvec(rotvec).as_matrix() @ REFERENCE_ROTATION
        assert np.linalg.norm(Rotation.from_matrix(want @ rot.T).as_rotvec()) < 0.03
        # targets outside the workspace box are clipped to it, not passed to the controller
        wild = env.to_robosuite_action(np.array([5.0, -5.0, 0.0, 0, 0, 0, 3.0]))
        np.testing.assert_allclose(wild[[0, 1, 2, 6]], [env.spec.action_high[0], env.spec.action_low[1],
                                                          env.spec.action_low[2], 1.0])
    finally:
        env.close()


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="pick"), "unknown robosuite task 'pick'"),
    (dict(obs_type="pixels"), "unknown obs_type 'pixels'"),
    (dict(action_mode="velocity"), "unknown action_mode 'velocity'"),
    (dict(control_hz=7), "control_hz must divide"),
    (dict(max_episode_steps=0), "max_episode_steps must be >= 1"),
    (dict(obs_type="image", cameras=("frontview", "wristcam")), r"unknown camera\(s\) \['wristcam'\]"),
])
def test_bad_construction_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RobosuiteEnv(**kwargs)


@pytest.mark.parametrize("action, message", [
    (np.zeros(6), r"shape \(7,\)"),
    (np.zeros((1, 7)), r"shape \(7,\)"),
    (np.array([np.nan, 0, 0, 0, 0, 0, 0]), "finite"),
    (np.array([0, 0, 0, 0, 0, np.inf, 0]), "finite"),
])
def test_bad_actions_raise(envs, action, message):
    env = envs("lift")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_episode_limits():
    env = RobosuiteEnv("lift", max_episode_steps=3)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(7))
        assert env.spec.max_episode_steps == 3
        env.reset(seed=0)
        results = [env.step(np.zeros(7)) for _ in range(3)]
        assert [r[2] for r in results] == [False, False, True]
        assert results[-1][3]["truncated"] is True and results[-1][0].timestamp == pytest.approx(0.15)
        with pytest.raises(RuntimeError, match="episode is over"):
            env.step(np.zeros(7))
    finally:
        env.close()


def test_task_configs_build_their_env():
    from robolearn.cli import compose
    from robolearn.task import TaskConfig

    for name in sorted(TASKS):
        task = TaskConfig(**compose("train", [f"task={name}"])["task"])
        assert task.env_kwargs["task"] == name and task.dataset == f"{name}_scripted.episodes.zarr"
        assert task.dataset_format == "robolearn" and task.expert == "scripted"
        assert set(task.obs_keys) == {"robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"}
    spec = task.spec()
    assert set(task.obs_keys) <= set(spec.obs) and spec.name == task.name
