"""Test-wide settings: one torch thread (small ops are much slower with 2 on these VMs), headless rendering."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
