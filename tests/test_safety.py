"""SafeRobot and Watchdog: no command outside the limits ever reaches the wrapped robot, whatever comes in."""
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from scipy.spatial.transform import Rotation

from robolearn.hal.robot import Robot, RobotLimits, RobotState
from robolearn.hal.safety import BLOCKED, CLIPPED, REJECTED, SENT, SafeRobot, Watchdog

LIMITS = RobotLimits(joint_lower=(-2.0, -1.5, -3.0, -3.0, -0.5, -3.0), joint_upper=(2.0, 1.5, 0.5, 3.0, 3.5, 3.0),
                     joint_max_velocity=(3.0, 3.0, 3.0, 1.0, 6.0, 6.0), workspace_low=(0.2, -0.4, 0.05),
                     workspace_high=(0.8, 0.4, 0.6), max_joint_step=0.05, max_ee_step=0.02, max_ee_rotation_step=0.1)
HZ = 50.0  # joint 3 is velocity-limited (1.0 / 50 = 0.02 rad per command), the others step-limited (0.05)
JOINT_STEP = np.minimum(LIMITS.max_joint_step, np.array(LIMITS.joint_max_velocity) / HZ)
EPS = 1e-9
LOW, HIGH = np.array(LIMITS.joint_lower), np.array(LIMITS.joint_upper)
BOX_LOW, BOX_HIGH = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)


class RecordingRobot:
    """A fake arm that records every call; its measured state follows the commands it receives."""

    def __init__(self, q=None, pose=None, age_s: float = 0.0):
        self.name = "recording"
        self.limits = LIMITS
        self.command_hz = HZ
        self.q = np.zeros(6) if q is None else np.asarray(q, float)
        self.pose = np.array([0.5, 0.0, 0.3, np.pi, 0.0, 0.0]) if pose is None else np.asarray(pose, float)
        self.gripper = 0.0
        self.age_s = age_s
        self.calls: list[tuple[str, np.ndarray | float]] = []
        self.stops = 0

    def connect(self):
        pass

    def disconnect(self):
        pass

    def read_state(self) -> RobotState:
        return RobotState(self.q.copy(), np.zeros(6), self.pose.copy(), self.gripper, time.monotonic() - self.age_s)

    def command_joint_positions(self, q):
        self.calls.append(("joint", np.array(q, dtype=float)))
        self.q = np.array(q, dtype=float)

    def command_ee_pose(self, pose):
        self.calls.append(("ee", np.array(pose, dtype=float)))
        self.pose = np.array(pose, dtype=float)

    def command_gripper(self, closed):
        self.calls.append(("gripper", float(closed)))
        self.gripper = float(closed)

    def stop(self):
        self.stops += 1


any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 5),
                      st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 1e-320]))
fraction = st.floats(0.0, 1.0)


def joint_commands(n=6):
    return arrays(np.float64, (n,), elements=any_float)


@st.composite
def measured_joints(draw):
    f = np.array(draw(st.lists(fraction, min_size=6, max_size=6)))
    return LOW + f * (HIGH - LOW)


@st.composite
def measured_poses(draw):
    f = np.array(draw(st.lists(fraction, min_size=3, max_size=3)))
    rotvec = np.array(draw(st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3)))
    return np.concatenate([BOX_LOW + f * (BOX_HIGH - BOX_LOW), rotvec])


def assert_joint_safe(sent: np.ndarray, measured: np.ndarray) -> None:
    assert np.all(np.isfinite(sent))
    assert np.all(sent >= LOW - EPS) and np.all(sent <= HIGH + EPS)
    assert np.all(np.abs(sent - measured) <= JOINT_STEP + EPS)


def assert_pose_safe(sent: np.ndarray, measured: np.ndarray) -> None:
    assert np.all(np.isfinite(sent))
    assert np.all(sent[:3] >= BOX_LOW - EPS) and np.all(sent[:3] <= BOX_HIGH + EPS)
    assert np.linalg.norm(sent[:3] - measured[:3]) <= LIMITS.max_ee_step + EPS
    turn = Rotation.from_rotvec(sent[3:]) * Rotation.from_rotvec(measured[3:]).inv()
    assert turn.magnitude() <= LIMITS.max_ee_rotation_step + 1e-7


def test_fake_robot_follows_the_protocol():
    assert isinstance(RecordingRobot(), Robot)
    assert isinstance(SafeRobot(RecordingRobot()), Robot)


@settings(max_examples=300, deadline=None)
@given(measured=measured_joints(), command=joint_commands())
def test_no_joint_command_outside_the_limits_reaches_the_robot(measured, command):
    robot = RecordingRobot(q=measured)
    safe = SafeRobot(robot, command_hz=HZ)
    result = safe.command_joint_positions(command)
    if not np.all(np.isfinite(command)):
        assert result == REJECTED and robot.calls == [] and robot.stops == 1
        assert safe.counters["rejected_non_finite"] == 1 and safe.violations[-1].kind == "non_finite"
        return
    (kind, sent), = robot.calls
    assert kind == "joint" and robot.stops == 0
    assert_joint_safe(sent, measured)
    assert result == (SENT if np.array_equal(sent, command) else CLIPPED)
    assert safe.counters["clipped"] == (result == CLIPPED)


