"""Keyboard teleoperation through `pynput`: held keys drive the end effector at a fixed speed.

Bindings (base frame; opposite keys held together cancel):

    w / s   +x / -x        u / j   +roll  / -roll   (about x)
    a / d   +y / -y        i / k   +pitch / -pitch  (about y)
    r / f   +z / -z        o / l   +yaw   / -yaw    (about z)
    space   toggle the gripper (open <-> closed), once per press

Every key held is also reported in `TeleopCommand.buttons` by name ("w", "space", "esc", ...), so a recording
loop can map e.g. "esc" to ending the episode. pynput listens to the whole desktop (an X display on Linux, or
its uinput backend as root): the robot moves whatever window has focus.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from robolearn.hal.drivers.sdk import import_sdk
from robolearn.hal.teleop import TeleopCommand

# key -> (velocity component 0..5 = vx, vy, vz, wx, wy, wz; direction)
KEY_BINDINGS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "j": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "o": (5, 1.0), "l": (5, -1.0),
}


class KeyboardTeleop:
    """A `Teleop` from the keyboard; `read()` never blocks."""

    def __init__(self, linear_speed: float = 0.05, angular_speed: float = 0.3,
                 bindings: Mapping[str, tuple[int, float]] = KEY_BINDINGS, gripper_key: str = "space", name: str = "keyboard",
                 sdk: Any = None):
        """Speeds in m/s and rad/s. `sdk` replaces the `pynput.keyboard` module, for tests."""
        if linear_speed <= 0 or angular_speed <= 0:
            raise ValueError(f"speeds must be positive, got linear {linear_speed}, angular {angular_speed}")
        bad = {k: v for k, v in bindings.items() if not (0 <= v[0] <= 5 and v[1] in (1.0, -1.0))}
        if bad:
            raise ValueError(f"bindings map a key to (component 0..5, direction +-1), got {bad}")
        if gripper_key in bindings:
            raise ValueError(f"gripper_key {gripper_key!r} is also bound to motion")
        self.linear_speed, self.angular_speed = linear_speed, angular_speed
        self.bindings = dict(bindings)
        self.gripper_key = gripper_key
        self.name = name
        self._sdk = sdk
        self._listener: Any = None
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._gripper = 0.0

    def connect(self) -> None:
        if self._listener is not None:
            return
        keyboard = self._sdk or import_sdk("pynput.keyboard", "pynput", "KeyboardTeleop")
        self._held.clear()
        self._listener = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
        self._listener.start()
        self._listener.wait()  # returns once the listener receives events

    def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def read(self) -> TeleopCommand:
        if self._listener is None:
            raise RuntimeError(f"teleop {self.name!r} is not connected: call connect() first")
        with self._lock:
            held, gripper = set(self._held), self._gripper
        velocity = np.zeros(6)
        for key in held:
            if key in self.bindings:
                component, direction = self.bindings[key]
                velocity[component] += direction
        velocity[:3] *= self.linear_speed
        velocity[3:] *= self.angular_speed
        return TeleopCommand(ee_velocity=velocity, gripper=gripper, buttons={k: True for k in sorted(held)},
                             timestamp=time.monotonic())

    # pynput calls these from its listener thread with (key, injected); key is None for keys it cannot name
    def _on_press(self, key: Any, injected: bool = False) -> None:
        name = _key_name(key)
        if name is None:
            return
        with self._lock:
            if name == self.gripper_key and name not in self._held:  # auto-repeat sends presses while held
                self._gripper = 1.0 - self._gripper
            self._held.add(name)

    def _on_release(self, key: Any, injected: bool = False) -> None:
        name = _key_name(key)
        with self._lock:
            self._held.discard(name)


def _key_name(key: Any) -> str | None:
    """"w" for KeyCode(char='w') (and 'W' with shift), "space" for Key.space, None when pynput could not name it."""
    if key is None:
        return None
    char = getattr(key, "char", None)
    if char:
        return char.lower()
    name = getattr(key, "name", None)
    return name or None
