"""BusArm against fake Feetech/Dynamixel buses: the register reads and writes (addresses, bytes, ticks) that reach
the motors, and the conversions back to radians."""
import math

import numpy as np
import pytest
from fake_sdks import DYNAMIXEL_REGS, FEETECH_REGS, FakeServoBus

from robolearn.hal.drivers.bus_arm import ArmCalibration, BusArm, GripperCalibration, MotorCalibration
from robolearn.hal.drivers.kinematic_chain import ChainJoint, KinematicChain
from robolearn.hal.robot import Robot

SO100_IDS = (1, 2, 3, 4, 5)
SO100_CAL = ArmCalibration.from_dict({
    "joints": [{"offset": 2048, "sign": 1}, {"offset": 1900, "sign": -1}, {"offset": 2100, "sign": 1},
               {"offset": 2048, "sign": -1}, {"offset": 1024, "sign": 1}],
    "gripper": {"open_ticks": 2000, "closed_ticks": 3000},
})


def _so100(bus: FakeServoBus, **kw) -> BusArm:
    arm = BusArm(bus.port, "feetech", SO100_IDS, "sts3215", SO100_CAL, gripper_id=6, sdk=bus.sdk(), **kw)
    arm.connect()
    return arm


def _feetech_bus(**kw) -> FakeServoBus:
    bus = FakeServoBus("feetech", {i: 777 for i in range(1, 7)}, **kw)
    for i, ticks in zip(range(1, 7), (2048, 1900, 2100, 2048, 1024, 2000)):
        bus.set_present(i, ticks)
    bus.set(1, *FEETECH_REGS["goal"], 100)  # a stale goal far from where the arm is
    return bus


def test_connect_pings_checks_mode_and_enables_torque_holding_the_present_position():
    bus = _feetech_bus()
    arm = _so100(bus)
    assert isinstance(arm, Robot)
    assert [c.args for c in bus.log.named("PacketHandler")] == [(0,)]  # SCS protocol, little-endian STS
    assert bus.log.named("setBaudRate")[0].args == (1_000_000,)
    assert [c.args[0] for c in bus.log.named("ping")] == [1, 2, 3, 4, 5, 6]
    assert {c.args[1] for c in bus.log.named("read1")} == {FEETECH_REGS["mode"]}
    names = [c.name for c in bus.log.calls if c.name in ("sync_write", "write1")]
    assert names == ["sync_write"] + ["write1"] * 6  # goals first, then torque
    hold = bus.log.named("sync_write")[0].args
    assert hold[:2] == (42, 2)
    assert {i: int.from_bytes(bytes(b), "little") for i, b in hold[2].items()} == {1: 2048, 2: 1900, 3: 2100, 4: 2048, 5: 1024,
                                                                                     6: 2000}
    assert [(c.args[0], c.args[1], c.args[2]) for c in bus.log.named("write1")] == [(i, 40, 1) for i in range(1, 7)]
    np.testing.assert_allclose(arm.read_state().joint_positions, 0.0, atol=1e-12)  # the stale goal 100 was never obeyed


def test_joint_and_gripper_commands_write_calibrated_ticks_to_goal_position():
    bus = _feetech_bus()
    arm = _so100(bus)
    q = np.array([0.1, -0.2, 0.3, 0.5, -1.0])
    arm.command_joint_positions(q)
    address, length, params = bus.log.named("sync_write")[-1].args
    assert (address, length) == (42, 2)
    expected = {i: round(c.offset + c.sign * v * 4096 / (2 * math.pi)) for i, c, v in zip(SO100_IDS, SO100_CAL.joints, q)}
    assert {i: int.from_bytes(bytes(b), "little") for i, b in params.items()} == expected
    assert expected == {1: 2113, 2: 2030, 3: 2296, 4: 1722, 5: 372}
    arm.command_gripper(0.25)
    address, length, params = bus.log.named("sync_write")[-1].args
    assert (address, params) == (42, {6: [0xCA, 0x08]})  # 2250 = 0x08CA, low byte first
    state = arm.read_state()
    np.testing.assert_allclose(state.joint_positions, q, atol=2 * math.pi / 4096)
    assert state.gripper == pytest.approx(0.25)
    assert bus.log.named("sync_read")[-1].args == (56, 4, (1, 2, 3, 4, 5, 6))  # position + speed in one read
    assert np.all(np.isnan(state.ee_pose))  # no kinematic chain given


