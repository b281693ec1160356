"""LeRobot camera videos: encode uint8 HxWx3 frames into an mp4 stream, decode them back frame-exact by timestamp.

LeRobot keeps many episodes back to back in one mp4 per camera: episode e's frame i is the video frame shown at
`from_timestamp(e) + timestamp(i)` seconds. Decoding picks, for each wanted time, the decoded frame nearest to it
and refuses one further than LeRobot's tolerance (`tolerance_s`, 1e-4 s by default in LeRobotDataset), so a
frame is never silently taken from the wrong time. Colour: PyAV converts the stream's yuv420p to RGB (rgb24)
with FFmpeg's swscale, as LeRobot's pyav backend does.

Encoding writes frames with presentation times frame_index / fps (time base 1/fps), yuv420p, and LeRobot's
defaults: AV1 through SVT-AV1 (`libsvtav1`, crf 30, keyframe every 2 frames, preset 12), or H.264 (`libx264`)
or HEVC (`libx265`) with the same crf and keyframe interval.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from robolearn.data.store import StoreFormatError

TOLERANCE_S = 1e-4  # LeRobotDataset(tolerance_s=1e-4): data timestamps and decoded frames must match this closely
# stream codec names this reader is tested on (what LeRobot writes: libsvtav1 -> av1, h264, hevc; vp9 from older ports)
DECODABLE = ("av1", "h264", "hevc", "vp9")
# --video-codec choices -> (FFmpeg encoder, codec name the stream reports)
ENCODERS = {"av1": ("libsvtav1", "av1"), "h264": ("libx264", "h264"), "hevc": ("libx265", "hevc")}
CRF, GOP, SVT_PRESET = 30, 2, 12  # LeRobot's encode_video_frames defaults


def _av():
    import av

    logging.getLogger("libav").setLevel(logging.ERROR)
    return av


def can_encode(codec: str) -> bool:
    """Whether this PyAV build has the encoder for `codec` ("av1", "h264", "hevc")."""
    av = _av()
    try:
        av.codec.Codec(ENCODERS[codec][0], "w")
    except (av.codec.codec.UnknownCodecError, KeyError):
        return False
    return True


def default_codec() -> str:
    """AV1, as LeRobot writes; H.264 where this PyAV build has no SVT-AV1 encoder."""
    return "av1" if can_encode("av1") else "h264"


class VideoWriter:
    """One mp4 file of back-to-back episodes: `add(frames)` appends an episode's frames and returns its
    (from_timestamp, to_timestamp) in the file; `close()` flushes the encoder. Frames: uint8 (T, H, W, 3)."""

    def __init__(self, path: str | os.PathLike, fps: int, height: int, width: int, codec: str = "av1"):
        if codec not in ENCODERS:
            raise ValueError(f"video codec {codec!r} is not one of {sorted(ENCODERS)}")
        if height % 2 or width % 2:
            raise ValueError(f"frames of {height}x{width} cannot be written as yuv420p video (it needs even sizes); "
                             f"crop or pad the camera key to even height and width first")
        av = _av()
        if not can_encode(codec):
            raise RuntimeError(f"this PyAV build has no {ENCODERS[codec][0]} encoder for {codec} video; choose "
                               f"another --video-codec")
        self.path, self.fps, self.shape = Path(path), int(fps), (height, width, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {"g": str(GOP), "crf": str(CRF)}
        if codec == "av1":
            options["preset"] = str(SVT_PRESET)
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration to stderr otherwise
        if codec == "hevc":
            options["x265-params"] = "log-level=error"
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(ENCODERS[codec][0], rate=self.fps, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = Fraction(1, self.fps)
        self.n_frames, self.bytes_out = 0, 0

    def add(self, frames: np.ndarray) -> tuple[float, float]:
        av = _av()
        if frames.dtype != np.uint8 or tuple(frames.shape[1:]) != self.shape:
            raise ValueError(f"{self.path}: frames must be uint8 {self.shape}, got {frames.dtype} {frames.shape[1:]}")
        start = self.n_frames
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.n_frames
            video_frame.time_base = Fraction(1, self.fps)
            self._mux(self._stream.encode(video_frame))
            self.n_frames += 1
        return start / self.fps, self.n_frames / self.fps

    def _mux(self, packets: list) -> None:
        self.bytes_out += sum(p.size for p in packets)
        self._container.mux(packets)

    def size_bytes(self) -> int:
        """Bytes of video encoded so far (the encoder may still hold the last few frames)."""
        return self.bytes_out

    def close(self) -> None:
        if self._container is not None:
            self._mux(self._stream.encode(None))
            self._container.close()
            self._container = None


def video_codec(path: Path) -> str:
    """The codec name of the first video stream, refused unless it is one this reader handles."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StoreFormatError(f"{path}: no video stream in the file")
            name = container.streams.video[0].codec_context.name
    except av.error.FFmpegError as err:
        raise StoreFormatError(f"{path}: not a readable video ({err})") from err
    canonical = {"libdav1d": "av1", "libaom-av1": "av1", "libsvtav1": "av1"}.get(name, name)
    if canonical not in DECODABLE:
        raise StoreFormatError(f"{path}: video codec {name!r} is not supported (LeRobot videos are "
                               f"{', '.join(DECODABLE)})")
    return canonical


def decode_frames(path: Path, times: np.ndarray, tolerance_s: float = TOLERANCE_S) -> np.ndarray:
    """The frames shown at `times` (seconds, ascending) in the mp4 at `path`, as uint8 (len(times), H, W, 3).

    Seeks to the keyframe before the first time and decodes forward; each time gets the decoded frame nearest to
    it, and a time with no frame within `tolerance_s` (the video ends too soon, or frames sit off the grid) is an
    error naming the file and the time."""
    av = _av()
    times = np.asarray(times, dtype=np.float64)
    first, last = float(times[0]), float(times[-1])
    frames: list[np.ndarray] = []
    frame_times: list[float] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if first > 0:
                container.seek(max(0, int((first - 1.0) / stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base)
                if t < first - tolerance_s:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                frame_times.append(t)
                if t >= last - tolerance_s:
                    break
    except av.error.FFmpegError as err:
        raise StoreFormatError(f"{path}: video could not be decoded ({err})") from err
    if not frames:
        raise StoreFormatError(f"{path}: the video has no frame at or after {first:.4f} s (it is shorter than the "
                               f"episodes that point into it)")
    loaded = np.asarray(frame_times)
    nearest = np.clip(np.searchsorted(loaded, times), 1, len(loaded) - 1) if len(loaded) > 1 else np.zeros(len(times), int)
    if len(loaded) > 1:
        left = nearest - 1
        nearest = np.where(np.abs(loaded[left] - times) <= np.abs(loaded[nearest] - times), left, nearest)
    error = np.abs(loaded[nearest] - times)
    if (error > tolerance_s).any():
        bad = int(np.argmax(error > tolerance_s))
        if times[bad] > loaded[-1]:
            raise StoreFormatError(f"{path}: the video ends at {loaded[-1]:.4f} s but a frame at {times[bad]:.4f} s is "
                                   f"needed (the video is shorter than its episode)")
        raise StoreFormatError(f"{path}: no frame within {tolerance_s} s of {times[bad]:.4f} s (nearest at "
                               f"{loaded[nearest[bad]]:.4f} s); the video's frames are not on the episode's time grid")
    return np.stack([frames[i] for i in nearest])
