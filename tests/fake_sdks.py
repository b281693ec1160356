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
