"""SimulatedArm / SimulatedCamera: the protocols, servo tracking within the model's limits, IK, grasping, rendering."""
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.hal.camera import Camera
from robolearn.hal.drivers import sim_arm as sim_arm_module
from robolearn.hal.drivers.sim_arm import MODELS, SimulatedArm, SimulatedCamera
from robolearn.hal.robot import Robot
from robolearn.registry import CAMERAS, ROBOTS


@pytest.fixture
def arm():
    arm = SimulatedArm(realtime=False, camera_names=("front", "wrist"))
    arm.connect()
    yield arm
    arm.disconnect()


def test_the_scene_is_an_mjcf_file_beside_the_driver_and_old_paths_still_name_it(arm):
    xml = Path(sim_arm_module.__file__).with_name(MODELS["panda"].xml_file)
    assert xml.name == "sim_arm.xml" and xml.read_text().lstrip().startswith("<!--")
    assert arm.model.nbody > 10 and arm.model.camera("front").id >= 0 and arm.model.body("cube").id >= 0
    # rig files and checkpoints written when the driver lived in robolearn/hal/sim_arm.py keep loading
    assert ROBOTS.get("robolearn.hal.sim_arm:SimulatedArm") is SimulatedArm is ROBOTS.get("sim_arm")
    assert CAMERAS.get("robolearn.hal.sim_arm:SimulatedCamera") is SimulatedCamera is CAMERAS.get("sim_camera")


