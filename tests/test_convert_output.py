"""output.building, the temporary-name-and-rename used by exports: the destination is always the old output or
the complete new one, including where no atomic swap exists and a build died between its two renames."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robolearn.data.formats import output


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def build(dest: Path, text: str, overwrite: bool = True) -> None:
    with output.building(dest, overwrite=overwrite, owned=lambda p: (p / "f.txt").exists(), kind="test folder") as tmp:
        folder(tmp, text)


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_replacing_a_folder(tmp_path, monkeypatch, atomic_swap):
    if not atomic_swap:
        monkeypatch.setattr(output, "renameat2", lambda src, dst, flags: False)  # a file system without it
    dest = folder(tmp_path / "out", "old")
    build(dest, "new")
    assert (dest / "f.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_body_leaves_the_old_output(tmp_path):
    dest = folder(tmp_path / "out", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with output.building(dest, overwrite=True, owned=lambda p: True, kind="test folder") as tmp:
            folder(tmp, "half")
            raise RuntimeError("disk full")
    assert (dest / "f.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_old_output_moved_aside_by_a_killed_build_is_put_back(tmp_path):
    """Without an atomic swap the old output is renamed aside first; a kill before the new one lands leaves it
    there, and the next build of the same destination restores it before deciding anything."""
    aside = folder(tmp_path / f".out.{output.REPLACED}-{dead_pid()}-0a1b", "old")
    with pytest.raises(FileExistsError, match="out exists; pass overwrite=True"):
        build(tmp_path / "out", "new", overwrite=False)
    assert (tmp_path / "out" / "f.txt").read_text() == "old" and not aside.exists()


def test_stale_partials_of_dead_builds_are_removed_live_ones_kept(tmp_path):
    dead = folder(tmp_path / f".out.{output.PARTIAL}-{dead_pid()}-0a1b", "half")
    live = folder(tmp_path / f".out.{output.PARTIAL}-{1}-0a1b", "someone else's")  # pid 1 is always alive
    other = folder(tmp_path / f".other.{output.PARTIAL}-{dead_pid()}-0a1b", "another destination's")
    build(tmp_path / "out", "new")
    assert not dead.exists() and live.exists() and other.exists()
    assert (tmp_path / "out" / "f.txt").read_text() == "new"


def test_a_file_replaces_a_file_atomically(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with output.building(dest, overwrite=True, owned=lambda p: p.is_file(), kind="binary file") as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
