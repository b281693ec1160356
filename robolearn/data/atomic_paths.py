"""File-system steps that outputs built under a temporary name share (stores, exports): is a folder empty, is the
process that left a temporary file still alive, and Linux's renameat2 for atomic no-replace renames and swaps."""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def is_empty_dir(path: Path) -> bool:
    """An empty real folder: nothing to lose by putting an output in its place."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this machine (this process counts: another thread may be building)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2 (RENAME_NOREPLACE / RENAME_EXCHANGE); False where the C library or the file system lacks it,
    so the caller falls back to plain renames."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return False
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))
