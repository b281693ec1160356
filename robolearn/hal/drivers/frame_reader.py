"""A background thread that keeps a camera's newest frame, so the control loop never waits on a camera.

Cameras deliver at their own rate and buffer frames when nobody reads them; reading on demand returns stale
images, and blocking the loop on a read costs up to a frame period. The reader drains the device continuously:
`latest()` returns the newest frame at once, `read()` waits for one newer than the last `read()`. A device that
stops delivering for `stall_timeout_s`, or a video file that ends, ends the reader with an error that every
later call raises.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from robolearn.hal.camera import Frame


class FrameReader:
    def __init__(self, name: str, grab: Callable[[int], Frame | None], stall_timeout_s: float = 2.0,
                 pace_hz: float | None = None):
        """`grab(index)` returns the next frame (with that index), None when the device had nothing this time, or
        raises EOFError when the stream is over. `pace_hz` spaces grabs in time (for video files, which would
        otherwise be read as fast as they decode)."""
        self.name = name
        self._grab = grab
        self._stall_timeout_s = stall_timeout_s
        self._pace_hz = pace_hz
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._last_read = 0
        self._error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, first: Frame) -> None:
        self._frame, self._last_read, self._error = first, 0, None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def latest(self) -> Frame:
        with self._cond:
            if self._error is not None:
                raise RuntimeError(self._error)
            if self._frame is None:
                raise RuntimeError(f"camera {self.name!r} is not connected: call connect() first")
            return self._frame

    def read(self, timeout_s: float = 1.0) -> Frame:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None or self._frame.index <= self._last_read:
                if self._error is not None:
                    raise RuntimeError(self._error)
                if self._frame is None:
                    raise RuntimeError(f"camera {self.name!r} is not connected: call connect() first")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"camera {self.name!r} delivered no new frame within {timeout_s} s")
                self._cond.wait(remaining)
            self._last_read = self._frame.index
            return self._frame

    def _run(self) -> None:
        index = self._frame.index
        last_frame_t = t0 = time.monotonic()
        while not self._stopping.is_set():
            if self._pace_hz:
                wait = t0 + index / self._pace_hz - time.monotonic()
                if wait > 0 and self._stopping.wait(wait):
                    return
            try:
                frame = self._grab(index + 1)
            except EOFError as e:
                return self._fail(f"camera {self.name!r} ended: {e}")
            except Exception as e:  # the device failed: surface it to the loop instead of dying silently
                return self._fail(f"camera {self.name!r} failed: {type(e).__name__}: {e}")
            now = time.monotonic()
            if frame is None:
                if now - last_frame_t > self._stall_timeout_s:
                    return self._fail(f"camera {self.name!r} delivered no frame for {self._stall_timeout_s} s "
                                      "(unplugged, or another program took it?)")
                self._stopping.wait(0.002)
                continue
            index, last_frame_t = frame.index, now
            with self._cond:
                self._frame = frame
                self._cond.notify_all()

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()
