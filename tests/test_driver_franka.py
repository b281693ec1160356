"""FrankaRobot against a fake franky: the motions, dynamics factor and gripper commands that reach the robot."""
import time

import numpy as np
import pytest
from fake_sdks import FakeFranka
from scipy.spatial.transform import Rotation

from robolearn.hal.drivers.franka import FrankaRobot
from robolearn.hal.robot import Robot


def _robot(fake: FakeFranka, **kw) -> FrankaRobot:
    robot = FrankaRobot(fake.host, sdk=fake.sdk(), **kw)
    robot.connect()
    return robot


def test_connect_recovers_and_sets_the_relative_dynamics_factor():
    fake = FakeFranka()
    robot = _robot(fake, relative_dynamics_factor=0.05)
    assert isinstance(robot, Robot)
    assert fake.log.names()[:4] == ["Robot", "Gripper", "recover_from_errors", "relative_dynamics_factor"]
    assert fake.dynamics_factor == 0.05
    robot.disconnect()


def test_joint_targets_stream_as_asynchronous_absolute_joint_motions():
    fake = FakeFranka()
    robot = _robot(fake)
    targets = [fake.q + 0.01 * k for k in range(1, 4)]
    for q in targets:
        robot.command_joint_positions(q)
    moves = fake.log.named("move")
    assert len(moves) == 3 and all(c.args[1] is True for c in moves)  # each preempts the previous: no waiting
    for call, q in zip(moves, targets):
        assert type(call.args[0]).__name__ == "JointMotion" and call.args[0].reference_type == "Absolute"
        np.testing.assert_array_equal(call.args[0].target, q)
    assert not fake.log.named("join_motion")
    np.testing.assert_allclose(robot.read_state().joint_positions, targets[-1])
    robot.disconnect()


def test_pose_targets_become_affines_with_xyzw_quaternions_and_read_back():
    fake = FakeFranka()
    robot = _robot(fake)
    pose = np.array([0.45, -0.1, 0.3, 2.9, 0.4, -0.2])
    robot.command_ee_pose(pose)
    motion = fake.log.named("move")[-1].args[0]
    assert type(motion).__name__ == "CartesianMotion" and motion.reference_type == "Absolute"
    np.testing.assert_allclose(motion.target.translation, pose[:3])
    angle = (Rotation.from_quat(motion.target.quaternion).inv() * Rotation.from_rotvec(pose[3:])).magnitude()
    assert angle < 1e-12
    state = robot.read_state()
    np.testing.assert_allclose(state.ee_pose[:3], pose[:3])
    assert (Rotation.from_rotvec(state.ee_pose[3:]).inv() * Rotation.from_rotvec(pose[3:])).magnitude() < 1e-12
    robot.disconnect()


def test_switching_control_type_waits_for_the_running_motion():
    fake = FakeFranka(motion_s=0.1)
    robot = _robot(fake)
    robot.command_joint_positions(fake.q + 0.05)
    robot.command_ee_pose(np.array([0.4, 0.0, 0.4, np.pi, 0.0, 0.0]))  # the fake raises if the joint motion is preempted
    names = [n for n in fake.log.names() if n in ("move", "join_motion")]
    assert names == ["move", "join_motion", "move"]
    assert fake.log.named("join_motion")[0].args == (10.0,)
    robot.disconnect()


def test_gripper_is_binary_and_sent_only_on_change():
    fake = FakeFranka()
    robot = _robot(fake, gripper_speed=0.04, gripper_force=30.0)
    assert robot.read_state().gripper == 0.0
    robot.command_gripper(0.7)
    robot.command_gripper(1.0)
    time.sleep(0.05)  # the width poller picks up the new width
    assert robot.read_state().gripper == pytest.approx(0.75)  # 2 cm of 8 cm
    robot.command_gripper(0.2)
    assert [c.name for c in fake.log.calls if c.name.endswith("_async")] == ["grasp_async", "open_async"]
    assert fake.log.named("grasp_async")[0].args == (0.0, 0.04, 30.0, 0.005, 1.0)
    assert fake.log.named("open_async")[0].args == (0.04,)
    robot.disconnect()


def test_stop_errors_and_limits():
    fake = FakeFranka()
    robot = FrankaRobot(fake.host, sdk=fake.sdk())
    robot.stop()  # before connect: no-op
    robot.connect()
    robot.stop()
    assert fake.log.names()[-1] == "stop"
    fake.in_reflex = True
    with pytest.raises(RuntimeError, match="reflex.*recover"):
        robot.command_joint_positions(fake.q)
    robot.recover()
    robot.command_joint_positions(fake.q)
    with pytest.raises(ValueError, match="7 finite values"):
        robot.command_joint_positions(np.zeros(6))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        FrankaRobot(fake.host, relative_dynamics_factor=1.5)
    with pytest.raises(ValueError, match="1000 Hz"):
        FrankaRobot(fake.host, command_hz=2000)
    with pytest.raises(ValueError, match="70 N"):
        FrankaRobot(fake.host, gripper_force=100)
    with pytest.raises(ConnectionError, match="10.0.0.1.*FCI"):
        FrankaRobot("10.0.0.1", sdk=fake.sdk()).connect()
    with pytest.raises(ImportError, match="pip install franky-control"):
        FrankaRobot(fake.host).connect()
    robot.disconnect()
