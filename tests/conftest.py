"""Test-wide settings: one torch thread (small ops are much slower with 2 on these VMs), headless rendering,
reproducible property tests; and the real Push-T release imported once per session for every module that reads it."""
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

# Property tests draw the same cases on every run, so CI is never red by chance; HYPOTHESIS_PROFILE=explore draws
# new ones (run it by hand to hunt for bugs, then keep what it finds as an example).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PUSHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht_cchi_v7_replay.zarr"


@pytest.fixture(scope="session")
def pusht_store(tmp_path_factory):
    """The whole Push-T release imported once per session (~20 s) into a temporary store (the shared dataset
    is only read, and the project's datasets/ folder is never touched)."""
    if not PUSHT.exists():
        pytest.skip(f"Push-T replay buffer not found at {PUSHT} (expected in ../shared/data next to the project)")
    from robolearn.data.formats.diffusion_policy import import_diffusion_policy
    from robolearn.data.store import EpisodeStore

    dest = tmp_path_factory.mktemp("pusht") / "pusht.zarr"
    import_diffusion_policy(PUSHT, dest, task="pusht", fps=10, progress=False)
    return EpisodeStore.open(dest)


@pytest.fixture(scope="session")
def particle_windows(tmp_path_factory):
    """Windows of 100 two-goal particle demonstrations (about half go right); noisy execution widens the states
    around both straight lines. Shared by the multimodal heads' tests (tests/particle.py has their helpers)."""
    from robolearn.data.windows import Windows, WindowSpec
    from robolearn.sim.particle import make_particle_store

    store = make_particle_store(tmp_path_factory.mktemp("particle") / "demos.zarr", n_episodes=100, seed=1,
                                noise=0.05)
    return Windows(store, WindowSpec(("state",), 1, 1, 1), cache="ram")
