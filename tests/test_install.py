"""A non-editable install works: configs/ and hardware/ ship inside the wheel, and the package finds them there."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_carries_configs_and_rigs_and_runs_without_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path / "wheel")], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("robolearn-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    script = textwrap.dedent("""
        import robolearn, robolearn.paths as paths
        from robolearn.config_files import compose, task_by_name
        assert robolearn.__file__.startswith(SITE), robolearn.__file__
        assert paths.checkout_root() is None
        config = compose("train", ["task=lift", "policy=flow"])
        assert config["policy_class"] == "flow" and config["task"]["env"] == "robosuite"
        assert task_by_name("pusht").env == "pusht"
        assert (paths.hardware_dir() / "sim_arm.yaml").is_file()
        print("ok")
    """).replace("SITE", repr(str(tmp_path / "site")))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