def test_velocity_registers_decode_with_sign_and_units():
    bus = _feetech_bus()
    arm = _so100(bus)
    bus.set_present(1, 2048, speed_raw=0x8000 | 400)  # Feetech: bit 15 is the sign, magnitude in step/s
    bus.set_present(2, 1900, speed_raw=400)
    qd = arm.read_state().joint_velocities
    assert qd[0] == pytest.approx(-400 * 2 * math.pi / 4096)
    assert qd[1] == pytest.approx(-400 * 2 * math.pi / 4096)  # joint 2 has sign -1

    dxl = FakeServoBus("dynamixel", {1: 1060, 2: 1200}, mode=4)
    koch = BusArm(dxl.port, "dynamixel", (1, 2), ("xl430", "xl330"), ArmCalibration((MotorCalibration(0), MotorCalibration(0))),
                  sdk=dxl.sdk())
    dxl.set_present(1, -1024 & 0xFFFFFFFF, speed_raw=-10 & 0xFFFFFFFF)  # two's complement, 0.229 rpm units
    koch.connect()
    state = koch.read_state()
    assert state.joint_positions[0] == pytest.approx(-math.pi / 2)
    assert state.joint_velocities[0] == pytest.approx(-10 * 0.229 * 2 * math.pi / 60)


def test_dynamixel_extended_mode_writes_four_byte_twos_complement_goals():
    bus = FakeServoBus("dynamixel", {1: 1060, 2: 1200, 3: 1190}, mode=4)
    cal = ArmCalibration((MotorCalibration(0), MotorCalibration(1000, -1)), GripperCalibration(1500, 2500))
    arm = BusArm(bus.port, "dynamixel", (1, 2), ("xl430", "xl330-m288", "xl330-m077"), cal, gripper_id=3, sdk=bus.sdk())
    arm.connect()
    assert [c.args for c in bus.log.named("PacketHandler")] == [(2.0,)]
    assert {(c.args[1], c.args[2]) for c in bus.log.named("write1")} == {(64, 1)}
    arm.command_joint_positions(np.array([-2 * math.pi, math.pi]))
    address, length, params = bus.log.named("sync_write")[-1].args
    assert (address, length) == (116, 4)
    assert params == {1: [0x00, 0xF0, 0xFF, 0xFF], 2: list((-1048 & 0xFFFFFFFF).to_bytes(4, "little"))}  # -4096, 1000-2048
    assert bus.log.named("sync_read")[-1].args[:2] == (128, 8)
    np.testing.assert_allclose(arm.read_state().joint_positions, [-2 * math.pi, math.pi])
    assert bus.get(1, *DYNAMIXEL_REGS["position"]) == (-4096 & 0xFFFFFFFF)


