"""Fakes of the vendor SDKs at the exact boundary the drivers call, with the real call signatures.

Every fake records each call as `Call(t, name, args)` with `time.monotonic()`, so tests can check the commands,
rates and units that would have reached the hardware. Where the real SDK enforces a range or raises, the fake
does the same, so a driver that passes here would not be rejected by the device.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Call:
    t: float
    name: str
    args: tuple


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append(Call(time.monotonic(), name, args))

    def named(self, *names: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.name in names]

    def names(self) -> list[str]:
        with self.lock:
            return [c.name for c in self.calls]


def sleep_until(deadline: float) -> None:
    """Sleep to 1 ms before `deadline`, then spin: `time.sleep` alone wakes 75-160 us late here."""
    remaining = deadline - time.monotonic()
    if remaining > 0.001:
        time.sleep(remaining - 0.001)
    while time.monotonic() < deadline:
        pass


# ---------------------------------------------------------------- ur_rtde (rtde_control / rtde_receive / rtde_io)

class FakeURArm:
    """One simulated UR controller. Servo setpoints are tracked perfectly, so the measured state is the last one."""

    def __init__(self, q: np.ndarray | None = None, tcp: np.ndarray | None = None, host: str = "192.168.1.10"):
        self.host = host
        self.log = CallLog()
        self.q = np.zeros(6) if q is None else np.asarray(q, float)
        self.qd = np.zeros(6)
        self.tcp = np.array([0.4, 0.0, 0.3, 0.0, 3.14159, 0.0]) if tcp is None else np.asarray(tcp, float)
        self.digital_output_bits = 0
        self.program_running = True  # False models a protective stop: servo commands return False
        self.control_frequency: float | None = None

    def sdk(self) -> SimpleNamespace:
        """Module stand-ins: `sdk.rtde_control.RTDEControlInterface(hostname, frequency, ...)` etc."""
        arm = self

        class RTDEControlInterface:
            def __init__(self, hostname: str, frequency: float = -1.0, flags: int = 0, ur_cap_port: int = 50002,
                         rt_priority: int = 0):
                arm._check_host(hostname)
                self.period = 1.0 / (500.0 if frequency <= 0 else frequency)
                arm.control_frequency = frequency
                arm.log.record("RTDEControlInterface", hostname, frequency)

            def initPeriod(self):  # the real one returns a steady_clock time point
                return time.monotonic()

            def waitPeriod(self, t_cycle_start):
                sleep_until(t_cycle_start + self.period)

            def servoJ(self, q, speed, acceleration, time_, lookahead_time, gain):
                _check_servo_args(q, lookahead_time, gain)
                arm.log.record("servoJ", list(q), speed, acceleration, time_, lookahead_time, gain)
                if arm.program_running:
                    arm.q = np.asarray(q, float)
                return arm.program_running

            def servoL(self, pose, speed, acceleration, time_, lookahead_time, gain):
                _check_servo_args(pose, lookahead_time, gain)
                arm.log.record("servoL", list(pose), speed, acceleration, time_, lookahead_time, gain)
                if arm.program_running:
                    arm.tcp = np.asarray(pose, float)
                return arm.program_running

            def servoStop(self, a=10.0):
                arm.log.record("servoStop", a)
                return True

            def stopJ(self, a=2.0, asynchronous=False):
                arm.log.record("stopJ", a, asynchronous)

            def stopScript(self):
                arm.log.record("stopScript")

            def disconnect(self):
                arm.log.record("control.disconnect")

        class RTDEReceiveInterface:
            def __init__(self, hostname: str, frequency: float = -1.0, variables=(), verbose=False,
                         use_upper_range_registers=False, rt_priority=0):
                arm._check_host(hostname)
                arm.log.record("RTDEReceiveInterface", hostname, frequency)

            def getActualQ(self):
                return arm.q.tolist()

            def getActualQd(self):
                return arm.qd.tolist()

            def getActualTCPPose(self):
                return arm.tcp.tolist()

            def getActualDigitalOutputBits(self):
                return arm.digital_output_bits

            def disconnect(self):
                arm.log.record("receive.disconnect")

        class RTDEIOInterface:
            def __init__(self, hostname: str, verbose=False, use_upper_range_registers=False):
                arm._check_host(hostname)

            def setToolDigitalOut(self, output_id: int, signal_level: bool) -> bool:
                arm.log.record("setToolDigitalOut", output_id, signal_level)
                bit = 1 << (16 + output_id)
                arm.digital_output_bits = (arm.digital_output_bits | bit) if signal_level else (arm.digital_output_bits & ~bit)
                return True

            def disconnect(self):
                arm.log.record("io.disconnect")

        return SimpleNamespace(
            rtde_control=SimpleNamespace(RTDEControlInterface=RTDEControlInterface),
            rtde_receive=SimpleNamespace(RTDEReceiveInterface=RTDEReceiveInterface),
            rtde_io=SimpleNamespace(RTDEIOInterface=RTDEIOInterface),
        )

    def _check_host(self, hostname: str) -> None:
        if hostname != self.host:  # what ur_rtde raises when nothing answers
            raise RuntimeError(f"One of the RTDE input registers are already in use! / connection to {hostname} timed out")


def _check_servo_args(target, lookahead_time: float, gain: float) -> None:
    # ur_rtde verifies these and throws std::range_error (a ValueError in Python)
    if len(target) != 6:
        raise ValueError(f"servo target must have 6 values, got {len(target)}")
    if not 0.03 <= lookahead_time <= 0.2:
        raise ValueError(f"lookahead_time {lookahead_time} out of range [0.03, 0.2]")
    if not 100 <= gain <= 2000:
        raise ValueError(f"gain {gain} out of range [100, 2000]")


# ---------------------------------------------------------------- scservo_sdk (Feetech) / dynamixel_sdk (Robotis)

# Register maps from the vendors' control tables, written out here independently of the driver's own tables.
FEETECH_REGS = {"mode": 33, "torque": 40, "goal": (42, 2), "position": (56, 2), "speed": (58, 2)}  # STS3215
DYNAMIXEL_REGS = {"mode": 11, "torque": 64, "goal": (116, 4), "position": (132, 4), "speed": (128, 4)}  # X-series
COMM_SUCCESS = 0


class FakeServoBus:
    """Servos on one serial port: a 256-byte register memory per motor, position servos that reach their goal
    at once while torque is on. `sdk()` returns a stand-in for `scservo_sdk` or `dynamixel_sdk`."""

    def __init__(self, protocol: str, models: dict[int, int], port: str = "/dev/ttyACM0", baudrate: int = 1_000_000,
                 mode: int | None = None):
        self.protocol = protocol
        self.regs = FEETECH_REGS if protocol == "feetech" else DYNAMIXEL_REGS
        self.rx_timeout = -6 if protocol == "feetech" else -3001  # each SDK's COMM_RX_TIMEOUT
        self.port, self.baudrate = port, baudrate
        self.models = dict(models)
        self.memory = {i: bytearray(256) for i in models}
        for i in models:
            self.memory[i][self.regs["mode"]] = (0 if protocol == "feetech" else 3) if mode is None else mode
        self.log = CallLog()
        self.port_open = False
        self.port_baud: int | None = None

    def get(self, motor_id: int, address: int, n: int) -> int:
        return int.from_bytes(self.memory[motor_id][address:address + n], "little")

    def set(self, motor_id: int, address: int, n: int, value: int) -> None:
        self.memory[motor_id][address:address + n] = (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    def set_present(self, motor_id: int, ticks: int, speed_raw: int = 0) -> None:
        self.set(motor_id, *self.regs["position"], ticks)
        self.set(motor_id, *self.regs["speed"], speed_raw)

    def torque(self, motor_id: int) -> int:
        return self.memory[motor_id][self.regs["torque"]]

    def _answers(self, motor_id: int) -> bool:
        return self.port_open and self.port_baud == self.baudrate and motor_id in self.models

    def _write(self, motor_id: int, address: int, data: list[int]) -> None:
        self.memory[motor_id][address:address + len(data)] = bytes(data)
        goal = self.regs["goal"][0]
        if (address == goal or address == self.regs["torque"]) and self.torque(motor_id):  # torque on: go to the goal
            position, n = self.regs["position"]
            self.memory[motor_id][position:position + n] = self.memory[motor_id][goal:goal + n]

    def sdk(self) -> SimpleNamespace:
        bus = self

        class PortHandler:
            def __init__(self, port_name: str):
                self.port_name = port_name

            def openPort(self) -> bool:
                if self.port_name != bus.port:  # pyserial's SerialException is an OSError
                    raise OSError(2, f"could not open port {self.port_name}: [Errno 2] No such file or directory")
                bus.port_open = True
                return True

            def setBaudRate(self, baudrate: int) -> bool:
                bus.log.record("setBaudRate", baudrate)
                if baudrate not in (9600, 57600, 115200, 500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000):
                    return False
                bus.port_baud = baudrate
                return True

            def closePort(self) -> None:
                bus.log.record("closePort")
                bus.port_open = False

        class PacketHandler:
            def __init__(self, protocol):
                bus.log.record("PacketHandler", protocol)

            def ping(self, port, motor_id):
                bus.log.record("ping", motor_id)
                if not bus._answers(motor_id):
                    return 0, bus.rx_timeout, 0
                return bus.models[motor_id], COMM_SUCCESS, 0

            def read1ByteTxRx(self, port, motor_id, address):
                bus.log.record("read1", motor_id, address)
                if not bus._answers(motor_id):
                    return 0, bus.rx_timeout, 0
                return bus.memory[motor_id][address], COMM_SUCCESS, 0

            def write1ByteTxRx(self, port, motor_id, address, data):
                bus.log.record("write1", motor_id, address, data)
                if not bus._answers(motor_id):
                    return bus.rx_timeout, 0
                bus._write(motor_id, address, [data])
                return COMM_SUCCESS, 0

            def getTxRxResult(self, result):
                return "[TxRxResult] Communication success!" if result == COMM_SUCCESS else \
                    "[TxRxResult] There is no status packet!"

            def getRxPacketError(self, error):
                return f"[RxPacketError] error bits {error:#04x}"

        class GroupSyncRead:
            def __init__(self, port, ph, start_address, data_length):
                self.start_address, self.data_length = start_address, data_length
                self.ids: list[int] = []
                self.data: dict[int, bytes] = {}

            def addParam(self, motor_id) -> bool:
                if motor_id in self.ids:
                    return False
                self.ids.append(motor_id)
                return True

            def txRxPacket(self) -> int:
                bus.log.record("sync_read", self.start_address, self.data_length, tuple(self.ids))
                self.data = {}
                for motor_id in self.ids:
                    if not bus._answers(motor_id):
                        return bus.rx_timeout
                    a = self.start_address
                    self.data[motor_id] = bytes(bus.memory[motor_id][a:a + self.data_length])
                return COMM_SUCCESS

            def isAvailable(self, motor_id, address, data_length) -> bool:
                return (motor_id in self.data and address >= self.start_address
                        and address + data_length <= self.start_address + self.data_length)

            def getData(self, motor_id, address, data_length) -> int:
                if not self.isAvailable(motor_id, address, data_length):
                    return 0
                offset = address - self.start_address
                return int.from_bytes(self.data[motor_id][offset:offset + data_length], "little")

        class GroupSyncWrite:
            def __init__(self, port, ph, start_address, data_length):
                self.start_address, self.data_length = start_address, data_length
                self.params: dict[int, list[int]] = {}

            def addParam(self, motor_id, data) -> bool:
                if motor_id in self.params or len(data) > self.data_length:
                    return False
                self.params[motor_id] = list(data)
                return True

            def clearParam(self) -> None:
                self.params = {}

            def txPacket(self) -> int:
                # a sync write is a broadcast: no status packet, so nothing tells the host that a motor is missing
                bus.log.record("sync_write", self.start_address, self.data_length, dict(self.params))
                if not bus.port_open:
                    return -1001  # COMM_TX_FAIL
                for motor_id, data in self.params.items():
                    if motor_id in bus.models:
                        bus._write(motor_id, self.start_address, data)
                return COMM_SUCCESS

        return SimpleNamespace(PortHandler=PortHandler, PacketHandler=PacketHandler, GroupSyncRead=GroupSyncRead,
                               GroupSyncWrite=GroupSyncWrite, COMM_SUCCESS=COMM_SUCCESS, COMM_RX_TIMEOUT=self.rx_timeout)


# ---------------------------------------------------------------- franky (Franka)

class FakeFranka:
    """A Franka arm behind franky's Python API. A motion stays active for `motion_s` after `move`; like franky,
    preempting an active motion with one of another control type raises, and a robot in a reflex refuses moves."""

    class InvalidMotionTypeException(RuntimeError):
        pass

    class ControlException(RuntimeError):
        pass

    def __init__(self, host: str = "172.16.0.2", motion_s: float = 0.05, max_width: float = 0.08):
        self.host = host
        self.log = CallLog()
        self.motion_s = motion_s
        self.q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
        self.dq = np.zeros(7)
        self.translation = np.array([0.307, 0.0, 0.487])
        self.quaternion = np.array([1.0, 0.0, 0.0, 0.0])  # x, y, z, w: flange pointing down
        self.width, self.max_width = max_width, max_width
        self.in_reflex = False
        self.dynamics_factor = 1.0
        self._active: tuple[str, float] | None = None  # (motion type, end time)

    def sdk(self) -> SimpleNamespace:
        fake = self

        class ReferenceType:
            Absolute = "Absolute"
            Relative = "Relative"

        class Affine:
            def __init__(self, translation=(0.0, 0.0, 0.0), quaternion=(0.0, 0.0, 0.0, 1.0)):
                self.translation = np.asarray(translation, float)
                self.quaternion = np.asarray(quaternion, float)

        class JointMotion:
            def __init__(self, target, reference_type=ReferenceType.Absolute, relative_dynamics_factor=1.0,
                         return_when_finished=True):
                if len(target) != 7:
                    raise TypeError("JointMotion target must have 7 values")
                self.target, self.reference_type = np.asarray(target, float), reference_type

        class CartesianMotion:
            def __init__(self, target, reference_type=ReferenceType.Absolute, relative_dynamics_factor=1.0,
                         return_when_finished=True, ee_frame=None):
                self.target, self.reference_type = target, reference_type

        class Robot:
            def __init__(self, fci_hostname: str, relative_dynamics_factor=1.0, **kw):
                if fci_hostname != fake.host:
                    raise RuntimeError(f"libfranka: Connection to FCI failed: {fci_hostname}: connection timeout")
                fake.log.record("Robot", fci_hostname)

            @property
            def relative_dynamics_factor(self):
                return fake.dynamics_factor

            @relative_dynamics_factor.setter
            def relative_dynamics_factor(self, value):
                if not 0 < value <= 1:
                    raise ValueError("relative dynamics factor must be in (0, 1]")
                fake.log.record("relative_dynamics_factor", value)
                fake.dynamics_factor = value

            def recover_from_errors(self):
                fake.log.record("recover_from_errors")
                fake.in_reflex = False

            def move(self, motion, asynchronous=False, limit_rate=False, cutoff_frequency=100.0):
                kind = "joint" if isinstance(motion, JointMotion) else "cartesian"
                fake.log.record("move", motion, asynchronous)
                if fake.in_reflex:
                    raise FakeFranka.ControlException("Motion aborted by reflex! [cartesian_reflex]")
                now = time.monotonic()
                if fake._active is not None and fake._active[1] > now and fake._active[0] != kind:
                    raise FakeFranka.InvalidMotionTypeException("The type of motion cannot change during runtime")
                fake._active = (kind, now + fake.motion_s)
                if kind == "joint":
                    fake.q = motion.target.copy()
                else:
                    fake.translation, fake.quaternion = motion.target.translation.copy(), motion.target.quaternion.copy()

            def join_motion(self, timeout=None):
                fake.log.record("join_motion", timeout)
                if fake._active is not None:
                    sleep_until(fake._active[1])
                fake._active = None
                return True

            def stop(self):
                fake.log.record("stop")
                fake._active = None

            @property
            def current_joint_state(self):
                return SimpleNamespace(position=fake.q.copy(), velocity=fake.dq.copy())

            @property
            def current_cartesian_state(self):
                pose = SimpleNamespace(end_effector_pose=Affine(fake.translation.copy(), fake.quaternion.copy()))
                return SimpleNamespace(pose=pose)

        class Gripper:
            def __init__(self, fci_hostname: str):
                fake.log.record("Gripper", fci_hostname)

            @property
            def width(self):
                return fake.width

            @property
            def max_width(self):
                return fake.max_width

            def grasp_async(self, width, speed, force, epsilon_inner=0.005, epsilon_outer=0.005):
                fake.log.record("grasp_async", width, speed, force, epsilon_inner, epsilon_outer)
                fake.width = 0.02  # closed on a 2 cm object

            def open_async(self, speed):
                fake.log.record("open_async", speed)
                fake.width = fake.max_width

        return SimpleNamespace(Robot=Robot, Gripper=Gripper, JointMotion=JointMotion, CartesianMotion=CartesianMotion,
                               Affine=Affine, ReferenceType=ReferenceType)


# ---------------------------------------------------------------- cv2.VideoCapture (UVC camera)

class FakeVideoDevice:
    """A UVC camera as cv2.VideoCapture sees it: it opens only as `device`, picks the requested size when it has
    that mode (else its first mode, as V4L2 does), and `read()` blocks until its next frame is exposed at `fps`.
    Frame k is BGR (10, 20, k % 256). After `frames_before_silence` frames it stops delivering (unplugged)."""

    def __init__(self, device: int | str = 0, modes: tuple[tuple[int, int], ...] = ((64, 48), (32, 24)), fps: float = 30.0,
                 frames_before_silence: int | None = None):
        self.device, self.modes, self.fps = device, modes, fps
        self.frames_before_silence = frames_before_silence
        self.log = CallLog()
        self.released = False

    def cv2(self) -> SimpleNamespace:
        import cv2

        dev = self

        class VideoCapture:
            def __init__(self, index_or_path, api_preference: int | None = None):
                dev.log.record("VideoCapture", index_or_path, api_preference)
                self.opened = index_or_path == dev.device
                self.requested = [None, None]
                self.size = dev.modes[0]
                self.k = 0
                self.t0: float | None = None

            def isOpened(self) -> bool:
                return self.opened

            def set(self, prop: int, value: float) -> bool:
                dev.log.record("set", prop, value)
                if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
                    self.requested[prop == cv2.CAP_PROP_FRAME_HEIGHT] = int(value)
                    wanted = tuple(self.requested)
                    if wanted in dev.modes:
                        self.size = wanted
                return True

            def get(self, prop: int) -> float:
                return {cv2.CAP_PROP_FPS: dev.fps, cv2.CAP_PROP_FRAME_WIDTH: self.size[0],
                        cv2.CAP_PROP_FRAME_HEIGHT: self.size[1]}.get(prop, 0.0)

            def read(self):
                if self.t0 is None:
                    self.t0 = time.monotonic()
                sleep_until(self.t0 + self.k / dev.fps)
                if dev.frames_before_silence is not None and self.k >= dev.frames_before_silence:
                    return False, None
                w, h = self.size
                frame = np.empty((h, w, 3), np.uint8)
                frame[...] = (10, 20, self.k % 256)
                self.k += 1
                dev.log.record("frame", self.k)
                return True, frame

            def release(self) -> None:
                dev.released = True

        return SimpleNamespace(VideoCapture=VideoCapture, cvtColor=cv2.cvtColor, COLOR_BGR2RGB=cv2.COLOR_BGR2RGB,
                               CAP_PROP_FRAME_WIDTH=cv2.CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT=cv2.CAP_PROP_FRAME_HEIGHT,
                               CAP_PROP_FPS=cv2.CAP_PROP_FPS, CAP_PROP_FOURCC=cv2.CAP_PROP_FOURCC,
                               VideoWriter_fourcc=cv2.VideoWriter_fourcc)


# ---------------------------------------------------------------- pyrealsense2

class FakeRealSense:
    """pyrealsense2's pipeline/config API over one simulated D4xx: colour RGB8 frames k with value (k % 256, 1, 2),
    depth Z16 = 1000 + k units at `depth_scale` m/unit, paced at the configured fps."""

    def __init__(self, serial: str = "123456789012", modes: tuple[tuple[int, int, int], ...] = ((64, 48, 30), (64, 48, 15)),
                 depth_scale: float = 0.001):
        self.serial, self.modes, self.depth_scale = serial, modes, depth_scale
        self.log = CallLog()

    def sdk(self) -> SimpleNamespace:
        fake = self
        stream = SimpleNamespace(color="color", depth="depth")
        fmt = SimpleNamespace(rgb8="rgb8", z16="z16", bgr8="bgr8")
        camera_info = SimpleNamespace(serial_number="serial_number")

        class Device:
            def get_info(self, info):
                return fake.serial

            def first_depth_sensor(self):
                return SimpleNamespace(get_depth_scale=lambda: fake.depth_scale)

        class context:
            def query_devices(self):
                return [Device()]

        class config:
            def __init__(self):
                self.device, self.streams = None, {}

            def enable_device(self, serial):
                fake.log.record("enable_device", serial)
                self.device = serial

            def enable_stream(self, stream_type, width, height, format, framerate):
                fake.log.record("enable_stream", stream_type, width, height, format, framerate)
                self.streams[stream_type] = (width, height, format, framerate)

            def can_resolve(self, wrapper) -> bool:
                ok_format = {"color": ("rgb8", "bgr8"), "depth": ("z16",)}
                return self.device == fake.serial and all(
                    (w, h, r) in fake.modes and f in ok_format[s] for s, (w, h, f, r) in self.streams.items())

        class Frame:
            def __init__(self, data):
                self.data = data

            def get_data(self):
                return self.data

            def __bool__(self):
                return self.data is not None

        class Frameset:
            def __init__(self, color, depth, aligned=False):
                self.color, self.depth, self.aligned = color, depth, aligned

            def get_color_frame(self):
                return Frame(self.color)

            def get_depth_frame(self):
                return Frame(self.depth)

        class pipeline:
            def __init__(self):
                self.k, self.t0, self.config = 0, None, None

            def start(self, cfg):
                fake.log.record("start")
                self.config, self.t0 = cfg, time.monotonic()
                return SimpleNamespace(get_device=Device)

            def stop(self):
                fake.log.record("stop")

            def try_wait_for_frames(self, timeout_ms=5000):
                w, h, _, fps = self.config.streams["color"]
                sleep_until(self.t0 + self.k / fps)
                color = np.empty((h, w, 3), np.uint8)
                color[...] = (self.k % 256, 1, 2)
                depth = np.full((h, w), 1000 + self.k, np.uint16) if "depth" in self.config.streams else None
                self.k += 1
                return True, Frameset(color, depth)

        class align:
            def __init__(self, align_to):
                fake.log.record("align", align_to)

            def process(self, frames):
                return Frameset(frames.color, frames.depth, aligned=True)

        return SimpleNamespace(context=context, config=config, pipeline=pipeline, pipeline_wrapper=lambda p: p, align=align,
                               stream=stream, format=fmt, camera_info=camera_info)


# ---------------------------------------------------------------- pynput.keyboard

class FakeKeyboard:
    """`pynput.keyboard` with a Listener whose callbacks the test fires: `press("w")`, `release(Key.space)`.
    Like pynput, callbacks get (key, injected); Key members carry a `name`, KeyCodes a `char`."""

    def __init__(self):
        self.log = CallLog()
        self.listener: Any = None
        names = ("space", "esc", "shift", "enter", "up", "down")
        self.Key = SimpleNamespace(**{n: SimpleNamespace(name=n) for n in names})

    def KeyCode(self, char: str) -> SimpleNamespace:
        return SimpleNamespace(char=char, vk=ord(char))

    def sdk(self) -> SimpleNamespace:
        fake = self

        class Listener:
            def __init__(self, on_press=None, on_release=None, suppress=False, **kwargs):
                self.on_press, self.on_release = on_press, on_release
                fake.listener = self

            def start(self):
                fake.log.record("start")

            def wait(self):
                fake.log.record("wait")

            def stop(self):
                fake.log.record("stop")

        return SimpleNamespace(Listener=Listener, Key=self.Key, KeyCode=self.KeyCode)

    def _key(self, key):
        return self.KeyCode(key) if isinstance(key, str) else key

    def press(self, key) -> None:
        self.listener.on_press(self._key(key), False)

    def release(self, key) -> None:
        self.listener.on_release(self._key(key), False)


# ---------------------------------------------------------------- pyspacemouse

class FakeSpaceMouse:
    """pyspacemouse 2.x: `open(...)` returns a device whose nonblocking `read()` applies at most one queued report
    and returns the current state. `legacy=True` models a version without axis conventions, reporting its legacy
    layout (pitch = -HID Rx, roll = -HID Ry, yaw = +HID Rz); otherwise HID_Z_UP must be asked for."""

    def __init__(self, legacy: bool = False, present: bool = True):
        self.legacy, self.present = legacy, present
        self.log = CallLog()
        self.reports: list[dict] = []
        self.lock = threading.Lock()
        self.state = SimpleNamespace(t=-1.0, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
        self.unplugged = False

    def push(self, x=0.0, y=0.0, z=0.0, rx=0.0, ry=0.0, rz=0.0, buttons=(0, 0)) -> None:
        """Queue a report given in the z-up frame (rx, ry, rz: rotations about +x, +y, +z)."""
        with self.lock:
            self.reports.append(dict(x=x, y=y, z=z, rx=rx, ry=ry, rz=rz, buttons=list(buttons)))

    def drained(self) -> bool:
        with self.lock:
            return not self.reports

    def sdk(self) -> SimpleNamespace:
        fake = self

        class Device:
            def read(self):
                if fake.unplugged:
                    raise OSError("read error: device disconnected")
                with fake.lock:
                    if fake.reports:
                        r = fake.reports.pop(0)
                        s = fake.state
                        s.t, s.x, s.y, s.z, s.buttons = time.monotonic(), r["x"], r["y"], r["z"], r["buttons"]
                        if fake.legacy:  # z-up rotations back to the legacy labels
                            s.roll, s.pitch, s.yaw = r["ry"], -r["rx"], -r["rz"]
                        else:
                            s.roll, s.pitch, s.yaw = r["rx"], r["ry"], r["rz"]
                    return SimpleNamespace(**vars(fake.state))

            def get_button_name(self, index):
                return ("LEFT", "RIGHT")[index] if index < 2 else f"BUTTON_{index}"

            def close(self):
                fake.log.record("close")

        def open(callback=None, dof_callback=None, dof_callbacks=None, button_callback=None, button_callbacks=None,
                 nonblocking=True, device=None, device_index=0, device_spec=None, **kw):
            fake.log.record("open", device, kw.get("axis_convention"))
            if not fake.present:
                raise RuntimeError("No connected or supported devices found.")
            if not fake.legacy and kw.get("axis_convention") is None:
                raise AssertionError("the driver must ask for a z-up convention")
            return Device()

        sdk = SimpleNamespace(open=open)
        if not self.legacy:
            sdk.AxisConvention = SimpleNamespace(LEGACY="legacy", HID="hid", HID_Z_UP="hid_z_up")
        return sdk
