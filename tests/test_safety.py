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
from robolearn.hal.robot_env import SafetyConfig
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

    def __init__(self, q=None, pose=None, age_s: float = 0.0, stamp=None):
        self.name = "recording"
        self.limits = LIMITS
        self.command_hz = HZ
        self.q = np.zeros(6) if q is None else np.asarray(q, float)
        self.pose = np.array([0.5, 0.0, 0.3, np.pi, 0.0, 0.0]) if pose is None else np.asarray(pose, float)
        self.gripper = 0.0
        self.age_s = age_s
        self.stamp = stamp  # a fixed timestamp (any value, broken ones included) instead of now - age_s
        self.qd = np.zeros(6)
        self.calls: list[tuple[str, np.ndarray | float]] = []
        self.stops = 0

    def connect(self):
        pass

    def disconnect(self):
        pass

    def read_state(self) -> RobotState:
        stamp = time.monotonic() - self.age_s if self.stamp is None else self.stamp
        return RobotState(self.q.copy(), self.qd.copy(), self.pose.copy(), self.gripper, stamp)

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


def box_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p - np.clip(p, BOX_LOW, BOX_HIGH)))


def assert_pose_safe(sent: np.ndarray, measured: np.ndarray) -> None:
    assert np.all(np.isfinite(sent))
    if box_distance(measured[:3]) <= EPS:
        assert np.all(sent[:3] >= BOX_LOW - EPS) and np.all(sent[:3] <= BOX_HIGH + EPS)
    else:  # an arm found outside the workspace may only move back towards it, never further out
        assert box_distance(sent[:3]) < box_distance(measured[:3])
    assert np.linalg.norm(sent[:3] - measured[:3]) <= LIMITS.max_ee_step + EPS
    turn = Rotation.from_rotvec(sent[3:]) * Rotation.from_rotvec(measured[3:]).inv()
    assert turn.magnitude() <= LIMITS.max_ee_rotation_step + 1e-7


def assert_sent_safe(calls: list, q_before: np.ndarray, pose_before: np.ndarray) -> None:
    """Every command that reached the robot is inside the limits, measured from the state before it was sent."""
    for sent_kind, sent in calls:
        if sent_kind == "joint":
            assert_joint_safe(sent, q_before)
        elif sent_kind == "ee":
            assert_pose_safe(sent, pose_before)
        else:
            assert 0.0 <= sent <= 1.0


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
        assert_sent_safe(robot.calls[n_calls:], q_before, pose_before)
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


# ---------------------------------------------------------------------- limits are checked when built
GOOD_LIMITS = dict(joint_lower=(-1.0, -1.0), joint_upper=(1.0, 1.0), joint_max_velocity=(1.0, 1.0),
                   workspace_low=(0.0, 0.0, 0.0), workspace_high=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("field, value", [
    ("joint_lower", (np.nan, -1.0)), ("joint_upper", (1.0, np.inf)), ("joint_max_velocity", (1.0, np.nan)),
    ("workspace_low", (0.0, np.nan, 0.0)), ("workspace_high", (1.0, 1.0, np.inf)), ("max_joint_step", np.nan),
    ("max_ee_step", np.inf), ("max_ee_rotation_step", np.nan), ("joint_max_velocity", (1.0, "2")),
    ("max_joint_step", True),
])
def test_limits_that_are_not_finite_numbers_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"RobotLimits\.{field}(\[\d\])?: (must be finite|expected a number)"):
        RobotLimits(**{**GOOD_LIMITS, field: value})


@pytest.mark.parametrize("field, value, message", [
    ("workspace_low", (0.0, 0.0), "expected 3 numbers"), ("joint_lower", (), "one number per joint"),
    ("joint_upper", (1.0, -2.0), "below joint_upper"), ("joint_max_velocity", (1.0, 0.0), "must be positive"),
    ("max_ee_step", -0.1, "must be positive"), ("workspace_high", "abc", "expected a list of numbers"),
])
def test_limits_with_wrong_lengths_order_or_sign_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        RobotLimits(**{**GOOD_LIMITS, field: value})


