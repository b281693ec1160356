"""One writer per store: an exclusive `flock` on a lock file inside the store folder.

flock belongs to the open file, so the OS drops it when the holder closes it or dies in any way (SIGKILL
included): a lock can never be left behind. The lock file is kept (never deleted) because deleting a lock
file lets two processes lock two different files of the same name. After locking, the holder writes who it is
into the file, so a refused writer can be told whom to wait for. Readers never lock.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from robolearn.data.store_errors import StoreLockedError

LOCK_NAME = ".robolearn.lock"  # hidden, and not a zarr node: zarr and the record never see it


class StoreLock:
    """A held write lock; `release()` (or garbage collection, or process exit) frees it."""

    def __init__(self, fd: int, store: Path):
        self._fd: int | None = fd
        self.store = store

    @classmethod
    def acquire(cls, store: str | os.PathLike) -> StoreLock:
        store = Path(store)
        fd = os.open(store / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"store {store} is being written by {describe_holder(read_holder(store))}; "
                                   f"one writer per store: wait for it to finish (or stop it), then retry") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
        return cls(fd, store)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # before unlocking: afterwards the file may already name the next holder
        os.close(fd)  # closing the file drops the flock

    def __del__(self) -> None:  # a handle dropped without close() must not keep the store locked
        self.release()


def read_holder(store: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(store) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None  # the holder has locked but not yet written its name


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "another writer (it is just starting; its details are not written yet)"
    me = " - this process: close() the other handle first" if info.get("pid") == os.getpid() else ""
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"(command: {info.get('command')}){me}")


def _holder_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
