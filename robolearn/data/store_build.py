"""Building a store under a temporary name, so that a half-made store can never sit at (or replace) the real path.

    with EpisodeStore.build(path, replace=True, fps=10.0, task="pusht") as store:
        store.append_episodes(...)

The new store is written at `.{name}.building-{pid}-{token}` beside `path`, marked `incomplete` (which
`EpisodeStore.open` refuses), and renamed into place only when the block ends normally. Replacing swaps old and
new in one atomic `renameat2(RENAME_EXCHANGE)` where the file system offers it (else two renames, the old one
first moved aside to `.{name}.old-{pid}-{token}`), then deletes the old store: at every moment one complete store
exists. An exception deletes the temporary store and leaves `path` as it was. Leftovers of killed builds are
removed by the next build of the same path.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robolearn.data.atomic_paths import RENAME_EXCHANGE, RENAME_NOREPLACE, is_empty_dir, pid_alive, renameat2
from robolearn.data.store_errors import StoreLockedError
from robolearn.data.store_lock import StoreLock

if TYPE_CHECKING:
    from robolearn.data.store import EpisodeStore

INCOMPLETE = "incomplete"  # root attribute of a store still being built


@contextlib.contextmanager
def build_store(cls: type[EpisodeStore], path: str | os.PathLike, *, replace: bool = False,
                **create_kwargs: Any) -> Iterator[EpisodeStore]:
    if "overwrite" in create_kwargs:
        raise TypeError("EpisodeStore.build takes replace=True (the old store is kept until the new one is "
                        "complete), not overwrite=")
    path = Path(path)
    old_lock = _check_target(path, replace)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(path)
        tmp = path.with_name(f".{path.name}.building-{os.getpid()}-{secrets.token_hex(3)}")
        store = cls.create(tmp, **create_kwargs)
        store._root.attrs[INCOMPLETE] = {"pid": os.getpid(), "host": socket.gethostname(), "target": str(path),
                                         "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            yield store
            del store._root.attrs[INCOMPLETE]
            _move_into_place(tmp, path, replacing=old_lock is not None)
            store.path = path
        finally:
            store.close()
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old_lock is not None:
            old_lock.release()


def is_episode_store(path: Path) -> bool:
    """Whether `path` is a folder whose root metadata carries the EpisodeStore record (complete or not)."""
    from robolearn.data.store import FORMAT

    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    record = meta.get("attributes", {}).get("robolearn") if isinstance(meta, dict) else None
    return isinstance(record, dict) and record.get("format") == FORMAT


def _check_target(path: Path, replace: bool) -> StoreLock | None:
    """Refuse what must not be replaced; when replacing a store, hold its write lock until the swap."""
    if not (path.exists() or path.is_symlink()):
        return None
    if is_empty_dir(path):
        return None  # holds nothing: the new store simply takes its place
    if not replace:
        raise FileExistsError(f"{path} already exists; pass replace=True to replace it (the old store stays until "
                              f"the new one is complete), or choose another path")
    if path.is_symlink() or not path.is_dir() or not is_episode_store(path):
        raise FileExistsError(f"{path} exists and is not an EpisodeStore; refusing to replace it (nothing was "
                              f"deleted): move it away or choose another path")
    return StoreLock.acquire(path)  # raises StoreLockedError while someone appends to it


def _move_into_place(tmp: Path, path: Path, replacing: bool) -> None:
    if not replacing:
        try:
            if is_empty_dir(path):
                os.rename(tmp, path)  # atomically replaces an empty folder
            elif not renameat2(tmp, path, RENAME_NOREPLACE):
                if path.exists():
                    raise FileExistsError(path)
                os.rename(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} appeared while the new store was being built; the new store was "
                                  f"discarded and {path} left as it is") from None
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
    if renameat2(tmp, path, RENAME_EXCHANGE):
        os.rename(tmp, old)  # tmp now names the old store
    else:
        os.rename(path, old)
        os.rename(tmp, path)
    shutil.rmtree(old)


_STALE = re.compile(r"\.(?P<name>.+)\.(?P<kind>building|old)-(?P<pid>\d+)(-[0-9a-f]+)?$")


def remove_stale_builds(path: Path) -> list[Path]:
    """Delete `.{name}.building-*` / `.{name}.old-*` siblings left by dead processes; returns what was removed.

    A leftover is removed only when its pid is not alive here and nobody holds its lock; an `.old` store is kept
    while `path` does not exist (it is then the only complete copy: rename it back to recover)."""
    removed = []
    for sibling in path.parent.glob(f".{_glob_escape(path.name)}.*-*"):
        m = _STALE.match(sibling.name)
        if not m or m["name"] != path.name or pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not path.exists():
            continue
        try:
            lock = StoreLock.acquire(sibling) if sibling.is_dir() else None
        except (StoreLockedError, OSError):
            continue
        try:
            shutil.rmtree(sibling) if sibling.is_dir() else sibling.unlink()
            removed.append(sibling)
        finally:
            if lock is not None:
                lock.release()
    return removed


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
