"""URRobot against a fake ur_rtde: the servo stream that would reach the controller (rate, values, units)."""
import time

import numpy as np
import pytest
from fake_sdks import FakeURArm, sleep_until

from robolearn.hal.drivers.interpolation import rotation_angle_between
from robolearn.hal.drivers.ur_rtde import URRobot
from robolearn.hal.robot import Robot


def _robot(arm: FakeURArm, **kw) -> URRobot:
    robot = URRobot(arm.host, sdk=arm.sdk(), **kw)
    robot.connect()
    return robot


def _send_at(robot: URRobot, targets: list[np.ndarray], hz: float, pose: bool = False) -> list[float]:
    """Send targets at `hz` like a policy would; returns the send times."""
    t0, times = time.monotonic(), []
    for k, target in enumerate(targets):
        sleep_until(t0 + k / hz)
        times.append(time.monotonic())
        (robot.command_ee_pose if pose else robot.command_joint_positions)(target)
    return times


def test_10hz_targets_become_a_500hz_interpolated_servoj_stream():
    arm = FakeURArm()
    robot = _robot(arm)
    assert isinstance(robot, Robot)
    delta = np.array([0.01, -0.02, 0.0, 0.005, 0.0, 0.03])
    targets = [arm.q + (k + 1) * delta for k in range(8)]
    _send_at(robot, targets, hz=10.0)
    time.sleep(0.25)  # let the last segment finish and hold
    robot.disconnect()

    calls = arm.log.named("servoJ")
    t = np.array([c.t for c in calls])
    values = np.array([c.args[0] for c in calls])
    period = np.median(np.diff(t))
    assert period == pytest.approx(1 / 500, rel=0.1), f"median servo period {period * 1e3:.3f} ms"
    assert arm.control_frequency == 500.0
    # the exact servoJ arguments: tick time 1/500 s, lookahead and gain passed through
    assert {(c.args[3], c.args[4], c.args[5]) for c in calls} == {(1 / 500, 0.1, 300.0)}

    # interpolation: no overshoot, monotone per joint, steps ~ delta / (0.1 s * 500 Hz), never a jump
    lo, hi = np.minimum(targets[0] - delta, targets[-1]), np.maximum(targets[0] - delta, targets[-1])
    assert np.all(values >= lo - 1e-12) and np.all(values <= hi + 1e-12)
    steps = np.diff(values, axis=0)
    assert np.all(steps * np.sign(delta) >= -1e-12)
    moving = steps[:, 5][np.abs(steps[:, 5]) > 1e-12]
    assert np.median(moving) == pytest.approx(delta[5] / 50, rel=0.25)
    # never faster than one target per (jitter-shortened) policy period, over any 50 ms window
    speed_bound, w = np.abs(delta[5]) / 0.08, 25
    moved = np.abs(values[w:, 5] - values[:-w, 5])
    assert np.all(moved <= speed_bound * (t[w:] - t[:-w]) + 2 * np.abs(delta[5]) / 50)
    np.testing.assert_allclose(values[-1], targets[-1], atol=1e-12)  # holds the final target exactly


def test_pose_targets_use_servol_along_the_shortest_rotation():
    arm = FakeURArm(tcp=np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0]))
    robot = _robot(arm, command_hz=125.0)  # a CB3
    goal = np.array([0.45, 0.05, 0.25, 0.0, 0.0, 0.6])
    robot.command_ee_pose(goal)
    time.sleep(0.2)
    robot.disconnect()
    calls = arm.log.named("servoL")
    assert calls and not arm.log.named("servoJ")
    assert np.median(np.diff([c.t for c in calls])) == pytest.approx(1 / 125, rel=0.1)
    start = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0])
    total = rotation_angle_between(start[3:], goal[3:])
    for c in calls:
        p = np.array(c.args[0])
        on_path = rotation_angle_between(start[3:], p[3:]) + rotation_angle_between(p[3:], goal[3:])
        assert on_path == pytest.approx(total, abs=1e-9)
        alpha = np.dot(p[:3] - start[:3], goal[:3] - start[:3]) / np.sum((goal[:3] - start[:3]) ** 2)
        np.testing.assert_allclose(p[:3], start[:3] + alpha * (goal[:3] - start[:3]), atol=1e-12)
    np.testing.assert_allclose(calls[-1].args[0], goal, atol=1e-12)