def test_limits_are_stored_as_tuples_of_floats():
    limits = RobotLimits(**{**GOOD_LIMITS, "joint_lower": np.array([-1, -1])})
    assert limits.joint_lower == (-1.0, -1.0) and all(type(v) is float for v in limits.joint_lower)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0, 0.0, "0.1", None, True])
def test_safe_robot_and_watchdog_settings_must_be_positive_finite(bad):
    with pytest.raises(ValueError, match="stale_after_s"):
        SafeRobot(RecordingRobot(), stale_after_s=bad)
    if bad is not None:  # None means "the robot's own rate"
        with pytest.raises(ValueError, match="command_hz"):
            SafeRobot(RecordingRobot(), command_hz=bad)
    with pytest.raises(ValueError, match="timeout_s"):
        Watchdog(bad)
    with pytest.raises(ValueError, match="safety.home_speed"):
        SafetyConfig(home_speed=bad)
    if bad is not None:
        with pytest.raises(ValueError, match="safety.watchdog_timeout_s"):
            SafetyConfig(watchdog_timeout_s=bad)
        with pytest.raises(ValueError, match="poll_s"):
            Watchdog(1.0).start(poll_s=bad)


# ---------------------------------------------------------------------- measured states that cannot be trusted
@pytest.mark.parametrize("stamp, reason", [
    (np.nan, "not a finite"), (np.inf, "not a finite"), (-np.inf, "not a finite"), ("now", "not a finite"),
    (lambda: time.time(), "not on time.monotonic"), (lambda: time.monotonic() + 60, "in the future"),
    (lambda: time.monotonic() - 60, "old"),
])
def test_a_state_with_a_broken_or_foreign_timestamp_counts_as_stale(stamp, reason):
    robot = RecordingRobot(stamp=stamp() if callable(stamp) else stamp)
    safe = SafeRobot(robot, stale_after_s=0.1)
    assert safe.command_joint_positions(np.zeros(6)) == REJECTED
    assert safe.command_ee_pose([0.5, 0.0, 0.3, np.pi, 0.0, 0.0]) == REJECTED
    assert robot.calls == [] and robot.stops == 2 and safe.counters["rejected_stale"] == 2
    assert reason in safe.violations[-1].detail and safe.violations[-1].kind == "stale_state"


def test_a_timestamp_that_goes_backwards_counts_as_stale():
    clock = FakeClock()
    robot = RecordingRobot(stamp=clock.t)
    safe = SafeRobot(robot, clock=clock)
    assert safe.command_joint_positions(np.zeros(6)) == SENT
    robot.stamp = clock.t - 0.01  # fresh enough, but older than the state already accepted
    assert safe.command_joint_positions(np.zeros(6)) == REJECTED and len(robot.calls) == 1
    assert "went backwards" in safe.violations[-1].detail


@pytest.mark.parametrize("change, reason", [
    (lambda r: setattr(r, "q", np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1e6])), "further outside the joint limits"),
    (lambda r: setattr(r, "q", np.array([0.0, np.inf, 0.0, 0.0, 0.0, 0.0])), "joint positions not finite"),
    (lambda r: setattr(r, "qd", np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])), "joint velocities not finite"),
    (lambda r: setattr(r, "gripper", np.nan), "gripper"),
    (lambda r: setattr(r, "q", np.zeros(5)), "shape"),
    (lambda r: setattr(r, "pose", np.array([50.0, 0.0, 0.3, 0.0, 0.0, 0.0])), "outside the workspace box"),
    (lambda r: setattr(r, "pose", np.array([0.5, 0.0, np.nan, 0.0, 0.0, 0.0])), "pose not finite"),
])
def test_an_absurd_measured_state_stops_the_robot_with_the_reason(change, reason):
    robot = RecordingRobot()
    safe = SafeRobot(robot)
    change(robot)
    assert safe.command_joint_positions(np.zeros(6)) == REJECTED
    assert robot.calls == [] and robot.stops == 1
    assert safe.counters["rejected_bad_state"] == 1 and safe.violations[-1].kind == "bad_state"
    assert reason in safe.violations[-1].detail
    safe.read_state()  # reading it outside a command stops the robot too
    assert robot.stops == 2 and safe.counters["rejected_bad_state"] == 2


