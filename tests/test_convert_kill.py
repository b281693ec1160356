"""A convert killed by any signal leaves the destination as it was (absent, or the old output intact) and the
source byte for byte unchanged; the next run removes the dead run's temporary output and succeeds.

Each case runs the import/export in a subprocess that stops at a known point in the middle of writing (after some
data is written, before the rename), tells the test, and is killed there."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.formats.diffusion_policy import export_diffusion_policy, import_diffusion_policy
from robolearn.data.formats.robomimic import export_robomimic, import_robomimic
from robolearn.data.store import EpisodeStore
from robolearn.data.store_lock import LOCK_NAME

# Runs in the child: patch a method the operation calls repeatedly so that its second call announces itself
# (the marker file) and then waits to be killed. SIGHUP gets its default action, as in a terminal: a test run
# started under nohup would otherwise pass its "ignore SIGHUP" on to the child.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from pathlib import Path
from robolearn.data.store import EpisodeStore
from robolearn.data.store_lock import LOCK_NAME
from robolearn.data.formats import diffusion_policy, robomimic

op, src, dst, marker = sys.argv[1:5]
method = {"import_dp": "_commit", "import_rm": "_commit", "export_dp": "read", "export_rm": "episode"}[op]
real, calls = getattr(EpisodeStore, method), []

def stall(self, *args, **kwargs):
    calls.append(1)
    result = real(self, *args, **kwargs)
    if len(calls) == (1 if op == "import_rm" else 2):
        Path(marker).write_text("writing")
        time.sleep(120)
    return result

setattr(EpisodeStore, method, stall)
run = {"import_dp": diffusion_policy.import_diffusion_policy, "import_rm": robomimic.import_robomimic,
       "export_dp": diffusion_policy.export_diffusion_policy, "export_rm": robomimic.export_robomimic}[op]
kwargs = {"progress": False} if op.startswith("import") else {}
run(src, dst, overwrite=True, **kwargs)
"""


def tree_hash(path: Path) -> dict[str, str]:
    """sha256 of every file, but a store's lock file (holder details, rewritten by each writer: not data)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name != LOCK_NAME)
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def write_dp(path: Path, n_episodes: int = 80, length: int = 5) -> Path:
    group = zarr.open_group(path, mode="w", zarr_format=2)
    n = n_episodes * length
    state = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    group.require_group("data").create_array("state", shape=state.shape, dtype=state.dtype, chunks=(16, 3))[:] = state
    ends = group.require_group("meta").create_array("episode_ends", shape=(n_episodes,), dtype=np.int64)
    ends[:] = np.arange(1, n_episodes + 1) * length
    return path


def write_rm(path: Path, n_demos: int = 4) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        for i in range(n_demos):
            f.create_dataset(f"data/demo_{i}/actions", data=np.full((6, 2), i, np.float32))
            f.create_dataset(f"data/demo_{i}/obs/pos", data=np.full((6, 3), i, np.float32))
    return path


def native_store(path: Path, n_episodes: int = 6) -> EpisodeStore:
    store = EpisodeStore.create(path, task="t")
    for i in range(n_episodes):
        store.append_episode({"action": np.full((70, 2), i, np.float32), "pos": np.full((70, 3), i, np.float32)})
    return store


def make_case(op: str, tmp: Path, old: bool = True) -> tuple[Path, Path]:
    """(source, destination); with `old`, the destination holds an older output of the same kind."""
    if op == "import_dp":
        src, dst = write_dp(tmp / "src.zarr"), tmp / "out.zarr"
        if old:
            import_diffusion_policy(write_dp(tmp / "old.zarr", n_episodes=2), dst, progress=False)
    elif op == "import_rm":
        src, dst = write_rm(tmp / "src.hdf5"), tmp / "out.zarr"
        if old:
            import_robomimic(write_rm(tmp / "old.hdf5", n_demos=1), dst, progress=False)
    else:
        src = native_store(tmp / "src.zarr").path
        dst = tmp / ("out.zarr" if op == "export_dp" else "out.hdf5")
        export = export_diffusion_policy if op == "export_dp" else export_robomimic
        if old:
            export(native_store(tmp / "old.zarr", n_episodes=1), dst)
    return src, dst


def kill_mid_write(op: str, src: Path, dst: Path, sig: int, tmp: Path) -> None:
    marker = tmp / "marker"
    child = subprocess.Popen([sys.executable, "-c", CHILD, op, str(src), str(dst), str(marker)],
                             stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child ended before the kill point: {child.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the child never reached the kill point"
        time.sleep(0.05)
    tag = "building" if op.startswith("import") else "partial"  # EpisodeStore.build, output.building
    assert any(p.name.startswith(f".{dst.name}.{tag}-") for p in dst.parent.iterdir())  # it is mid-write
    child.send_signal(sig)
    assert child.wait(timeout=60) == -sig
    child.stderr.close()


SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("op", ["import_dp", "import_rm", "export_dp", "export_rm"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_killed_convert_keeps_old_output_and_source(tmp_path, op, sig):
    src, dst = make_case(op, tmp_path)
    source_before, old_before = tree_hash(src), tree_hash(dst)
    kill_mid_write(op, src, dst, sig, tmp_path)
    assert tree_hash(dst) == old_before  # the old output, untouched
    assert tree_hash(src) == source_before
    # the next run cleans up after the dead one and replaces the old output
    if op.startswith("import"):
        run = import_diffusion_policy if op == "import_dp" else import_robomimic
        assert run(src, dst, overwrite=True, progress=False).n_episodes == (80 if op == "import_dp" else 4)
    else:
        (export_diffusion_policy if op == "export_dp" else export_robomimic)(src, dst, overwrite=True)
        assert tree_hash(dst) != old_before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert tree_hash(src) == source_before


@pytest.mark.parametrize("op", ["import_dp", "export_rm"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_killed_convert_to_a_new_destination_leaves_nothing(tmp_path, op, sig):
    src, dst = make_case(op, tmp_path, old=False)
    source_before = tree_hash(src)
    kill_mid_write(op, src, dst, sig, tmp_path)
    assert not dst.exists()
    assert tree_hash(src) == source_before
