"""Intel RealSense cameras through `pyrealsense2` (pipeline + config), optionally with depth aligned to colour.

The colour stream is requested as RGB8 (no BGR swap needed). With `depth=True` a Z16 depth stream of the same
size is enabled and aligned to the colour image with `rs.align`, and frames carry `depth` in metres (float32,
0 where the sensor has no reading), using the device's depth scale. Unsupported size/rate combinations are
caught with `config.can_resolve` before streaming starts, and a wrong serial lists the connected ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.hal.camera import Frame
from robolearn.hal.drivers.frame_reader import FrameReader
from robolearn.hal.drivers.sdk import import_sdk


@dataclass(frozen=True)
class RGBDFrame(Frame):
    depth: np.ndarray | None = None  # float32 (H, W) metres, aligned to `image`; 0 = no reading


class RealSenseCamera:
    """A `Camera` over a RealSense pipeline; `serial` None picks the only connected device."""

    def __init__(self, serial: str | None, width: int, height: int, fps: float, depth: bool = False, name: str | None = None,
                 timeout_ms: int = 100, stall_timeout_s: float = 2.0, sdk: Any = None):
        """`sdk` replaces the pyrealsense2 module, for tests."""
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"camera size and rate must be positive, got {width}x{height} at {fps} fps")
        self.serial = serial
        self.name = name or f"realsense_{serial or 'default'}"
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.depth = depth
        self.timeout_ms = timeout_ms
        self.stall_timeout_s = stall_timeout_s
        self.depth_scale: float | None = None  # metres per Z16 unit, after connect
        self._sdk = sdk
        self._rs: Any = None
        self._pipeline: Any = None
        self._align: Any = None
        self._reader: FrameReader | None = None

    def connect(self) -> None:
        if self._pipeline is not None:
            return
        rs = self._sdk or import_sdk("pyrealsense2", "pyrealsense2", "RealSenseCamera")
        serial = self._pick_serial(rs)
        pipeline, config = rs.pipeline(), rs.config()
        config.enable_device(serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, int(self.fps))
        if self.depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, int(self.fps))
        if not config.can_resolve(rs.pipeline_wrapper(pipeline)):
            streams = "colour and depth" if self.depth else "colour"
            raise ValueError(f"RealSense {serial} has no {self.width}x{self.height} at {self.fps:g} fps mode for {streams}; "
                             "list its modes with `rs-enumerate-devices` and pick one it supports")
        profile = pipeline.start(config)
        self._rs, self._pipeline, self.serial = rs, pipeline, serial
        try:
            if self.depth:
                self.depth_scale = float(profile.get_device().first_depth_sensor().get_depth_scale())
                self._align = rs.align(rs.stream.color)
            first, deadline = None, time.monotonic() + self.stall_timeout_s
            while first is None and time.monotonic() < deadline:
                first = self._grab(1)
            if first is None:
                raise ConnectionError(f"RealSense {serial} started but delivered no frame in {self.stall_timeout_s} s")
        except Exception:
            self.disconnect()
            raise
        self._reader = FrameReader(self.name, self._grab, self.stall_timeout_s)
        self._reader.start(first)

    def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None

    def read(self, timeout_s: float = 1.0) -> RGBDFrame:
        return self._require_reader().read(timeout_s)

    def latest(self) -> RGBDFrame:
        return self._require_reader().latest()

    def _pick_serial(self, rs: Any) -> str:
        connected = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if self.serial is None:
            if len(connected) != 1:
                raise ConnectionError(f"RealSenseCamera(serial=None) needs exactly one connected camera, found {connected}")
            return connected[0]
        if self.serial not in connected:
            raise ConnectionError(f"no RealSense with serial {self.serial!r} is connected (connected: {connected}); check the "
                                  "USB3 cable and the serial printed on the camera")
        return self.serial

    def _grab(self, index: int) -> RGBDFrame | None:
        ok, frames = self._pipeline.try_wait_for_frames(self.timeout_ms)
        t = time.monotonic()
        if not ok:
            return None
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        image = np.asanyarray(color.get_data()).copy()
        if image.shape != (self.height, self.width, 3):
            raise ValueError(f"RealSense {self.serial} delivered colour of shape {image.shape}, expected "
                             f"{(self.height, self.width, 3)}")
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            if not depth_frame:
                return None
            depth = np.asanyarray(depth_frame.get_data()).astype(np.float32) * np.float32(self.depth_scale)
        return RGBDFrame(image=image, timestamp=t, index=index, depth=depth)

    def _require_reader(self) -> FrameReader:
        if self._reader is None:
            raise RuntimeError(f"camera {self.name!r} is not connected: call connect() first")
        return self._reader
