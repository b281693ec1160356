"""KeyboardTeleop and SpaceMouseTeleop fed with fake key and HID events."""
import time

import numpy as np
import pytest
from fake_sdks import FakeKeyboard, FakeSpaceMouse

from robolearn.hal.drivers.keyboard_teleop import KeyboardTeleop
from robolearn.hal.drivers.spacemouse_teleop import SpaceMouseTeleop, deadband
from robolearn.hal.teleop import Teleop


def test_keyboard_held_keys_become_velocities_and_space_toggles_the_gripper():
    kb = FakeKeyboard()
    teleop = KeyboardTeleop(linear_speed=0.05, angular_speed=0.3, sdk=kb.sdk())
    assert isinstance(teleop, Teleop)
    teleop.connect()
    assert kb.log.names() == ["start", "wait"]
    np.testing.assert_array_equal(teleop.read().ee_velocity, np.zeros(6))
    kb.press("w")
    kb.press("D")  # with shift held: still d
    kb.press("o")
    cmd = teleop.read()
    np.testing.assert_allclose(cmd.ee_velocity, [0.05, -0.05, 0, 0, 0, 0.3])
    assert cmd.buttons == {"d": True, "o": True, "w": True}
    kb.press("s")  # opposite of w: cancels
    assert teleop.read().ee_velocity[0] == 0.0
    kb.release("w")
    kb.release("s")
    kb.release("D")
    kb.release("o")
    np.testing.assert_array_equal(teleop.read().ee_velocity, np.zeros(6))
    assert teleop.read().gripper == 0.0
    kb.press(kb.Key.space)
    kb.press(kb.Key.space)  # auto-repeat while held: no second toggle
    assert teleop.read().gripper == 1.0 and teleop.read().buttons == {"space": True}
    kb.release(kb.Key.space)
    kb.press(kb.Key.space)
    kb.release(kb.Key.space)
    assert teleop.read().gripper == 0.0
    kb.press(None)  # a key pynput cannot name
    kb.press(kb.Key.esc)
    assert teleop.read().buttons == {"esc": True}
    teleop.disconnect()
    assert kb.log.names()[-1] == "stop"


def test_keyboard_errors():
    with pytest.raises(ValueError, match="also bound"):
        KeyboardTeleop(gripper_key="w")
    with pytest.raises(ValueError, match="component 0..5"):
        KeyboardTeleop(bindings={"x": (6, 1.0)})
    with pytest.raises(RuntimeError, match="connect"):
        KeyboardTeleop(sdk=FakeKeyboard().sdk()).read()
    with pytest.raises(ImportError, match="pynput"):  # installed here, but there is no X display to listen to
        KeyboardTeleop().connect()


def _wait_drained(mouse: FakeSpaceMouse) -> None:
    deadline = time.monotonic() + 1.0
    while not mouse.drained() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.01)


@pytest.mark.parametrize("legacy", [False, True])
def test_spacemouse_axes_deadband_scaling_and_frame(legacy):
    mouse = FakeSpaceMouse(legacy=legacy)
    teleop = SpaceMouseTeleop(max_linear=0.2, max_angular=1.0, deadband=0.1, sdk=mouse.sdk())
    assert isinstance(teleop, Teleop)
    teleop.connect()
    assert mouse.log.named("open")[0].args == (None, None if legacy else "hid_z_up")
    mouse.push(x=0.05, y=-0.55, z=1.3, rx=0.325, ry=-1.0, rz=0.1)
    _wait_drained(mouse)
    cmd = teleop.read()
    # 0.05 is in the deadband; -0.55 -> -(0.45 / 0.9) = -0.5; 1.3 clips to 1; rotations in the z-up frame either way
    np.testing.assert_allclose(cmd.ee_velocity, [0.0, -0.1, 0.2, 0.25, -1.0, 0.0], atol=1e-12)
    teleop.disconnect()
    assert mouse.log.names()[-1] == "close"


def test_spacemouse_button_press_toggles_gripper_even_between_reads():
    mouse = FakeSpaceMouse()
    teleop = SpaceMouseTeleop(sdk=mouse.sdk(), device_to_base=[[0, -1, 0], [1, 0, 0], [0, 0, 1]])  # user on the robot's +x side
    teleop.connect()
    mouse.push(buttons=(1, 0))
    mouse.push(buttons=(0, 0))  # a short press, over before the next read
    mouse.push(y=1.0, buttons=(0, 1))
    _wait_drained(mouse)
    cmd = teleop.read()
    assert cmd.gripper == 1.0 and cmd.buttons == {"LEFT": False, "RIGHT": True}
    np.testing.assert_allclose(cmd.ee_velocity[:3], [-0.1, 0.0, 0.0])  # device +y is base -x
    mouse.push(buttons=(1, 0))
    _wait_drained(mouse)
    assert teleop.read().gripper == 0.0
    mouse.unplugged = True
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="disconnected"):
        teleop.read()
    teleop.disconnect()


def test_spacemouse_errors_and_deadband_shape():
    with pytest.raises(ConnectionError, match="hidraw"):
        SpaceMouseTeleop(sdk=FakeSpaceMouse(present=False).sdk()).connect()
    with pytest.raises(ValueError, match="rotation"):
        SpaceMouseTeleop(device_to_base=np.diag([1, 1, -1]))
    with pytest.raises(ValueError, match="deadband"):
        SpaceMouseTeleop(deadband=1.0)
    with pytest.raises(ImportError, match=r"robolearn\[hardware\].*pyspacemouse"):
        SpaceMouseTeleop().connect()
    v = deadband(np.linspace(-1.2, 1.2, 241), 0.2)
    assert v[0] == -1.0 and v[-1] == 1.0 and np.all(np.diff(v) >= 0)
    assert np.all(v[np.abs(np.linspace(-1.2, 1.2, 241)) <= 0.2] == 0)
    assert np.max(np.abs(np.diff(v))) <= 0.01 / 0.8 + 1e-12  # continuous: no jump at the deadband edge
