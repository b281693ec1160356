"""SO-100/Koch class arms: position-controlled serial-bus servos (Feetech STS3215 or Dynamixel X-series).

One read per cycle (sync read of present velocity+position), one write per command (sync write of goal
positions). Joint angles map to encoder ticks through a per-motor calibration: `rad = sign * (ticks - offset) *
2 pi / resolution`; the gripper motor maps linearly from `open_ticks` (0) to `closed_ticks` (1). Joint commands are
the native mode; `ee_pose` in the state comes from an optional `KinematicChain` (NaN without one), and pose
commands are refused because these arms have no inverse kinematics here.

Protocol constraints enforced: goal ticks must lie in the register's range for the motor's operating mode (a
value outside means calibration or limits are wrong, so it raises instead of wrapping), the motors must answer a
ping with the configured model, and `command_hz` must fit on the bus at `baudrate`. Enabling torque first writes
the present position as the goal, so the arm does not jump to a stale goal register.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.hal.drivers.bus_motors import MODELS, TABLES, decode_signed, max_command_hz, to_bytes
from robolearn.hal.drivers.kinematic_chain import KinematicChain
from robolearn.hal.drivers.sdk import import_sdk
from robolearn.hal.robot import RobotLimits, RobotState


@dataclass(frozen=True)
class MotorCalibration:
    offset: int  # encoder ticks at joint angle 0
    sign: int = 1  # +1 or -1: the joint's positive direction in ticks
    resolution: int = 4096  # encoder ticks per turn

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"calibration sign must be +1 or -1, got {self.sign}")
        if self.resolution <= 0:
            raise ValueError(f"calibration resolution must be positive, got {self.resolution}")

    def to_radians(self, ticks: int) -> float:
        return self.sign * (ticks - self.offset) * 2 * math.pi / self.resolution

    def to_ticks(self, radians: float) -> int:
        return int(round(self.offset + self.sign * radians * self.resolution / (2 * math.pi)))


@dataclass(frozen=True)
class GripperCalibration:
    open_ticks: int
    closed_ticks: int

    def __post_init__(self) -> None:
        if self.open_ticks == self.closed_ticks:
            raise ValueError("gripper open_ticks and closed_ticks must differ")

    def to_closed(self, ticks: int) -> float:
        return float(np.clip((ticks - self.open_ticks) / (self.closed_ticks - self.open_ticks), 0.0, 1.0))

    def to_ticks(self, closed: float) -> int:
        return int(round(self.open_ticks + closed * (self.closed_ticks - self.open_ticks)))


@dataclass(frozen=True)
class ArmCalibration:
    joints: tuple[MotorCalibration, ...]
    gripper: GripperCalibration | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> ArmCalibration:
        """From `{"joints": [{"offset": 2048, "sign": 1}, ...], "gripper": {"open_ticks": .., "closed_ticks": ..}}`
        (the shape of a rig file's calibration section)."""
        joints = tuple(MotorCalibration(**j) for j in d["joints"])
        gripper = GripperCalibration(**d["gripper"]) if d.get("gripper") else None
        return cls(joints, gripper)


def default_limits(n_joints: int) -> RobotLimits:
    """+-pi per joint at 3 rad/s (below an STS3215's or XL330's no-load speed), a 0.5 m box around the base."""
    return RobotLimits(joint_lower=(-math.pi,) * n_joints, joint_upper=(math.pi,) * n_joints,
                       joint_max_velocity=(3.0,) * n_joints, workspace_low=(-0.5, -0.5, -0.1), workspace_high=(0.5, 0.5, 0.6))


class BusArm:
    """A serial-bus servo arm behind the `Robot` protocol."""

    def __init__(
        self,
        port: str,
        protocol: str,
        motor_ids: Sequence[int],
        model: str | Sequence[str],
        calibration: ArmCalibration,
        gripper_id: int | None = None,
        baudrate: int = 1_000_000,
        command_hz: float = 30.0,
        limits: RobotLimits | None = None,
        chain: KinematicChain | None = None,
        name: str = "bus_arm",
        torque_on_connect: bool = True,
        torque_off_on_disconnect: bool = True,
        sdk: Any = None,
    ):
        """`motor_ids` are the arm joints in order; `gripper_id` the gripper motor (needs `calibration.gripper`).
        `model` is one model for all motors or one per motor (joints, then gripper). `sdk` replaces the vendor
        module (`scservo_sdk` / `dynamixel_sdk`), for tests."""
        if protocol not in TABLES:
            raise ValueError(f"protocol must be one of {sorted(TABLES)}, got {protocol!r}")
        self.table = TABLES[protocol]
        self.motor_ids = tuple(int(i) for i in motor_ids)
        self.gripper_id = gripper_id
        all_ids = self.motor_ids + ((gripper_id,) if gripper_id is not None else ())
        if not self.motor_ids or len(set(all_ids)) != len(all_ids) or not all(0 <= i <= 252 for i in all_ids):
            raise ValueError(f"motor ids must be distinct integers in 0..252, got joints {motor_ids} gripper {gripper_id}")
        models = (model,) * len(all_ids) if isinstance(model, str) else tuple(model)
        if len(models) != len(all_ids):
            raise ValueError(f"give one model for all motors or one per motor ({len(all_ids)}), got {len(models)}")
        for m in models:
            if m not in MODELS:
                raise ValueError(f"unknown servo model {m!r}; known: {sorted(MODELS)}")
            if MODELS[m][0] != protocol:
                raise ValueError(f"model {m!r} speaks {MODELS[m][0]}, not {protocol}")
        self.models = dict(zip(all_ids, models))
        if len(calibration.joints) != len(self.motor_ids):
            raise ValueError(f"calibration has {len(calibration.joints)} joints for {len(self.motor_ids)} motor ids")
        if (gripper_id is None) != (calibration.gripper is None):
            raise ValueError("a gripper needs both gripper_id and calibration.gripper (or neither)")
        if chain is not None and len(chain.joints) != len(self.motor_ids):
            raise ValueError(f"kinematic chain has {len(chain.joints)} joints for {len(self.motor_ids)} motors")
        bus_hz = max_command_hz(self.table, len(all_ids), baudrate)
        if not 0 < command_hz <= bus_hz:
            raise ValueError(f"command_hz={command_hz}: {len(all_ids)} {protocol} motors at {baudrate} baud carry at most "
                             f"~{bus_hz:.0f} read+write cycles per second; lower the rate or raise the bus baud rate")
        self.port = port
        self.protocol = protocol
        self.calibration = calibration
        self.baudrate = baudrate
        self.command_hz = float(command_hz)
        self.limits = limits or default_limits(len(self.motor_ids))
        if self.limits.n_joints != len(self.motor_ids):
            raise ValueError(f"limits declare {self.limits.n_joints} joints for {len(self.motor_ids)} motors")
        self.chain = chain
        self.name = name
        self.torque_on_connect = torque_on_connect
        self.torque_off_on_disconnect = torque_off_on_disconnect
        self._all_ids = all_ids
        self._sdk_override = sdk
        self._sdk: Any = None
        self._port: Any = None
        self._packets: Any = None
        self._reader: Any = None
        self._goal_range: dict[int, tuple[int, int]] = {}
        self._bus = threading.Lock()  # one transaction on the wire at a time

    # -- connection

    def connect(self) -> None:
        if self._port is not None:
            return
        sdk = self._sdk_override or import_sdk(self.table.sdk_module, self.table.pip_name, f"BusArm ({self.protocol})",
                                                        extra=self.table.extra)
        port = sdk.PortHandler(self.port)
        try:
            opened = port.openPort()
        except OSError as e:
            opened, why = False, str(e)
        else:
            why = "the port did not open"
        if not opened:
            raise ConnectionError(f"cannot open serial port {self.port!r}: {why}. Check the USB cable and the path "
                                  "(ls /dev/ttyACM* /dev/ttyUSB*), and that your user may use it (dialout group)")
        if not port.setBaudRate(self.baudrate):
            port.closePort()
            raise ConnectionError(f"serial port {self.port!r} refused baud rate {self.baudrate}")
        self._sdk, self._port = sdk, port
        self._packets = sdk.PacketHandler(self.table.packet_protocol)
        try:
            self._check_motors()
            self._reader = sdk.GroupSyncRead(port, self._packets, self.table.present_block, self.table.present_bytes)
            for motor_id in self._all_ids:
                self._reader.addParam(motor_id)
            if self.torque_on_connect:
                self.set_torque(True)
        except Exception:
            port.closePort()
            self._port = None
            raise

    def disconnect(self) -> None:
        if self._port is None:
            return
        try:
            if self.torque_off_on_disconnect:
                self.set_torque(False)
        finally:
            self._port.closePort()
            self._port = None

    def _check_motors(self) -> None:
        for motor_id in self._all_ids:
            model = self.models[motor_id]
            number, comm, _ = self._packets.ping(self._port, motor_id)
            if comm != self._sdk.COMM_SUCCESS:
                raise ConnectionError(f"motor {motor_id} did not answer on {self.port} at {self.baudrate} baud "
                                      f"({self._packets.getTxRxResult(comm)}); check its id, the baud rate and the power supply")
            if number not in MODELS[model][1]:
                raise ConnectionError(f"motor {motor_id} reports model number {number}, but {model!r} has "
                                      f"{sorted(MODELS[model][1])}")
            mode = self._read_byte(motor_id, self.table.operating_mode, "operating mode")
            if mode not in self.table.position_modes:
                raise ConnectionError(f"motor {motor_id} is in operating mode {mode}; BusArm needs a position mode "
                                      f"{sorted(self.table.position_modes)} (set it with the vendor tool, torque off)")
            self._goal_range[motor_id] = self.table.position_modes[mode]

    # -- torque

    def set_torque(self, enabled: bool) -> None:
        """Torque on (holding the present position) or off (the arm goes limp: support it first)."""
        self._require_connected()
        if enabled:
            present = self._read_present()
            self._write_goals({i: present[i][0] for i in self._all_ids})
        for motor_id in self._all_ids:
            with self._bus:
                comm, error = self._packets.write1ByteTxRx(self._port, motor_id, self.table.torque_enable, int(enabled))
            self._check_result(comm, error, f"torque {'enable' if enabled else 'disable'} on motor {motor_id}")

    # -- state

    def read_state(self) -> RobotState:
        self._require_connected()
        present = self._read_present()
        t = time.monotonic()
        q = np.array([c.to_radians(present[i][0]) for i, c in zip(self.motor_ids, self.calibration.joints)])
        unit = self.table.velocity_rad_s_per_unit
        qd = np.array([c.sign * present[i][1] * unit for i, c in zip(self.motor_ids, self.calibration.joints)])
        gripper = 0.0
        if self.gripper_id is not None:
            gripper = self.calibration.gripper.to_closed(present[self.gripper_id][0])
        ee = self.chain.forward(q) if self.chain is not None else np.full(6, np.nan)
        return RobotState(joint_positions=q, joint_velocities=qd, ee_pose=ee, gripper=gripper, timestamp=t)

    # -- commands

    def command_joint_positions(self, q: np.ndarray) -> None:
        self._require_connected()
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (len(self.motor_ids),) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint target must be {len(self.motor_ids)} finite values, got {q}")
        self._write_goals({i: c.to_ticks(v) for i, c, v in zip(self.motor_ids, self.calibration.joints, q)})

    def command_ee_pose(self, pose: np.ndarray) -> None:
        raise RuntimeError(f"BusArm {self.name!r} takes joint commands only (no inverse kinematics for this arm): use a "
                           "joint-space action (command_joint_positions), or put an IK solver in front of the driver")

    def command_gripper(self, closed: float) -> None:
        if self.gripper_id is None:
            raise RuntimeError(f"BusArm {self.name!r} has no gripper motor: pass gripper_id and calibration.gripper")
        if not 0.0 <= closed <= 1.0:
            raise ValueError(f"gripper command must be in [0, 1] (0 open, 1 closed), got {closed}")
        self._require_connected()
        self._write_goals({self.gripper_id: self.calibration.gripper.to_ticks(closed)})

    def stop(self) -> None:
        """Hold where the motors are now: the goal becomes the present position (torque stays on)."""
        if self._port is None:
            return
        present = self._read_present()
        self._write_goals({i: present[i][0] for i in self._all_ids})

    # -- bus transactions

    def _read_present(self) -> dict[int, tuple[int, int]]:
        """{motor id: (position ticks, velocity in register units)} from one sync read."""
        t = self.table
        with self._bus:
            comm = self._reader.txRxPacket()
            if comm != self._sdk.COMM_SUCCESS:
                raise RuntimeError(f"sync read of motors {self._all_ids} on {self.port} failed: "
                                   f"{self._packets.getTxRxResult(comm)}")
            out = {}
            for motor_id in self._all_ids:
                if not self._reader.isAvailable(motor_id, t.present_block, t.present_bytes):
                    raise RuntimeError(f"motor {motor_id} sent no position in the sync read on {self.port}")
                position = self._reader.getData(motor_id, t.position_at, t.position_bytes)
                if t.protocol == "dynamixel":
                    position = decode_signed(position, t.position_bytes, "twos_complement")
                velocity = decode_signed(self._reader.getData(motor_id, t.velocity_at, t.velocity_bytes), t.velocity_bytes,
                                         t.velocity_signed)
                out[motor_id] = (position, velocity)
        return out

    def _write_goals(self, goals: dict[int, int]) -> None:
        for motor_id, ticks in goals.items():
            lo, hi = self._goal_range[motor_id]
            if not lo <= ticks <= hi:
                raise ValueError(f"goal {ticks} ticks for motor {motor_id} is outside its register range [{lo}, {hi}]: "
                                 "the command or the calibration offset/sign is wrong")
        writer = self._sdk.GroupSyncWrite(self._port, self._packets, self.table.goal_position, self.table.goal_bytes)
        for motor_id, ticks in goals.items():
            writer.addParam(motor_id, to_bytes(ticks, self.table.goal_bytes))
        with self._bus:
            comm = writer.txPacket()
        if comm != self._sdk.COMM_SUCCESS:
            raise RuntimeError(f"sync write of goal positions on {self.port} failed: {self._packets.getTxRxResult(comm)}")

    def _read_byte(self, motor_id: int, address: int, what: str) -> int:
        with self._bus:
            value, comm, error = self._packets.read1ByteTxRx(self._port, motor_id, address)
        self._check_result(comm, error, f"reading {what} of motor {motor_id}")
        return value

    def _check_result(self, comm: int, error: int, what: str) -> None:
        if comm != self._sdk.COMM_SUCCESS:
            raise RuntimeError(f"{what} on {self.port} failed: {self._packets.getTxRxResult(comm)}")
        if error:
            raise RuntimeError(f"{what}: the motor reported {self._packets.getRxPacketError(error)}")

    def _require_connected(self) -> None:
        if self._port is None:
            raise RuntimeError(f"BusArm {self.name!r} is not connected: call connect() first")