def test_a_joint_that_jumps_faster_than_the_hardware_can_move_stops_the_robot():
    clock = FakeClock()
    robot = RecordingRobot(stamp=clock.t)
    safe = SafeRobot(robot, clock=clock, command_hz=HZ)
    assert safe.read_state() is not None and robot.stops == 0
    clock.t += 0.01
    robot.stamp = clock.t
    robot.q = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1])  # 6 rad/s joint: 0.1 rad in 10 ms is possible (<= 0.19)
    assert safe.command_joint_positions(robot.q) == SENT
    clock.t += 0.01
    robot.stamp = clock.t
    robot.q = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.1])  # 1 rad/s joint: 1 rad in 10 ms is not
    assert safe.command_joint_positions(robot.q) == REJECTED and len(robot.calls) == 1
    assert "joint 3 jumped 1 rad" in safe.violations[-1].detail


def test_an_arm_without_forward_kinematics_still_takes_joint_commands():
    robot = RecordingRobot(pose=np.full(6, np.nan))
    safe = SafeRobot(robot)
    assert safe.command_joint_positions(np.full(6, 0.01)) == SENT
    assert safe.command_ee_pose([0.5, 0.0, 0.3, 0.0, 0.0, 0.0]) == REJECTED
    assert "pose not finite" in safe.violations[-1].detail


# ---------------------------------------------------------------------- commands of the wrong type or shape
BAD_COMMANDS = [None, "0.5", "123456", b"\x00" * 6, [0.0] * 5, [0.0] * 7, np.zeros((2, 6)), np.zeros((6, 1)),
                np.array([0.0] * 6, dtype=object), np.array([None] * 6), [True] * 6, np.ones(6, dtype=bool),
                np.zeros(6, dtype=complex), [0.0, 0.0, "a", 0.0, 0.0, 0.0], [[0.0], 0.0, 0.0, 0.0, 0.0, 0.0], {}, 2**70,
                [2**70] * 6, True]


@pytest.mark.parametrize("kind", ["joint", "ee", "gripper"])
@pytest.mark.parametrize("command", BAD_COMMANDS, ids=lambda c: type(c).__name__ + repr(getattr(c, "shape", ""))[:10])
def test_commands_of_the_wrong_type_or_shape_raise_before_reaching_the_driver(kind, command):
    robot = RecordingRobot()
    safe = SafeRobot(robot)
    method = {"joint": safe.command_joint_positions, "ee": safe.command_ee_pose, "gripper": safe.command_gripper}[kind]
    with pytest.raises(ValueError, match=r"must be numbers|must have shape"):
        method(command)
    assert robot.calls == [] and robot.stops == 0


# ---------------------------------------------------------------------- the watchdog cannot be switched off
BAD_FEEDS = [np.nan, np.inf, -np.inf, 1e300, "100.0", [100.0], True, object(), complex(1, 0)]


@pytest.mark.parametrize("bad", BAD_FEEDS, ids=repr)
def test_a_bad_feed_raises_and_the_watchdog_still_trips(bad):
    clock = FakeClock()
    robot = RecordingRobot()
    watchdog = Watchdog(0.1, clock=clock)
    SafeRobot(robot, watchdog=watchdog)
    watchdog.feed()
    with pytest.raises(ValueError, match=r"watchdog\.feed"):
        watchdog.feed(bad)
    clock.t += 0.05
    assert not watchdog.check()
    clock.t += 0.06
    assert watchdog.check() and robot.stops == 1
    unarmed = Watchdog(0.1, clock=clock)
    with pytest.raises(ValueError):
        unarmed.feed(bad)
    assert not unarmed.armed  # a rejected feed changes nothing


