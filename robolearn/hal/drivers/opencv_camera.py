"""USB/UVC cameras (and video files standing in for them) through OpenCV's `cv2.VideoCapture`.

`connect()` opens the device, asks for the size and rate, and grabs one frame: a camera that silently falls back
to another size is an error, not a surprise in the dataset. A background reader (see `frame_reader`) then keeps
the newest frame, converted from OpenCV's BGR to RGB and stamped with `time.monotonic()` when the read returned.
A path to a video file plays at `fps` as if live and ends with an error after its last frame.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.hal.camera import Frame
from robolearn.hal.drivers.frame_reader import FrameReader


class OpenCVCamera:
    """A `Camera` over `cv2.VideoCapture(device)`; `device` is an index (/dev/videoN), a device path or a file."""

    def __init__(self, device: int | str, width: int, height: int, fps: float, name: str | None = None,
                 backend: int | None = None, fourcc: str | None = None, stall_timeout_s: float = 2.0, sdk: Any = None):
        """`backend` is a cv2.CAP_* API preference (e.g. cv2.CAP_V4L2); `fourcc` a pixel format to request, e.g.
        "MJPG", which many UVC cameras need for full resolution at 30 fps. `sdk` replaces the cv2 module, for tests."""
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"camera size and rate must be positive, got {width}x{height} at {fps} fps")
        if fourcc is not None and len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters such as 'MJPG', got {fourcc!r}")
        self.device = device
        self.name = name or f"opencv_{device}"
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.backend = backend
        self.fourcc = fourcc
        self.stall_timeout_s = stall_timeout_s
        self.reported_fps: float | None = None  # what the driver says it runs at, after connect
        self._sdk = sdk
        self._cv2: Any = None
        self._cap: Any = None
        self._is_file = False
        self._reader: FrameReader | None = None

    def connect(self) -> None:
        if self._cap is not None:
            return
        cv2 = self._sdk if self._sdk is not None else _import_cv2()
        is_file = self._is_file = isinstance(self.device, str) and Path(self.device).is_file()
        cap = cv2.VideoCapture(self.device) if self.backend is None else cv2.VideoCapture(self.device, self.backend)
        if not cap.isOpened():
            cap.release()
            raise ConnectionError(f"camera {self.name!r}: OpenCV cannot open {self.device!r}. Check that it is plugged in "
                                  "(ls /dev/video*), that your user may read it (video group) and that no other program "
                                  "holds it")
        if not is_file:
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cv2, self._cap = cv2, cap
        try:
            first = self._grab(1)
            if first is None:
                raise ConnectionError(f"camera {self.name!r} opened {self.device!r} but delivered no frame")
        except Exception:
            self._release()
            raise
        self.reported_fps = float(cap.get(cv2.CAP_PROP_FPS))
        self._reader = FrameReader(self.name, self._grab, self.stall_timeout_s, pace_hz=self.fps if is_file else None)
        self._reader.start(first)

    def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        self._release()

    def read(self, timeout_s: float = 1.0) -> Frame:
        return self._require_reader().read(timeout_s)

    def latest(self) -> Frame:
        return self._require_reader().latest()

    def _grab(self, index: int) -> Frame | None:
        ok, bgr = self._cap.read()
        t = time.monotonic()
        if not ok or bgr is None:
            if self._is_file:
                raise EOFError(f"video file {self.device} has no frame {index}")
            return None
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"camera {self.name!r} delivers {bgr.dtype} frames of shape {bgr.shape}, not 8-bit colour")
        h, w = bgr.shape[:2]
        if (w, h) != (self.width, self.height):
            raise ValueError(f"camera {self.name!r} delivers {w}x{h} frames, not the requested {self.width}x{self.height}: "
                             "ask for a size it supports (v4l2-ctl --list-formats-ext) or set fourcc='MJPG'")
        return Frame(image=self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB), timestamp=t, index=index)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _require_reader(self) -> FrameReader:
        if self._reader is None:
            raise RuntimeError(f"camera {self.name!r} is not connected: call connect() first")
        return self._reader


def _import_cv2() -> Any:
    import cv2  # a core dependency (opencv-python), imported on connect to keep `import robolearn` light

    return cv2
