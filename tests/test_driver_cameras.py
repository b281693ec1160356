"""OpenCVCamera and RealSenseCamera against fake devices, and OpenCVCamera on a real video file."""
import time

import cv2
import numpy as np
import pytest
from fake_sdks import FakeRealSense, FakeVideoDevice

from robolearn.hal.camera import Camera
from robolearn.hal.drivers.opencv_camera import OpenCVCamera
from robolearn.hal.drivers.realsense_camera import RealSenseCamera


def test_opencv_camera_sets_properties_converts_to_rgb_and_reads_newer_frames():
    dev = FakeVideoDevice(device=2)
    cam = OpenCVCamera(2, 32, 24, 30, fourcc="MJPG", sdk=dev.cv2())
    assert isinstance(cam, Camera)
    cam.connect()
    sets = {c.args[0]: c.args[1] for c in dev.log.named("set")}
    assert sets == {cv2.CAP_PROP_FOURCC: cv2.VideoWriter_fourcc(*"MJPG"), cv2.CAP_PROP_FRAME_WIDTH: 32,
                    cv2.CAP_PROP_FRAME_HEIGHT: 24, cv2.CAP_PROP_FPS: 30}
    frames = [cam.read() for _ in range(6)]
    for f in frames:
        assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8
        assert f.image[0, 0].tolist() == [(f.index - 1) % 256, 20, 10]  # BGR (10, 20, k) -> RGB (k, 20, 10)
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[0] >= 1
    periods = np.diff([f.timestamp for f in frames]) / np.maximum(np.diff(indices), 1)
    assert np.median(periods) == pytest.approx(1 / 30, rel=0.2)
    t = time.monotonic()
    latest = cam.latest()  # never waits
    assert time.monotonic() - t < 0.005 and latest.index >= frames[-1].index
    newer = cam.read()
    assert newer.index > frames[-1].index
    assert cam.reported_fps == 30.0
    cam.disconnect()
    assert dev.released


def test_opencv_camera_errors_name_the_problem():
    dev = FakeVideoDevice(device=0, modes=((640, 480),))  # ignores the requested size
    with pytest.raises(ValueError, match="delivers 640x480 frames, not the requested 64x48"):
        OpenCVCamera(0, 64, 48, 30, sdk=dev.cv2()).connect()
    assert dev.released
    with pytest.raises(ConnectionError, match="cannot open 5.*/dev/video"):
        OpenCVCamera(5, 64, 48, 30, sdk=FakeVideoDevice(device=0).cv2()).connect()
    with pytest.raises(RuntimeError, match="not connected"):
        OpenCVCamera(0, 64, 48, 30).latest()
    with pytest.raises(ValueError, match="positive"):
        OpenCVCamera(0, 0, 48, 30)


def test_a_camera_that_goes_silent_turns_into_an_error():
    dev = FakeVideoDevice(frames_before_silence=3, fps=100)
    cam = OpenCVCamera(0, 64, 48, 100, stall_timeout_s=0.2, sdk=dev.cv2())
    cam.connect()
    with pytest.raises(RuntimeError, match="no frame for 0.2 s"):
        for _ in range(10):
            cam.read(timeout_s=1.0)
    with pytest.raises(RuntimeError, match="no frame"):
        cam.latest()
    cam.disconnect()


def test_opencv_camera_on_a_real_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for k in range(8):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 2] = 250  # red in BGR
        frame[..., 1] = 25 * k
        writer.write(frame)
    writer.release()
    with pytest.raises(ValueError, match="delivers 64x48"):
        OpenCVCamera(str(path), 32, 24, 30).connect()
    cam = OpenCVCamera(str(path), 64, 48, 30)
    cam.connect()
    assert cam.latest().index == 1  # the first frame, grabbed by connect to check the size
    frames = [cam.read() for _ in range(8)]
    assert [f.index for f in frames] == list(range(1, 9))
    for k, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3)
        r, g, b = f.image.reshape(-1, 3).mean(axis=0)
        assert r > 230 and b < 20 and abs(g - 25 * k) < 12  # RGB order, JPEG-close values
    assert np.median(np.diff([f.timestamp for f in frames])) == pytest.approx(1 / 30, rel=0.25)  # played as if live
    with pytest.raises(RuntimeError, match="ended"):
        cam.read(timeout_s=1.0)
    cam.disconnect()


def test_realsense_color_and_aligned_depth_in_metres():
    fake = FakeRealSense(depth_scale=0.001)
    cam = RealSenseCamera(fake.serial, 64, 48, 30, depth=True, sdk=fake.sdk())
    assert isinstance(cam, Camera)
    cam.connect()
    streams = [c.args for c in fake.log.named("enable_stream")]
    assert streams == [("color", 64, 48, "rgb8", 30), ("depth", 64, 48, "z16", 30)]
    assert fake.log.named("enable_device")[0].args == (fake.serial,)
    assert fake.log.named("align")[0].args == ("color",)
    frames = [cam.read() for _ in range(4)]
    for f in frames:
        k = f.index - 1
        assert f.image.shape == (48, 64, 3) and f.image[0, 0].tolist() == [k % 256, 1, 2]
        assert f.depth.dtype == np.float32 and f.depth.shape == (48, 64)
        assert f.depth[0, 0] == pytest.approx((1000 + k) * 0.001)
    assert np.median(np.diff([f.timestamp for f in frames])) == pytest.approx(1 / 30, rel=0.25)
    cam.disconnect()
    assert fake.log.names()[-1] == "stop"


def test_realsense_errors():
    fake = FakeRealSense()
    with pytest.raises(ConnectionError, match="serial '999'.*123456789012"):
        RealSenseCamera("999", 64, 48, 30, sdk=fake.sdk()).connect()
    with pytest.raises(ValueError, match="no 640x480 at 30 fps mode for colour and depth"):
        RealSenseCamera(None, 640, 480, 30, depth=True, sdk=fake.sdk()).connect()
    cam = RealSenseCamera(None, 64, 48, 15, sdk=fake.sdk())  # the only camera, colour only
    cam.connect()
    assert cam.serial == fake.serial and cam.read().depth is None
    cam.disconnect()
    with pytest.raises(ImportError, match="pyrealsense2"):
        RealSenseCamera(None, 64, 48, 30).connect()
