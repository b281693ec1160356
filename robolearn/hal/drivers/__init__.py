"""Drivers behind the hal protocols. Vendor SDKs are optional (`pip install 'robolearn[hardware]'`) and imported
only when a driver connects, so importing this package never needs them."""
from robolearn.hal.drivers.bus_arm import ArmCalibration, BusArm, GripperCalibration, MotorCalibration
from robolearn.hal.drivers.franka import FrankaRobot
from robolearn.hal.drivers.keyboard_teleop import KeyboardTeleop
from robolearn.hal.drivers.kinematic_chain import ChainJoint, KinematicChain
from robolearn.hal.drivers.opencv_camera import OpenCVCamera
from robolearn.hal.drivers.realsense_camera import RealSenseCamera, RGBDFrame
from robolearn.hal.drivers.sim_arm import SimulatedArm, SimulatedCamera
from robolearn.hal.drivers.spacemouse_teleop import SpaceMouseTeleop
from robolearn.hal.drivers.ur_rtde import URRobot

__all__ = [
    "ArmCalibration", "BusArm", "ChainJoint", "FrankaRobot", "GripperCalibration", "KeyboardTeleop", "KinematicChain",
    "MotorCalibration", "OpenCVCamera", "RealSenseCamera", "RGBDFrame", "SimulatedArm",
    "SimulatedCamera", "SpaceMouseTeleop", "URRobot",
]