def test_stop_reaches_the_sdk_and_ends_the_servo_stream():
    arm = FakeURArm()
    robot = URRobot(arm.host, sdk=arm.sdk())
    robot.stop()  # before connect: a no-op, never an error
    robot.connect()
    robot.stop()  # connected but not servoing: stopJ
    assert arm.log.named("stopJ")[-1].args == (2.0, False)
    robot.command_joint_positions(arm.q + 0.1)
    time.sleep(0.05)
    robot.stop()
    stop_call = arm.log.named("servoStop")[-1]
    assert stop_call.args == (10.0,)
    time.sleep(0.05)
    assert not [c for c in arm.log.named("servoJ") if c.t > stop_call.t]
    # the next command restarts from the measured position, not from the abandoned target
    q_measured = arm.q.copy()
    robot.command_joint_positions(q_measured + 0.2)
    time.sleep(0.02)
    first_after = [c for c in arm.log.named("servoJ") if c.t > stop_call.t][0]
    assert np.max(np.abs(np.array(first_after.args[0]) - q_measured)) < 0.2 * 0.1
    robot.disconnect()
    assert arm.log.names()[-4:] == ["servoStop", "stopScript", "control.disconnect", "receive.disconnect"]


def test_read_state_units_and_gripper_on_a_tool_output():
    arm = FakeURArm(q=np.linspace(-1, 1, 6))
    robot = _robot(arm, gripper_tool_output=1)
    robot.command_gripper(0.9)
    robot.command_gripper(1.0)  # same level: not resent
    state = robot.read_state()
    np.testing.assert_allclose(state.joint_positions, np.linspace(-1, 1, 6))
    np.testing.assert_allclose(state.ee_pose, arm.tcp)
    assert state.gripper == 1.0 and state.timestamp <= time.monotonic()
    robot.command_gripper(0.2)
    assert robot.read_state().gripper == 0.0
    assert [c.args for c in arm.log.named("setToolDigitalOut")] == [(1, True), (1, False)]
    robot.disconnect()


def test_protective_stop_turns_into_a_clear_error_on_the_next_command():
    arm = FakeURArm()
    robot = _robot(arm)
    arm.program_running = False
    robot.command_joint_positions(arm.q + 0.05)
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="protective stop"):
        robot.command_joint_positions(arm.q + 0.05)
    assert len(arm.log.named("servoJ")) == 1  # nothing more was streamed after the rejection
    robot.disconnect()


def test_controller_constraints_and_errors():
    with pytest.raises(ValueError, match="up to 500 Hz"):
        URRobot("h", command_hz=1000)
    with pytest.raises(ValueError, match="lookahead_time"):
        URRobot("h", lookahead_time=0.5)
    with pytest.raises(ValueError, match="gain"):
        URRobot("h", gain=50)
    with pytest.raises(ValueError, match="digital outputs 0 and 1"):
        URRobot("h", gripper_tool_output=3)
    arm = FakeURArm()
    with pytest.raises(ConnectionError, match="10.0.0.99"):
        URRobot("10.0.0.99", sdk=arm.sdk()).connect()
    robot = _robot(arm)
    with pytest.raises(ValueError, match="6 values"):
        robot.command_joint_positions(np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        robot.command_ee_pose(np.array([0.1, 0, 0.2, 0, np.nan, 0]))
    with pytest.raises(RuntimeError, match="no gripper"):
        robot.command_gripper(1.0)
    robot.disconnect()
    with pytest.raises(RuntimeError, match="connect"):
        robot.read_state()


def test_missing_sdk_names_the_extra():
    with pytest.raises(ImportError, match=r"robolearn\[hardware\].*ur-rtde"):
        URRobot("192.168.1.10").connect()


def test_importing_the_drivers_loads_no_vendor_sdk():
    import subprocess
    import sys

    sdks = ["rtde_control", "rtde_receive", "rtde_io", "scservo_sdk", "dynamixel_sdk", "franky", "pyrealsense2", "pynput",
            "pyspacemouse", "cv2"]
    code = f"import sys, robolearn.hal.drivers; print([m for m in {sdks!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
