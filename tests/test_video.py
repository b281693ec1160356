"""Videos are written with the bundled ffmpeg and read back frame for frame."""
import imageio.v2 as imageio
import numpy as np
import pytest

from robolearn.eval.video import tile_frames, write_video


def _frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _read(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return [f for f in reader], reader.get_meta_data()
    finally:
        reader.close()


def test_write_video_roundtrip(tmp_path):
    path = write_video(tmp_path / "nested" / "dir" / "ep.mp4", _frames(12, 96, 128), fps=10)
    assert path.exists() and path.stat().st_size > 0
    frames, meta = _read(path)
    assert len(frames) == 12
    assert frames[0].shape == (96, 128, 3)
    assert meta["fps"] == pytest.approx(10)
    assert "h264" in meta["codec"]


def test_write_video_pads_odd_sizes_and_accepts_arrays(tmp_path):
    path = write_video(tmp_path / "odd.mp4", np.stack(_frames(5, 95, 97)), fps=5)
    frames, _ = _read(path)
    assert len(frames) == 5 and frames[0].shape == (96, 98, 3)


@pytest.mark.parametrize(
    "frames, message",
    [
        ([np.zeros((8, 8, 3), np.float32)], "uint8 HxWx3"),
        ([np.zeros((8, 8), np.uint8)], "uint8 HxWx3"),
        ([np.zeros((8, 8, 4), np.uint8)], "uint8 HxWx3"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], "differs"),
        ([], "no frames"),
    ],
)
def test_write_video_rejects_bad_frames(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps=10)
    assert not (tmp_path / "bad.mp4").exists()


def test_tile_frames_grid_and_padding():
    eps = [_frames(2, 10, 20, seed=1), _frames(4, 10, 20, seed=2), _frames(3, 10, 20, seed=3)]
    tiled = tile_frames(eps, gap=4)
    assert len(tiled) == 4
    assert tiled[0].shape == (2 * 10 + 4, 2 * 20 + 4, 3) and tiled[0].dtype == np.uint8
    last = tiled[-1]
    np.testing.assert_array_equal(last[:10, :20], eps[0][-1])  # shorter episode holds its last frame
    np.testing.assert_array_equal(last[:10, 24:], eps[1][3])
    np.testing.assert_array_equal(last[14:, :20], eps[2][-1])
    assert not last[14:, 24:].any()  # unused cell is black
    assert tile_frames(eps, cols=3, gap=0)[0].shape == (10, 60, 3)


def test_tile_frames_rejects_mismatched_episodes():
    with pytest.raises(ValueError, match="episode 1"):
        tile_frames([_frames(2, 10, 20), _frames(2, 12, 20)])
