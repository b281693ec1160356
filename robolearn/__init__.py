"""robolearn: learn robot manipulation policies from demonstrations, evaluate them in simulation, deploy them.

    policy = robolearn.load_policy("runs/pusht_diffusion/checkpoints/last")
"""
import contextlib
import os
import sys

# Headless rendering out of the box: without a display, MuJoCo's default GL backend (GLFW) cannot start and every
# camera or video render fails with "gladLoadGL error". EGL (Mesa's llvmpipe on a CPU machine, the GPU driver
# elsewhere) needs no display. Set before anything imports mujoco; worker processes inherit it. A user's own
# MUJOCO_GL (osmesa, glfw, ...) is kept.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

# Mesa's software OpenGL (llvmpipe: offscreen rendering without a GPU) and triton (imported by torch the first time
# an optimizer or torch.compile is built) each carry an LLVM. Loading triton after a GL context exists kills the
# process (segfault in libtriton); loaded first, both work. So it is loaded before anything renders. Torch builds
# without triton (CPU wheels, macOS) have no such conflict.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

__all__ = ["load_policy"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: `import robolearn` (and so `robolearn info`, `robolearn --help`) must not pay for torch.
    if name == "load_policy":
        from robolearn.policies.checkpoint import load_policy

        return load_policy
    raise AttributeError(f"module 'robolearn' has no attribute {name!r}")