@settings(max_examples=300, deadline=None)
@given(measured=measured_poses(), command=arrays(np.float64, (6,), elements=any_float))
def test_no_pose_command_outside_the_workspace_or_step_reaches_the_robot(measured, command):
    robot = RecordingRobot(pose=measured)
    safe = SafeRobot(robot)
    result = safe.command_ee_pose(command)
    if not np.all(np.isfinite(command)) or not np.isfinite(np.linalg.norm(command[3:])):
        assert result == REJECTED and robot.calls == [] and robot.stops == 1
        return
    (kind, sent), = robot.calls
    assert kind == "ee"
    assert_pose_safe(sent, measured)


@settings(max_examples=200, deadline=None)
@given(command=any_float)
def test_gripper_commands_are_clipped_to_0_1_and_nan_is_rejected(command):
    robot = RecordingRobot()
    result = SafeRobot(robot).command_gripper(command)
    if not np.isfinite(command):
        assert result == REJECTED and robot.calls == [] and robot.stops == 1
    else:
        (kind, sent), = robot.calls
        assert 0.0 <= sent <= 1.0 and sent == min(max(command, 0.0), 1.0)


command_kinds = st.sampled_from(["joint", "ee", "gripper"])


@settings(max_examples=60, deadline=None)
@given(sequence=st.lists(st.tuples(command_kinds, arrays(np.float64, (6,), elements=any_float)), min_size=1, max_size=30))
def test_a_long_mixed_sequence_never_leaves_the_limits(sequence):
    """The fake arm moves to every command it gets, so each limit is checked from wherever earlier ones led."""
    robot = RecordingRobot(q=(LOW + HIGH) / 2)
    safe = SafeRobot(robot, command_hz=HZ)
    for kind, values in sequence:
        q_before, pose_before, n_calls = robot.q.copy(), robot.pose.copy(), len(robot.calls)
        if kind == "joint":
            safe.command_joint_positions(values)
        elif kind == "ee":
            safe.command_ee_pose(values)
        else:
            safe.command_gripper(values[0])
        for sent_kind, sent in robot.calls[n_calls:]:
            if sent_kind == "joint":
                assert_joint_safe(sent, q_before)
            elif sent_kind == "ee":
                assert_pose_safe(sent, pose_before)
            else:
                assert 0.0 <= sent <= 1.0
    assert safe.counters["commands"] == len(sequence)
    assert safe.counters["sent"] + safe.counters["rejected_non_finite"] == len(sequence)


@settings(max_examples=100, deadline=None)
@given(shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8), kind=command_kinds)
def test_wrong_shapes_raise_a_clear_error_and_send_nothing(shape, kind):
    want = {"joint": (6,), "ee": (6,), "gripper": ()}[kind]
    if tuple(shape) == want:
        return
    robot = RecordingRobot()
    safe = SafeRobot(robot)
    method = {"joint": safe.command_joint_positions, "ee": safe.command_ee_pose, "gripper": safe.command_gripper}[kind]
    with pytest.raises(ValueError, match=r"must have shape"):
        method(np.zeros(shape))
    assert robot.calls == [] and robot.stops == 0


def test_non_numbers_raise():
    with pytest.raises(ValueError, match="must be numbers"):
        SafeRobot(RecordingRobot()).command_joint_positions(["a"] * 6)


def test_clipping_is_counted_and_recorded():
    robot = RecordingRobot()
    safe = SafeRobot(robot, command_hz=HZ)
    assert safe.command_joint_positions(np.full(6, 0.01)) == SENT
    assert safe.command_joint_positions(np.full(6, 10.0)) == CLIPPED
    np.testing.assert_allclose(robot.calls[-1][1], 0.01 + JOINT_STEP)
    assert safe.counters["clipped"] == 1 and safe.violations[-1].kind == "clipped"