def test_out_of_range_goal_raises_and_writes_nothing():
    bus = _feetech_bus()
    arm = _so100(bus)
    n_writes = len(bus.log.named("sync_write"))
    with pytest.raises(ValueError, match="motor 1 is outside its register range \\[0, 4095\\]"):
        arm.command_joint_positions(np.array([3.5, 0, 0, 0, 0]))  # 2048 + 2282 ticks > 4095
    assert len(bus.log.named("sync_write")) == n_writes
    with pytest.raises(RuntimeError, match="joint commands only"):
        arm.command_ee_pose(np.zeros(6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        arm.command_gripper(1.5)


def test_stop_holds_and_disconnect_releases_torque():
    bus = _feetech_bus()
    arm = _so100(bus)
    arm.command_joint_positions(np.array([0.2, 0, 0, 0, 0]))
    bus.set_present(1, 2100)  # the motor is on its way when the stop comes
    arm.stop()
    address, _, params = bus.log.named("sync_write")[-1].args
    assert address == 42 and int.from_bytes(bytes(params[1]), "little") == 2100
    arm.disconnect()
    assert [(c.args[1], c.args[2]) for c in bus.log.named("write1")][-6:] == [(40, 0)] * 6
    assert bus.log.names()[-1] == "closePort"
    arm.stop()  # after disconnect: a no-op


def test_connection_errors_name_the_fix():
    with pytest.raises(ConnectionError, match="/dev/ttyUSB9.*dialout"):
        BusArm("/dev/ttyUSB9", "feetech", SO100_IDS, "sts3215", SO100_CAL, gripper_id=6, sdk=_feetech_bus().sdk()).connect()
    bus = FakeServoBus("feetech", {i: 777 for i in range(1, 6)})  # the gripper motor is unplugged
    with pytest.raises(ConnectionError, match="motor 6 did not answer.*baud"):
        _so100(bus)
    assert not bus.port_open
    bus = FakeServoBus("dynamixel", {1: 1060})
    with pytest.raises(ConnectionError, match="motor 1 reports model number 1060"):
        BusArm(bus.port, "dynamixel", (1,), "xl330", ArmCalibration((MotorCalibration(2048),)), sdk=bus.sdk()).connect()
    bus = FakeServoBus("feetech", {1: 777}, mode=1)  # wheel mode
    with pytest.raises(ConnectionError, match="operating mode 1"):
        BusArm(bus.port, "feetech", (1,), "sts3215", ArmCalibration((MotorCalibration(2048),)), sdk=bus.sdk()).connect()


def test_configuration_checks():
    one = ArmCalibration((MotorCalibration(2048),) * 6)
    with pytest.raises(ValueError, match="at most ~\\d+ .*baud"):
        BusArm("p", "dynamixel", range(1, 7), "xl330", one, baudrate=57600, command_hz=30)
    BusArm("p", "dynamixel", range(1, 7), "xl330", one, baudrate=1_000_000, command_hz=100)
    with pytest.raises(ValueError, match="speaks feetech"):
        BusArm("p", "dynamixel", range(1, 7), "sts3215", one)
    with pytest.raises(ValueError, match="calibration has 6 joints for 5"):
        BusArm("p", "feetech", range(1, 6), "sts3215", one)
    with pytest.raises(ValueError, match="gripper_id and calibration.gripper"):
        BusArm("p", "feetech", range(1, 7), "sts3215", one, gripper_id=7)
    with pytest.raises(ImportError, match="pip install feetech-servo-sdk"):
        BusArm("p", "feetech", range(1, 7), "sts3215", one).connect()
    with pytest.raises(ImportError, match=r"robolearn\[hardware\].*dynamixel-sdk"):
        BusArm("p", "dynamixel", range(1, 7), "xl330", one).connect()


def test_calibration_round_trip_and_forward_kinematics():
    for cal in SO100_CAL.joints:
        for ticks in (0, 1000, 2048, 4095):
            assert cal.to_ticks(cal.to_radians(ticks)) == ticks
    # planar 2-link arm, 0.1 m links: elbow up at 90 deg, forearm back to +x
    chain = KinematicChain((ChainJoint((0, 0, 0)), ChainJoint((0.1, 0, 0))), tool_xyz=(0.1, 0, 0))
    bus = FakeServoBus("feetech", {1: 777, 2: 777})
    bus.set_present(1, 2048 + 1024)
    bus.set_present(2, 2048 - 1024)
    arm = BusArm(bus.port, "feetech", (1, 2), "sts3215", ArmCalibration((MotorCalibration(2048),) * 2), chain=chain,
                 sdk=bus.sdk())
    arm.connect()
    np.testing.assert_allclose(arm.read_state().ee_pose, [0.1, 0.1, 0, 0, 0, 0], atol=1e-12)
    chain_3d = KinematicChain.from_dict({"joints": [{"xyz": [0, 0, 0.05], "axis": [0, 0, 1]},
                                                    {"xyz": [0, 0, 0.1], "axis": [0, 1, 0]}], "tool_xyz": [0, 0, 0.2]})
    np.testing.assert_allclose(chain_3d.forward([0.0, math.pi / 2]), [0.2, 0, 0.15, 0, math.pi / 2, 0], atol=1e-12)
