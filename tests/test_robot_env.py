"""RobotEnv on a hand-stepped simulated arm: homing, the three action modes, observations, safety and watchdog."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from robolearn.env import Env
from robolearn.hal.camera import Frame
from robolearn.hal.drivers.sim_arm import SimulatedArm, SimulatedCamera
from robolearn.hal.robot_env import RobotEnv, SafetyConfig, make_robot_spec
from robolearn.hal.safety import RobotHalted

LOW_DIM = ["robot0_eef_pos", "robot0_eef_quat", "robot0_eef_rotvec", "robot0_joint_pos", "robot0_joint_vel",
           "robot0_gripper", "robot0_gripper_qpos"]


class FakeCamera:
    """A camera whose frames carry the time they are read; `freeze()` makes it stop delivering new ones."""

    def __init__(self, name="cam", width=40, height=30):
        self.name, self.width, self.height, self.fps = name, width, height, 30.0
        self.image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        self.frozen: Frame | None = None
        self.index = 0
        self.connected = False

    def connect(self):
        self.connected = True

    def disconnect(self):
        self.connected = False

    def freeze(self):
        self.frozen = self.latest()

    def latest(self):
        if self.frozen is not None:
            return self.frozen
        self.index += 1
        return Frame(self.image, time.monotonic(), self.index)

    def read(self, timeout_s=1.0):
        return self.latest()


@pytest.fixture
def arm():
    arm = SimulatedArm(realtime=False, camera_names=("front",))
    yield arm
    arm.disconnect()


def make_env(arm, action_mode="ee_delta", cameras=None, obs_keys=None, image_size=(24, 32), safety=None, **kwargs):
    cameras = {"cam": FakeCamera()} if cameras is None else cameras
    keys = obs_keys or [*LOW_DIM, *(f"{c}_image" for c in cameras)]
    spec = make_robot_spec("test", arm.limits, keys, dict.fromkeys(cameras, image_size), action_mode, control_hz=10)
    return RobotEnv(arm, cameras, spec, action_mode=action_mode, home=arm.home,
                    safety=safety or SafetyConfig(watchdog_timeout_s=None), wait=arm.advance, **kwargs)


def test_reset_drives_home_slowly_through_the_safety_layer(arm):
    env = make_env(arm, safety=SafetyConfig(watchdog_timeout_s=None, home_speed=0.5))
    assert isinstance(env, Env)
    away = arm.home + np.array([0.4, -0.3, 0.2, 0.3, 0.0, -0.2, 0.5])
    arm.command_joint_positions(away)
    arm.command_gripper(1.0)
    arm.advance(2.0)
    sent = []
    original = arm.command_joint_positions
    arm.command_joint_positions = lambda q: (sent.append(np.array(q)), original(q))
    obs = env.reset()
    q = obs["robot0_joint_pos"]
    np.testing.assert_allclose(q, arm.home, atol=env.safety.home_tolerance + 1e-6)
    assert obs["robot0_gripper"][0] < 0.05  # opened
    steps = np.abs(np.diff(np.array(sent), axis=0)).max(axis=1)
    assert len(sent) >= 0.5 / (0.5 / 10) - 2  # the 0.5 rad error needs ~10 commands at 0.05 rad each
    assert steps.max() <= 0.5 / 10 + 1e-9  # never faster than home_speed
    assert env.robot.counters["clipped"] == 0
    env.spec.check_obs(obs)
    assert abs(obs.timestamp - time.monotonic()) < 5.0


def test_observations_follow_the_spec_and_the_measured_state(arm):
    env = make_env(arm)
    obs = env.reset()
    state = arm.read_state()
    np.testing.assert_allclose(obs["robot0_eef_pos"], state.ee_pose[:3], atol=1e-6)
    quat = Rotation.from_rotvec(state.ee_pose[3:]).as_quat()  # x, y, z, w
    assert abs(abs(np.dot(obs["robot0_eef_quat"], quat)) - 1) < 1e-6
    np.testing.assert_allclose(obs["robot0_gripper_qpos"], [0.04, -0.04], atol=1e-3)
    assert obs["cam_image"].shape == (24, 32, 3) and obs["cam_image"].dtype == np.uint8  # resized from 40x30
    assert all(obs[k].dtype == np.float32 for k in LOW_DIM)


def test_ee_delta_moves_the_hand_and_step_never_waits(arm):
    waits = []
    env = make_env(arm)
    env.reset()
    env.wait = waits.append
    start = arm.read_state().ee_pose
    sim_time = arm.sim_time
    for _ in range(5):
        obs, reward, done, info = env.step(np.array([0.01, -0.01, 0.0, 0.0, 0.0, 0.0, 0.0]))
        assert reward == 0.0 and done is False and info["arm_command"] == "sent" and not info["success"]
        arm.advance(0.1)  # the loop's clock: the env itself never waits
    assert waits == [] and arm.sim_time == pytest.approx(sim_time + 0.5)
    arm.advance(0.5)
    np.testing.assert_allclose(arm.read_state().ee_pose[:3] - start[:3], [0.05, -0.05, 0.0], atol=2e-3)
    assert info["safety"]["commands"] == 1 + 5 * 2 and info["safety"]["clipped"] == 0  # reset opened the gripper
    # a rotation delta turns the hand about the base z axis
    env.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.08, 0.0]))
    arm.advance(0.5)
    turn = Rotation.from_rotvec(arm.read_state().ee_pose[3:]) * Rotation.from_rotvec(start[3:]).inv()
    np.testing.assert_allclose(turn.as_rotvec(), [0.0, 0.0, 0.08], atol=5e-3)


def test_a_huge_delta_is_clipped_to_one_step(arm):
    env = make_env(arm)
    env.reset()
    before = arm.read_state().ee_pose
    _, _, _, info = env.step(np.array([5.0, 0.0, 0.0, 0.0, 0.0, 3.0, 7.0]))
    assert info["arm_command"] == "clipped" and info["gripper_command"] == "clipped"
    sent = env.robot.last_sent["ee_pose"]
    assert np.linalg.norm(sent[:3] - before[:3]) <= arm.limits.max_ee_step + 1e-9
    assert env.robot.last_sent["gripper"] == 1.0


def test_absolute_and_joint_modes(arm):
    env = make_env(arm, action_mode="ee_absolute")
    env.reset()
    pose = arm.read_state().ee_pose
    target = pose.copy()
    target[2] -= 0.01
    for _ in range(3):
        env.step(np.concatenate([target, [0.0]]))
        arm.advance(0.2)
    assert arm.read_state().ee_pose[2] == pytest.approx(target[2], abs=1e-3)
    env.close()

    env = make_env(arm, action_mode="joint")
    env.reset()
    q = arm.home + 0.03
    env.step(np.concatenate([q, [0.5]]))
    arm.advance(0.5)
    np.testing.assert_allclose(arm.read_state().joint_positions, q, atol=1e-3)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        env.step(np.zeros(7))


def test_nan_actions_are_rejected_and_the_arm_holds(arm):
    env = make_env(arm)
    env.reset()
    held = arm.read_state().joint_positions
    _, _, _, info = env.step(np.array([np.nan, 0, 0, 0, 0, 0, np.inf]))
    assert info["arm_command"] == "rejected" and info["gripper_command"] == "rejected"
    assert info["safety"]["rejected_non_finite"] == 2 and env.robot.violations[-1].kind == "non_finite"
    arm.advance(0.5)
    np.testing.assert_allclose(arm.read_state().joint_positions, held, atol=1e-4)
    # the next valid delta starts again from the measured pose
    _, _, _, info = env.step(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    assert info["arm_command"] == "sent"


_FUZZ: dict = {}


@settings(max_examples=40, deadline=None)
@given(actions=st.lists(arrays(np.float64, (7,), elements=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-0.05, 0.05))), min_size=1, max_size=10))
def test_any_action_of_the_right_shape_is_made_safe_never_raises(actions):
    if not _FUZZ:
        arm = SimulatedArm(realtime=False, camera_names=())
        _FUZZ["arm"], _FUZZ["env"] = arm, make_env(arm, cameras={})
        _FUZZ["env"].reset()
    arm, env = _FUZZ["arm"], _FUZZ["env"]
    low, high = np.array(arm.limits.workspace_low), np.array(arm.limits.workspace_high)
    for action in actions:
        before = arm.read_state().ee_pose
        _, _, _, info = env.step(action)
        if info["arm_command"] in ("sent", "clipped"):
            sent = env.robot.last_sent["ee_pose"]
            # inside the box, or (when the arm itself overshot it) no further outside than the arm already is
            outside = lambda p: max(0.0, *(low - p), *(p - high))  # noqa: E731
            assert outside(sent[:3]) <= outside(before[:3]) + 1e-9
            assert np.linalg.norm(sent[:3] - before[:3]) <= arm.limits.max_ee_step + 1e-9
        else:
            assert info["arm_command"] == "rejected"
        arm.advance(0.05)
        assert np.all(np.isfinite(arm.read_state().joint_positions))


def test_estop_halts_step_and_reset_until_cleared(arm):
    env = make_env(arm)
    env.reset()
    with pytest.raises(RuntimeError, match="reset"):
        make_env(arm).step(np.zeros(7))
    env.robot.estop("test")
    with pytest.raises(RobotHalted, match="e-stop"):
        env.step(np.zeros(7))
    with pytest.raises(RobotHalted, match="e-stop"):
        env.reset()
    env.robot.clear_estop()
    env.reset()
    env.step(np.zeros(7))


def test_watchdog_stops_the_arm_when_a_camera_goes_silent(arm):
    camera = FakeCamera()
    env = make_env(arm, cameras={"cam": camera}, safety=SafetyConfig(watchdog_timeout_s=0.3))
    stops = []
    original = arm.stop
    arm.stop = lambda: (stops.append(time.monotonic()), original())
    env.reset()
    for _ in range(3):
        env.step(np.zeros(7))
        time.sleep(0.05)
    assert not env.watchdog.tripped
    camera.freeze()
    env.step(np.zeros(7))
    deadline = time.monotonic() + 5.0
    while not env.watchdog.tripped and time.monotonic() < deadline:
        time.sleep(0.02)  # the loop could be hung: the watchdog's own thread must act
    assert env.watchdog.tripped and "no fresh observation" in env.watchdog.reason
    time.sleep(0.1)
    assert len(stops) == 1
    with pytest.raises(RobotHalted, match="watchdog"):
        env.step(np.zeros(7))
    camera.frozen = None
    env.reset()  # a new episode clears the watchdog
    env.step(np.zeros(7))
    env.close()


def test_simulated_camera_end_to_end(arm):
    camera = SimulatedCamera(arm, "front", width=64, height=48, fps=30)
    env = make_env(arm, cameras={"front": camera}, image_size=(24, 32))
    obs = env.reset(seed=2)
    assert obs["front_image"].shape == (24, 32, 3) and obs["front_image"].std() > 10
    assert env.render().shape == (48, 64, 3)  # videos get the camera's full frame
    env.close()
    assert not env._connected
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
    env.close()  # twice is fine


def test_bad_specs_and_homes_are_explained(arm):
    cameras = {"cam": FakeCamera()}
    spec = make_robot_spec("t", arm.limits, ["robot0_eef_pos"], {}, "joint", 10)
    with pytest.raises(ValueError, match="action_dim 8"):
        RobotEnv(arm, {}, spec, action_mode="ee_delta", home=arm.home, connect=False)
    spec = make_robot_spec("t", arm.limits, ["cam_image"], {"cam": (8, 8)}, "ee_delta", 10)
    with pytest.raises(ValueError, match="needs a camera named 'cam'"):
        RobotEnv(arm, {}, spec, home=arm.home, connect=False)
    with pytest.raises(ValueError, match="unknown observation key 'robot0_force'"):
        make_robot_spec("t", arm.limits, ["robot0_force"], {}, "ee_delta", 10)
    with pytest.raises(ValueError, match="outside the joint limits"):
        RobotEnv(arm, cameras, make_robot_spec("t", arm.limits, ["robot0_eef_pos"], {}, "ee_delta", 10),
                 home=np.full(7, 3.0), connect=False)
    with pytest.raises(ValueError, match="exceed one control period"):
        RobotEnv(arm, cameras, make_robot_spec("t", arm.limits, ["robot0_eef_pos"], {}, "ee_delta", 10),
                 home=arm.home, safety=SafetyConfig(watchdog_timeout_s=0.05), connect=False)


def test_homing_gives_up_with_a_clear_message_when_the_arm_is_stuck(arm):
    env = make_env(arm, safety=SafetyConfig(watchdog_timeout_s=None, home_timeout_s=1.0))
    arm.command_joint_positions(arm.home + 0.3)
    arm.advance(2.0)
    env.wait = lambda dt: None  # the arm never moves: nothing steps its physics
    with pytest.raises(RuntimeError, match="did not reach the home pose"):
        env.reset()


def test_realtime_arm_moves_while_the_caller_sleeps():
    arm = SimulatedArm(realtime=True, camera_names=())
    spec = make_robot_spec("rt", arm.limits, LOW_DIM, {}, "ee_delta", 10)
    env = RobotEnv(arm, {}, spec, home=arm.home)
    try:
        obs = env.reset()
        start_z, stamps = obs["robot0_eef_pos"][2], [obs.timestamp]
        for _ in range(3):
            obs, *_ = env.step(np.array([0.0, 0.0, -0.01, 0.0, 0.0, 0.0, 0.0]))
            stamps.append(obs.timestamp)
            time.sleep(0.1)
        assert np.all(np.diff(stamps) > 0)
        deadline = time.monotonic() + 5.0
        while abs(arm.read_state().ee_pose[2] - (start_z - 0.03)) > 2e-3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert arm.read_state().ee_pose[2] == pytest.approx(start_z - 0.03, abs=2e-3)
    finally:
        env.close()
