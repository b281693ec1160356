"""3Dconnexion SpaceMouse teleoperation through `pyspacemouse` (raw HID via hidapi/easyhid).

Each `device.read()` of pyspacemouse processes at most one HID report, so a background thread drains the device
and keeps the latest state; `read()` turns it into a command without blocking. Each of the six axes (nominally
-1..1, clipped there) goes through a deadband that removes the puck's rest noise and rescales the remainder to
stay continuous (|v| < d -> 0, else sign(v) (|v| - d) / (1 - d)), then scales to `max_linear` m/s or
`max_angular` rad/s. Axes are taken in a right-handed z-up device frame (x right, y away from the user, z up;
pyspacemouse's `AxisConvention.HID_Z_UP`, converted here from its legacy layout when the installed version has no
conventions) and rotated into the robot base frame by `device_to_base`. A press of `gripper_button` (rising edge,
seen by the thread, so short presses are not missed between reads) toggles the gripper.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from robolearn.hal.drivers.sdk import import_sdk
from robolearn.hal.teleop import TeleopCommand


def deadband(values: np.ndarray, width: float) -> np.ndarray:
    """Zero inside +-width, linear from 0 at the edge to +-1 at full deflection."""
    v = np.clip(values, -1.0, 1.0)
    return np.sign(v) * np.maximum(np.abs(v) - width, 0.0) / (1.0 - width)


class SpaceMouseTeleop:
    """A `Teleop` from a SpaceMouse; `read()` never blocks."""

    def __init__(self, max_linear: float = 0.1, max_angular: float = 0.5, deadband: float = 0.1, gripper_button: int = 0,
                 device: str | None = None, device_to_base: Sequence[Sequence[float]] | None = None, poll_s: float = 0.002,
                 name: str = "spacemouse", sdk: Any = None):
        """`device` is a pyspacemouse device name (None: the first one found). `device_to_base` is the 3x3 rotation
        from the device frame to the robot base frame (identity: the user faces the robot's +y). `sdk` replaces the
        pyspacemouse module, for tests."""
        if max_linear <= 0 or max_angular <= 0:
            raise ValueError(f"max speeds must be positive, got linear {max_linear}, angular {max_angular}")
        if not 0 <= deadband < 1:
            raise ValueError(f"deadband must be in [0, 1), got {deadband}")
        rotation = np.eye(3) if device_to_base is None else np.asarray(device_to_base, dtype=np.float64)
        if rotation.shape != (3, 3) or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) \
                or not np.isclose(np.linalg.det(rotation), 1.0, atol=1e-6):
            raise ValueError(f"device_to_base must be a 3x3 rotation matrix, got {rotation.tolist()}")
        self.max_linear, self.max_angular, self.deadband = max_linear, max_angular, deadband
        self.gripper_button = gripper_button
        self.device = device
        self.device_to_base = rotation
        self.poll_s = poll_s
        self.name = name
        self._sdk = sdk
        self._mouse: Any = None
        self._legacy_axes = False
        self._lock = threading.Lock()
        self._axes = np.zeros(6)  # x, y, z, roll, pitch, yaw in the z-up device frame
        self._buttons: list[int] = []
        self._gripper = 0.0
        self._error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self) -> None:
        if self._mouse is not None:
            return
        sdk = self._sdk or import_sdk("pyspacemouse", "pyspacemouse", "SpaceMouseTeleop")
        kwargs: dict[str, Any] = {"device": self.device}
        conventions = getattr(sdk, "AxisConvention", None)
        self._legacy_axes = conventions is None or not hasattr(conventions, "HID_Z_UP")
        if not self._legacy_axes:
            kwargs["axis_convention"] = conventions.HID_Z_UP
        try:
            mouse = sdk.open(**kwargs)
        except (RuntimeError, ValueError, OSError) as e:
            raise ConnectionError(f"no SpaceMouse could be opened ({e}); check the USB receiver and, on Linux, read access "
                                  "to /dev/hidraw* (a udev rule for the plugdev group)") from e
        if not mouse:  # pyspacemouse < 2 returns None instead of raising
            raise ConnectionError("no SpaceMouse found: check the USB receiver and access to /dev/hidraw*")
        self._mouse = mouse
        self._error = None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        if self._mouse is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._mouse.close()
        self._mouse = None

    def read(self) -> TeleopCommand:
        if self._mouse is None:
            raise RuntimeError(f"teleop {self.name!r} is not connected: call connect() first")
        with self._lock:
            if self._error is not None:
                raise RuntimeError(self._error)
            axes, buttons, gripper = self._axes.copy(), list(self._buttons), self._gripper
        shaped = deadband(axes, self.deadband)
        velocity = np.concatenate([self.device_to_base @ shaped[:3] * self.max_linear,
                                   self.device_to_base @ shaped[3:] * self.max_angular])
        names = {self._button_name(i): bool(b) for i, b in enumerate(buttons)}
        return TeleopCommand(ee_velocity=velocity, gripper=gripper, buttons=names, timestamp=time.monotonic())

    def _run(self) -> None:
        previous = False
        while not self._stopping.is_set():
            try:
                state = self._mouse.read()
            except Exception as e:  # unplugged: tell the loop on its next read instead of freezing the last motion
                with self._lock:
                    self._error = f"SpaceMouse read failed: {type(e).__name__}: {e}"
                    self._axes[:] = 0.0
                return
            axes = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=np.float64)
            if self._legacy_axes:  # legacy layout: pitch = -HID Rx, roll = -HID Ry, yaw = +HID Rz
                axes[3:] = (-state.pitch, state.roll, -state.yaw)
            buttons = list(state.buttons)
            pressed = len(buttons) > self.gripper_button and bool(buttons[self.gripper_button])
            with self._lock:
                self._axes, self._buttons = axes, buttons
                if pressed and not previous:
                    self._gripper = 1.0 - self._gripper
            previous = pressed
            self._stopping.wait(self.poll_s)

    def _button_name(self, index: int) -> str:
        get = getattr(self._mouse, "get_button_name", None)
        return get(index) if get is not None else f"button_{index}"
