"""Offscreen rendering and torch in one process: rendering first, then building an optimizer (which makes torch
import triton) used to kill the process with a segfault; importing robolearn loads triton before any GL context."""
import os
import subprocess
import sys
import textwrap

# one frame from the simulated arm's camera, checked not to be blank
RENDER_ONE_FRAME = """
from robolearn.hal.drivers.sim_arm import SimulatedArm, SimulatedCamera
arm = SimulatedArm(realtime=False, camera_names=("front",))
camera = SimulatedCamera(arm, "front", width=32, height=32)
camera.connect()
frame = camera.read(timeout_s=10.0)
camera.disconnect()
assert frame.image.std() > 5, "the render is blank"
"""


def test_training_after_offscreen_rendering_in_the_same_process_does_not_crash():
    script = RENDER_ONE_FRAME + textwrap.dedent("""
        import torch
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])  # torch loads triton here, after GL
        print("alive")
    """)
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr[-2000:]


def test_rendering_works_headless_without_any_gl_setting():
    """A fresh shell has no MUJOCO_GL and no display: importing robolearn picks EGL, so cameras and videos render
    (MuJoCo's default GLFW backend failed every render with 'gladLoadGL error')."""
    script = textwrap.dedent("""
        import os
        import robolearn
        assert os.environ["MUJOCO_GL"] == "egl"
    """) + RENDER_ONE_FRAME + textwrap.dedent("""
        print("rendered")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY",
                                                             "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"},
                          timeout=120)
    assert done.returncode == 0 and "rendered" in done.stdout, done.stderr[-2000:]
    kept = subprocess.run([sys.executable, "-c", "import os, robolearn; print(os.environ['MUJOCO_GL'])"],
                          capture_output=True, text=True, env={**env, "MUJOCO_GL": "osmesa"}, timeout=60)
    assert kept.stdout.strip() == "osmesa"  # a user's own choice is kept