def test_far_pose_moves_one_step_toward_the_clipped_target():
    robot = RecordingRobot(pose=[0.5, 0.0, 0.3, np.pi, 0.0, 0.0])
    safe = SafeRobot(robot)
    assert safe.command_ee_pose([5.0, 0.0, 0.3, np.pi, 0.0, 0.0]) == CLIPPED
    np.testing.assert_allclose(robot.calls[-1][1][:3], [0.52, 0.0, 0.3])
    # rotation: a quarter turn is cut to max_ee_rotation_step about the same axis
    robot.pose = np.array([0.5, 0.0, 0.3, 0.0, 0.0, 0.0])
    safe.command_ee_pose([0.5, 0.0, 0.3, 0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(robot.calls[-1][1][3:], [0.0, 0.0, 0.1], atol=1e-12)


def test_stale_or_broken_measurements_reject_the_command():
    robot = RecordingRobot(age_s=0.5)
    safe = SafeRobot(robot, stale_after_s=0.1)
    assert safe.command_joint_positions(np.zeros(6)) == REJECTED
    assert robot.calls == [] and robot.stops == 1 and safe.counters["rejected_stale"] == 1
    assert "old" in safe.violations[-1].detail
    robot.age_s = 0.0
    robot.q = np.full(6, np.nan)
    assert safe.command_joint_positions(np.zeros(6)) == REJECTED and robot.calls == []
    # an arm without forward kinematics reports a NaN pose: joint commands still work, pose commands cannot
    robot.q, robot.pose = np.zeros(6), np.full(6, np.nan)
    assert safe.command_joint_positions(np.zeros(6)) == SENT
    assert safe.command_ee_pose([0.5, 0.0, 0.3, 0.0, 0.0, 0.0]) == REJECTED and len(robot.calls) == 1


@settings(max_examples=50, deadline=None)
@given(sequence=st.lists(st.tuples(command_kinds, arrays(np.float64, (6,), elements=any_float)), min_size=1, max_size=20))
def test_estop_blocks_everything_until_cleared(sequence):
    robot = RecordingRobot()
    safe = SafeRobot(robot)
    safe.estop("test")
    assert robot.stops == 1 and safe.estopped and "e-stop" in safe.halted
    for kind, values in sequence:
        if kind == "joint":
            result = safe.command_joint_positions(values)
        elif kind == "ee":
            result = safe.command_ee_pose(values)
        else:
            result = safe.command_gripper(values[0])
        assert result == BLOCKED
    assert robot.calls == [] and safe.counters["blocked_estop"] == len(sequence)
    safe.clear_estop()
    assert safe.command_gripper(0.5) == SENT and robot.calls == [("gripper", 0.5)]


def test_estop_reaches_the_robot_while_a_command_hangs_in_the_driver():
    robot = RecordingRobot()
    entered, release = threading.Event(), threading.Event()
    original = robot.command_joint_positions

    def hanging(q):
        entered.set()
        release.wait(5.0)
        original(q)

    robot.command_joint_positions = hanging
    safe = SafeRobot(robot)
    worker = threading.Thread(target=safe.command_joint_positions, args=(np.zeros(6),))
    worker.start()
    assert entered.wait(5.0)
    safe.estop("button")  # must not wait for the hung command
    assert robot.stops == 1
    release.set()
    worker.join(5.0)
    assert robot.stops == 2  # the command that slipped through before the e-stop is stopped again
    assert safe.command_gripper(0.0) == BLOCKED


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(0.0, 0.3), min_size=1, max_size=30))
def test_watchdog_stops_exactly_once_when_observations_go_stale(gaps):
    clock = FakeClock()
    robot = RecordingRobot()
    watchdog = Watchdog(0.1, clock=clock)
    safe = SafeRobot(robot, watchdog=watchdog)
    watchdog.feed()
    stale = False
    for gap in gaps:
        clock.t += gap
        watchdog.check()
        stale = stale or gap > 0.1
        if not stale:
            watchdog.feed()
    assert watchdog.tripped == stale
    assert robot.stops == int(stale)  # exactly once, however often it is checked afterwards
    assert (safe.command_gripper(1.0) == BLOCKED) == stale


def test_watchdog_catches_an_inference_overrun_and_latches_until_reset():
    clock = FakeClock()
    robot = RecordingRobot()
    watchdog = Watchdog(0.2, clock=clock)
    safe = SafeRobot(robot, watchdog=watchdog)
    watchdog.feed()
    watchdog.inference_started()
    clock.t += 0.15
    watchdog.feed()  # observations stay fresh: only the inference is slow
    clock.t += 0.1
    assert watchdog.check() and "inference" in watchdog.reason
    watchdog.inference_finished()
    watchdog.feed()
    assert watchdog.tripped and robot.stops == 1
    assert safe.command_joint_positions(np.zeros(6)) == BLOCKED and safe.counters["blocked_watchdog"] == 1
    assert "watchdog" in safe.halted
    watchdog.reset()
    assert safe.command_joint_positions(np.zeros(6)) == SENT


def test_watchdog_thread_stops_a_robot_whose_loop_hangs():
    robot = RecordingRobot()
    watchdog = Watchdog(0.25)  # generous: a loaded shared VM must not trip it while the loop is healthy
    SafeRobot(robot, watchdog=watchdog)
    watchdog.start(poll_s=0.01)
    try:
        for _ in range(5):  # a healthy loop at 50 Hz
            watchdog.feed()
            time.sleep(0.02)
        assert not watchdog.tripped
        time.sleep(0.8)  # the loop hangs
        assert watchdog.tripped and robot.stops == 1
    finally:
        watchdog.close()


def test_bad_construction_is_explained():
    with pytest.raises(ValueError, match="timeout_s"):
        Watchdog(0)
    with pytest.raises(ValueError, match="stale_after_s"):
        SafeRobot(RecordingRobot(), stale_after_s=0)
    other = RobotLimits((-1.0,), (1.0,), (1.0,), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="1 joints"):
        SafeRobot(RecordingRobot(), limits=other)