def test_limits_come_from_the_model_and_franka_datasheet(arm):
    assert isinstance(arm, Robot)
    lim = arm.limits
    assert lim.n_joints == 7
    assert lim.joint_lower[3] == pytest.approx(-3.0718) and lim.joint_upper[5] == pytest.approx(3.7525)
    assert lim.joint_max_velocity == (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
    state = arm.read_state()
    np.testing.assert_allclose(state.joint_positions, arm.home)
    # Franka's ready pose: gripper pointing straight down about 0.49 m above the table, in front of the base
    np.testing.assert_allclose(state.ee_pose[:3], [0.307, 0.0, 0.487], atol=2e-3)
    down = Rotation.from_rotvec(state.ee_pose[3:]).as_matrix()[:, 2]
    np.testing.assert_allclose(down, [0, 0, -1], atol=1e-6)
    assert state.gripper == pytest.approx(0.0)
    assert abs(state.timestamp - time.monotonic()) < 1.0


def test_joint_targets_are_tracked_at_no_more_than_the_speed_limit(arm):
    target = arm.home + np.array([0.05, -0.05, 0.05, 0.05, -0.05, 0.05, 0.05])
    arm.command_joint_positions(target)
    arm.advance(0.5)
    np.testing.assert_allclose(arm.read_state().joint_positions, target, atol=1e-3)
    # a 1 rad jump on joint 1: the servo setpoint moves at 2.175 rad/s, so 0.1 s covers at most ~0.22 rad
    far = target.copy()
    far[0] += 1.0
    arm.command_joint_positions(far)
    arm.advance(0.1)
    moved = arm.read_state().joint_positions[0] - target[0]
    assert 0.1 < moved <= 2.175 * 0.1 + 1e-3
    arm.advance(1.0)
    assert arm.read_state().joint_positions[0] == pytest.approx(far[0], abs=1e-3)


def test_targets_outside_the_joint_range_stop_at_the_range(arm):
    target = arm.home.copy()
    target[3] = 5.0  # joint 4 range is [-3.0718, -0.0698]
    arm.command_joint_positions(target)
    arm.advance(2.0)
    assert arm.read_state().joint_positions[3] <= -0.0698 + 2e-3


def test_ik_reaches_poses_of_random_configurations(arm):
    rng = np.random.default_rng(0)
    for _ in range(10):
        q_goal = arm.home + rng.uniform(-0.4, 0.4, 7)
        pos, rot = arm._forward(q_goal)
        pose = np.concatenate([pos, Rotation.from_matrix(rot).as_rotvec()])
        q, converged = arm.solve_ik(pose, arm.home)
        assert converged
        got_pos, got_rot = arm._forward(q)
        np.testing.assert_allclose(got_pos, pos, atol=2e-4)
        assert Rotation.from_matrix(got_rot @ rot.T).magnitude() < 2e-3
        assert np.all(q >= np.array(arm.limits.joint_lower)) and np.all(q <= np.array(arm.limits.joint_upper))


def test_end_effector_commands_move_the_hand_there(arm):
    start = arm.read_state().ee_pose
    goal = start + np.array([0.1, -0.1, -0.15, 0.0, 0.0, 0.0])
    arm.command_ee_pose(goal)
    arm.advance(1.5)
    state = arm.read_state()
    np.testing.assert_allclose(state.ee_pose[:3], goal[:3], atol=2e-3)
    turn = Rotation.from_rotvec(state.ee_pose[3:]) * Rotation.from_rotvec(goal[3:]).inv()
    assert turn.magnitude() < 0.01


def test_pick_up_the_cube(arm):
    """Gripper, IK and contacts together: a scripted grasp lifts the cube off the table."""
    cube, _ = arm.cube_pose()
    down = arm.read_state().ee_pose[3:]
    hand = arm.read_state().ee_pose[:3]

    def go(pos, seconds=0.8, steps=20):
        nonlocal hand
        for p in np.linspace(hand, pos, steps):
            arm.command_ee_pose(np.concatenate([p, down]))
            arm.advance(seconds / steps)
        hand = np.asarray(pos, float)
        arm.advance(0.2)

    go([cube[0], cube[1], 0.12])
    go([cube[0], cube[1], 0.03])
    arm.command_gripper(1.0)
    arm.advance(0.6)
    assert 0.2 < arm.read_state().gripper < 0.9  # the fingers stop on the 5 cm cube
    assert not arm.task_success()
    go([cube[0], cube[1], 0.2])
    lifted, _ = arm.cube_pose()
    assert lifted[2] > 0.15 and arm.task_success()  # the scene's task: the cube lifted
    arm.command_gripper(0.0)
    arm.advance(1.0)
    assert arm.cube_pose()[0][2] < 0.05 and arm.read_state().gripper < 0.05 and not arm.task_success()


def test_stop_holds_the_measured_position(arm):
    far = arm.home.copy()
    far[0] += 1.0
    arm.command_joint_positions(far)
    arm.advance(0.1)
    arm.stop()
    held = arm.read_state().joint_positions
    arm.advance(0.5)
    np.testing.assert_allclose(arm.read_state().joint_positions, held, atol=0.02)


def test_reset_scene_places_the_cube_from_the_seed(arm):
    arm.reset_scene(seed=3)
    first = arm.cube_pose()[0]
    arm.reset_scene(seed=4)
    assert not np.allclose(first, arm.cube_pose()[0])
    arm.reset_scene(seed=3)
    np.testing.assert_allclose(arm.cube_pose()[0], first)
    assert 0.4 < first[0] < 0.62 and abs(first[1]) < 0.16


def test_bad_commands_and_use_raise_clear_errors():
    arm = SimulatedArm(realtime=False, camera_names=())
    with pytest.raises(RuntimeError, match="connect"):
        arm.read_state()
    arm.connect()
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        arm.command_joint_positions(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        arm.command_ee_pose(np.full(6, np.nan))
    with pytest.raises(ValueError, match="unknown simulated arm"):
        SimulatedArm(model="ur5e")
    with pytest.raises(ValueError, match="unknown camera"):
        SimulatedArm(camera_names=("top",))
    with pytest.raises(ValueError, match="not one of this arm's cameras"):
        SimulatedCamera(arm, "front")


def test_realtime_arm_steps_itself():
    arm = SimulatedArm(realtime=True, camera_names=())
    arm.connect()
    try:
        with pytest.raises(RuntimeError, match="realtime=False"):
            arm.step()
        target = arm.home.copy()
        target[0] += 0.1
        arm.command_joint_positions(target)
        deadline = time.monotonic() + 5.0
        while abs(arm.read_state().joint_positions[0] - target[0]) > 1e-3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert arm.read_state().joint_positions[0] == pytest.approx(target[0], abs=1e-3)
        assert arm.sim_time > 0.05
    finally:
        arm.disconnect()


def test_camera_renders_the_scene_and_sees_the_arm_move(arm):
    camera = SimulatedCamera(arm, "front", width=80, height=60, fps=50)
    assert isinstance(camera, Camera)
    with pytest.raises(RuntimeError, match="connect"):
        camera.latest()
    camera.connect()
    try:
        first = camera.read()
        assert first.image.shape == (60, 80, 3) and first.image.dtype == np.uint8
        assert first.image.std() > 10  # a scene, not a blank buffer
        second = camera.read()
        assert second.index > first.index and second.timestamp >= first.timestamp
        assert camera.latest().index >= second.index
        swung = arm.home.copy()
        swung[0] += 1.2
        arm.command_joint_positions(swung)
        arm.advance(1.5)
        camera.read()  # a frame rendered after the move
        after = camera.read()
        changed = np.abs(after.image.astype(int) - first.image.astype(int)).max(axis=2) > 30
        assert changed.mean() > 0.005
    finally:
        camera.disconnect()
