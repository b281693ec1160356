"""Drivers behind the hal protocols. Vendor SDKs are optional (`pip install 'robolearn[hardware]'`) and imported
only when a driver connects, so importing this package never needs them."""
from robolearn.hal.drivers.ur_rtde import URRobot

__all__ = ["URRobot"]