def test_a_wall_clock_feed_is_refused_and_a_past_one_does_not_postpone_the_deadline():
    watchdog = Watchdog(0.1)
    with pytest.raises(ValueError, match="time.monotonic"):
        watchdog.feed(time.time())
    clock = FakeClock()
    watchdog = Watchdog(0.1, clock=clock)
    watchdog.feed()
    clock.t += 0.2
    watchdog.feed(-5.0)  # a negative / old timestamp is accepted but refreshes nothing
    watchdog.feed(clock.t - 0.2)
    assert watchdog.check() and "no fresh observation" in watchdog.reason


def test_check_refuses_a_nan_now():
    watchdog = Watchdog(0.1, clock=FakeClock())
    watchdog.feed()
    with pytest.raises(ValueError, match="not a finite time"):
        watchdog.check(np.nan)


# ---------------------------------------------------------------------- properties over broken inputs
bad_stamps = st.one_of(st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308]),
                       st.floats(-1e9, 1e9).map(lambda dt: ("offset", dt)))
bad_vectors = st.one_of(arrays(np.float64, (6,), elements=any_float),
                        arrays(np.float64, array_shapes(min_dims=0, max_dims=2, max_side=8), elements=any_float))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(command_kinds, bad_vectors, measured_joints(), bad_vectors, bad_stamps,
                                st.floats(0.0, 0.2)), min_size=1, max_size=15))
def test_whatever_the_state_and_commands_nothing_outside_the_limits_reaches_the_driver(steps):
    """Broken measurements (NaN/huge positions and poses, any timestamp) and broken commands (NaN/huge values, any
    shape): a command reaches the driver only when the state it was checked against passes, and then within limits."""
    clock = FakeClock()
    robot = RecordingRobot()
    safe = SafeRobot(robot, command_hz=HZ, clock=clock)
    for kind, command, q, pose, stamp, dt in steps:
        clock.t += dt
        robot.q = q if pose.shape != (6,) or np.isfinite(pose[0]) else np.full(6, pose[0])  # sometimes a broken q
        robot.pose = pose if pose.shape == (6,) else robot.pose
        robot.stamp = clock.t + stamp[1] if isinstance(stamp, tuple) else stamp
        q_before, pose_before, n_calls = robot.q.copy(), robot.pose.copy(), len(robot.calls)
        state_problem = safe._judge(robot.read_state(), need_pose=kind == "ee")[0]
        method = {"joint": safe.command_joint_positions, "ee": safe.command_ee_pose,
                  "gripper": lambda c: safe.command_gripper(c[0] if c.ndim == 1 and c.size else c)}[kind]
        try:
            result = method(command)
        except ValueError:
            assert len(robot.calls) == n_calls  # a malformed command sends nothing
            continue
        sent = robot.calls[n_calls:]
        assert not state_problem or all(sent_kind == "gripper" for sent_kind, _ in sent), state_problem
        assert_sent_safe(sent, q_before, pose_before)
        assert result in (SENT, CLIPPED, REJECTED)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.one_of(st.tuples(st.just("wait"), st.floats(0.0, 0.3)),
                                 st.tuples(st.just("bad_feed"), st.sampled_from(BAD_FEEDS[:-2])),
                                 st.tuples(st.just("old_feed"), st.floats(0.0, 1e6)),
                                 st.tuples(st.just("feed"), st.just(0.0))), min_size=1, max_size=40))
def test_the_watchdog_always_trips_when_not_fed_whatever_else_it_is_given(events):
    clock = FakeClock()
    robot = RecordingRobot()
    watchdog = Watchdog(0.1, clock=clock)
    SafeRobot(robot, watchdog=watchdog)
    watchdog.feed()
    last_good = clock.t
    for kind, value in events:
        if kind == "wait":
            clock.t += value
        elif kind == "bad_feed":
            with pytest.raises(ValueError):
                watchdog.feed(value)
        elif kind == "old_feed":
            watchdog.feed(clock.t - value)
            last_good = max(last_good, clock.t - value)
        else:
            watchdog.feed()
            last_good = clock.t
        watchdog.check()
        if clock.t - last_good > 0.1 + 1e-9:
            assert watchdog.tripped
    clock.t += 0.2  # then no feed at all
    assert watchdog.check() and robot.stops == 1
