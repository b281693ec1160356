"""Where import/export write: never onto their own input, never over something of another kind, never half-done.

`check_separate` refuses a destination that is, contains or lies inside the source (after resolving symlinks and
`..`), so `--overwrite` can never delete the input. `building` yields a sibling temporary path to write the
output to and renames it into place only when the body finishes; a kill by any signal leaves the destination
as it was (absent, or the old output) plus, at worst, a hidden `.<name>.partial-<pid>-*` sibling that the next
build of the same destination removes once its process is gone.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from robolearn.data.atomic_paths import RENAME_EXCHANGE, is_empty_dir, pid_alive, renameat2
from robolearn.data.store import EpisodeStore

PARTIAL = "partial"    # a temporary output being built
REPLACED = "replaced"  # an old output moved aside for a moment (only where an atomic swap is unavailable)


def check_separate(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Refuse (ValueError naming both) when `dest` is `source`, inside it, or contains it."""
    src, dst = Path(source).resolve(), Path(dest).resolve()
    if src == dst:
        relation = "is the source itself"
    elif dst.is_relative_to(src):
        relation = "lies inside the source"
    elif src.is_relative_to(dst):
        relation = "contains the source"
    else:
        return
    raise ValueError(f"destination {dest} {relation} {source} (resolved: {dst} and {src}); writing there could "
                     f"destroy the input, so choose a destination outside it")


def _sibling(dest: Path, tag: str) -> Path:
    return dest.with_name(f".{dest.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale(dest: Path) -> None:
    """Remove temporaries of dead builds of `dest`; put back an old output moved aside by a build killed mid-swap."""
    for tag in (REPLACED, PARTIAL):  # restore first, so a missing dest gets its old output back
        for stale in sorted(dest.parent.glob(f".{dest.name}.{tag}-*")):
            pid = stale.name.rsplit(f".{tag}-", 1)[1].split("-")[0]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            if tag == REPLACED and not dest.exists():
                os.rename(stale, dest)
            else:
                _remove(stale)


def _put_in_place(tmp: Path, dest: Path) -> None:
    if not dest.exists() and not dest.is_symlink():
        os.rename(tmp, dest)
    elif tmp.is_file() or is_empty_dir(dest):
        os.replace(tmp, dest)  # atomic for a file, and for a folder onto an empty one
    elif renameat2(tmp, dest, RENAME_EXCHANGE):
        _remove(tmp)  # now holds the old output
    else:  # two renames: a kill between them leaves the old output at .<name>.replaced-*, restored next time
        aside = _sibling(dest, REPLACED)
        os.rename(dest, aside)
        os.rename(tmp, dest)
        _remove(aside)


@contextlib.contextmanager
def building(dest: str | os.PathLike, *, overwrite: bool, owned: Callable[[Path], bool], kind: str) -> Iterator[Path]:
    """Yield a temporary sibling of `dest` to write to; rename it to `dest` when the body succeeds.

    An existing `dest` (an empty folder aside) is refused without `overwrite`, and with it replaced only when
    `owned(dest)` says it is a `kind` (the format being written); anything else is an error naming it. On an
    exception the temporary output is removed and `dest` is untouched."""
    dest = Path(dest)
    if dest.parent.is_dir():
        _clean_stale(dest)  # first: an old output moved aside by a killed build comes back before the checks
    if dest.exists() and not is_empty_dir(dest):
        if not overwrite:
            raise FileExistsError(f"{dest} exists; pass overwrite=True (--overwrite) to replace it")
        if not owned(dest):
            raise ValueError(f"{dest} exists and is not a {kind}; refusing to replace it. Choose another "
                             f"destination, or move it away yourself if it is not needed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, PARTIAL)
    try:
        yield tmp
        _put_in_place(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def new_store(dest: str | os.PathLike, *, overwrite: bool, **create_kwargs) -> Iterator[EpisodeStore]:
    """`EpisodeStore.build` (temporary sibling, renamed into place when complete; replaces only a store), with the
    refusal of an existing `dest` worded for convert's `overwrite`."""
    dest = Path(dest)
    if not overwrite and dest.exists() and not is_empty_dir(dest):
        raise FileExistsError(f"{dest} already exists; pass overwrite=True (--overwrite) to replace it")
    with EpisodeStore.build(dest, replace=overwrite, **create_kwargs) as store:
        yield store
