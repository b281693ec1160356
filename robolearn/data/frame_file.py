"""Camera frames on disk, one compressed blob per frame, for training on datasets larger than RAM.

The store keeps images in ~1 MiB zarr chunks (37 Push-T frames of 96x96x3): a random window reads and
decompresses its whole chunk for the 2 frames it needs, and zarr's per-call overhead is large. A frame file is
a derived copy of one camera key built once from the store (`<store>.frames/<key>.lz4` beside it, or under
~/.cache/robolearn/frames when that folder is not writable): every frame LZ4-compressed on its own and
concatenated, plus the offsets and a CRC-32 of each blob (checked at every read). A random frame is then one
slice of a memory map (the OS page cache keeps what is hot, and gives it back under memory pressure) and one
~20 us decompression.

Built under a temporary name and renamed into place (several ranks may build at once); a file whose header
does not match the store (other step count, shape, dtype or sample frames) is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np
from numcodecs import LZ4

from robolearn.data.store import EpisodeStore, StoreFormatError

_CODEC = LZ4(acceleration=1)
_VERSION = 2  # 2: a CRC-32 per frame (LZ4 blocks have none: a garbled blob could decode to other pixels)


def _fingerprint(store: EpisodeStore, key: str) -> dict:
    """What the file must agree with: step count, per-step shape and dtype, and a hash of three sample frames."""
    n = store.n_steps
    digest = hashlib.sha256(np.asarray(store.episode_ends, np.int64).tobytes())
    for row in sorted({0, n // 2, n - 1}):
        digest.update(np.ascontiguousarray(store.read(key, row, row + 1)).tobytes())
    spec = store.specs[key]
    return {"version": _VERSION, "codec": "lz4", "key": key, "n_steps": n, "shape": list(spec.shape),
            "dtype": np.dtype(spec.dtype).name, "sample_sha256": digest.hexdigest()}


def frame_file_dir(store: EpisodeStore) -> Path:
    """`<store>.frames` beside the store if its folder is writable, else a per-store folder in the user cache."""
    beside = store.path.parent / f"{store.path.name}.frames"
    if os.access(store.path.parent, os.W_OK):
        return beside
    tag = hashlib.sha256(str(store.path.resolve()).encode()).hexdigest()[:12]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn" / "frames" / \
        f"{store.path.name}-{tag}"


class FrameFile:
    """Random access to the frames of one image key through its frame file (built on first use)."""

    def __init__(self, store: EpisodeStore, key: str, folder: str | os.PathLike | None = None):
        self.key = key
        self.folder = Path(folder) if folder is not None else frame_file_dir(store)
        self.path = self.folder / f"{key}.lz4"
        want = _fingerprint(store, key)
        if _header(self.path) != want:
            build_frame_file(store, key, self.path, want)
        self.shape = tuple(want["shape"])
        self.dtype = np.dtype(want["dtype"])
        header = _header_bytes(self.path)
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        n = want["n_steps"]
        self._offsets = np.frombuffer(self._data, np.int64, count=n + 1, offset=8 + len(header)).copy()
        self._crc = np.frombuffer(self._data, np.uint32, count=n, offset=8 + len(header) + 8 * (n + 1)).copy()
        self.frame_bytes = int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Frames at `rows` (any shape of int rows) as (*rows.shape, *frame shape); each distinct row decoded once."""
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique.size and (unique[0] < 0 or unique[-1] >= len(self._offsets) - 1):
            raise IndexError(f"rows out of range [0, {len(self._offsets) - 1}) for frame file {self.path}")
        out = np.empty((len(unique), *self.shape), self.dtype)
        flat = out.reshape(len(unique), -1).view(np.uint8)
        lo, hi = self._offsets[unique], self._offsets[unique + 1]
        crc = self._crc[unique]
        for i in range(len(unique)):
            blob = self._data[lo[i]:hi[i]]
            if zlib.crc32(blob) != crc[i]:
                raise StoreFormatError(f"frame file {self.path} is damaged (frame {unique[i]} fails its checksum); "
                                       f"delete it and it is rebuilt from the store")
            _CODEC.decode(blob, out=flat[i])
        return out[inverse.reshape(rows.shape)]


def _header_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(size)


def _header(path: Path) -> dict | None:
    try:
        return json.loads(_header_bytes(path))
    except (OSError, ValueError):
        return None


def build_frame_file(store: EpisodeStore, key: str, path: Path, header: dict) -> Path:
    """Write `path`: [8-byte header length][JSON header][(n+1) int64 offsets from the file start]
    [n uint32 CRC-32s of the blobs][LZ4 frames]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = store.n_steps
    head = json.dumps(header, sort_keys=True).encode()
    start = 8 + len(head) + 8 * (n + 1) + 4 * n
    offsets = np.empty(n + 1, np.int64)
    crcs = np.empty(n, np.uint32)
    offsets[0] = start
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    block = max(1, store.array(key).chunks[0])
    try:
        with open(tmp, "wb") as f:
            f.write(len(head).to_bytes(8, "little") + head)
            f.write(offsets.tobytes() + crcs.tobytes())  # placeholders, rewritten below
            row = 0
            for first in range(0, n, block):
                for frame in store.read(key, first, min(n, first + block)):
                    blob = _CODEC.encode(np.ascontiguousarray(frame))
                    f.write(blob)
                    crcs[row] = zlib.crc32(blob)
                    offsets[row + 1] = offsets[row] + len(blob)
                    row += 1
            f.seek(8 + len(head))
            f.write(offsets.tobytes() + crcs.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
