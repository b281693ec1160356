"""The `Camera` protocol: frames are uint8 HxWx3 RGB with the monotonic time they were captured."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    timestamp: float  # time.monotonic() at capture
    index: int  # frames captured since connect; a repeated index means no new frame


@runtime_checkable
class Camera(Protocol):
    name: str
    width: int
    height: int
    fps: float

    def connect(self) -> None: ...  # opens the device and starts a background reader

    def read(self, timeout_s: float = 1.0) -> Frame: ...  # blocks until a frame newer than the last read arrives

    def latest(self) -> Frame: ...  # the newest frame without waiting (the control loop's call)

    def disconnect(self) -> None: ...
