"""Rig files: every one in hardware/ loads and validates; sim_arm builds and steps; errors name file and field."""
import copy
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from robolearn.hal.rig import RigError, _calibration_value, available_rigs, load_rig, parse_rig
from robolearn.paths import hardware_dir

RIG_FILES = sorted(hardware_dir().glob("*.yaml"))
REAL_RIGS = ["ur5e", "so100", "franka_panda"]
SIM = yaml.safe_load((hardware_dir() / "sim_arm.yaml").read_text())


def test_the_four_rigs_exist():
    assert {p.stem for p in RIG_FILES} >= {"sim_arm", *REAL_RIGS}
    assert set(available_rigs()) >= {"sim_arm", *REAL_RIGS}


@pytest.mark.parametrize("path", RIG_FILES, ids=lambda p: p.stem)
def test_every_rig_file_loads_and_declares_a_consistent_task(path):
    rig = load_rig(path)
    assert rig.name == path.stem and rig.path == path
    spec = rig.spec()
    assert spec.control_hz == rig.control_hz and spec.extra["rig"] == rig.name
    assert len(rig.home) == rig.limits.n_joints
    for key, want in spec.obs.items():
        if key.endswith("_image"):
            assert key[:-6] in rig.cameras and want.dtype == "uint8"
    assert spec.action_dim == (rig.limits.n_joints + 1 if rig.action_mode == "joint" else 7)


def test_real_rigs_carry_the_datasheet_limits():
    franka = load_rig("franka_panda").limits
    assert franka.joint_upper == (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
    assert franka.joint_max_velocity == (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
    ur = load_rig("ur5e")
    assert ur.command_hz == 500 and ur.limits.joint_max_velocity == pytest.approx((np.pi,) * 6, abs=1e-6)
    assert ur.limits.joint_upper[0] == pytest.approx(2 * np.pi, abs=1e-6)
    so100 = load_rig("so100")
    assert so100.limits.n_joints == 5 and so100.action_mode == "joint"
    assert so100.limits.joint_max_velocity == (4.7,) * 5
    # the simulated Panda is the same arm as the real one
    assert load_rig("sim_arm").limits.joint_lower == franka.joint_lower


@pytest.mark.parametrize("name", REAL_RIGS)
def test_real_rigs_fail_only_on_build_and_say_what_to_install(name):
    rig = load_rig(name)  # loading never imports a driver or SDK
    with pytest.raises(ImportError, match=r"robolearn\[hardware\]") as err:
        rig.build_env()
    assert f"{name}.yaml" in str(err.value)


def test_rig_calibration_reaches_the_bus_arm_driver():
    pytest.importorskip("robolearn.hal.drivers.bus_arm")
    robot = load_rig("so100").build_robot()  # built, not connected: no SDK needed yet
    assert [j.offset for j in robot.calibration.joints] == [2048] * 5
    assert robot.command_hz == 30 and robot.limits == load_rig("so100").limits


def test_calibration_goes_through_the_annotated_from_dict():
    class Calibration:
        def __init__(self, offsets):
            self.offsets = offsets

        @classmethod
        def from_dict(cls, d):
            return cls(tuple(d["offsets"]))

    class Driver:
        def __init__(self, calibration: Calibration | None = None):
            self.calibration = calibration

    class Plain:
        def __init__(self, calibration):
            self.calibration = calibration

    assert _calibration_value(Driver, {"offsets": [1, 2]}).offsets == (1, 2)
    assert _calibration_value(Plain, {"a": 1}) == {"a": 1}  # no annotated type: the mapping itself


@pytest.fixture
def sim_env():
    env = load_rig("sim_arm").build_env()
    yield env
    env.close()


def test_sim_arm_rig_builds_and_steps_safely(sim_env):
    obs = sim_env.reset(seed=0)
    sim_env.spec.check_obs(obs)
    start = obs["robot0_eef_pos"].copy()
    for _ in range(4):
        obs, reward, done, info = sim_env.step(np.array([0.0, 0.01, -0.01, 0.0, 0.0, 0.0, 0.0]))
        sim_env.spec.check_obs(obs)
        assert info["arm_command"] == "sent" and not done
        time.sleep(0.1)  # the control loop's clock
    deadline = time.monotonic() + 5.0
    while np.linalg.norm(sim_env.raw_robot.read_state().ee_pose[:3] - start - [0, 0.04, -0.04]) > 3e-3:
        assert time.monotonic() < deadline, "the simulated arm did not follow the commands"
        time.sleep(0.02)
    assert obs["front_image"].std() > 5 and obs["wrist_image"].std() > 5
    assert sim_env.robot.counters["rejected_non_finite"] == 0 and not sim_env.watchdog.tripped


def test_sim_arm_rig_clips_a_far_command_before_it_reaches_the_arm(sim_env):
    sim_env.reset()
    arm = sim_env.raw_robot
    received = []
    original = arm.command_ee_pose
    arm.command_ee_pose = lambda pose: (received.append(np.array(pose)), original(pose))
    measured = arm.read_state().ee_pose
    _, _, _, info = sim_env.step(np.array([3.0, -3.0, 5.0, 0.0, 0.0, 0.0, 0.0]))
    assert info["arm_command"] == "clipped" and info["safety"]["clipped"] == 1
    (pose,) = received
    limits = sim_env.robot.limits
    assert np.linalg.norm(pose[:3] - measured[:3]) <= limits.max_ee_step + 1e-9
    assert np.all(pose[:3] >= np.array(limits.workspace_low)) and np.all(pose[:3] <= np.array(limits.workspace_high))


def test_sim_arm_rig_in_absolute_mode_keeps_targets_in_the_workspace():
    raw = copy.deepcopy(SIM)
    raw["action_mode"] = "ee_absolute"
    raw["robot"]["kwargs"]["realtime"] = False
    raw["cameras"] = {}
    raw["safety"]["watchdog_timeout_s"] = None  # hand-stepped physics: wall-clock staleness means nothing here
    raw["task"]["obs_keys"] = ["robot0_eef_pos", "robot0_joint_pos"]
    rig = parse_rig(raw, Path("absolute.yaml"))
    env = rig.build_env(wait=lambda dt: env.raw_robot.advance(dt))
    try:
        env.reset()
        for _ in range(60):  # a target 2 m below the table: the hand walks down to the box floor and stops there
            env.step(np.array([0.5, 0.1, -2.0, np.pi, 0.0, 0.0, 0.0]))
            env.raw_robot.advance(0.1)
        pos = env.raw_robot.read_state().ee_pose[:3]
        assert pos[2] == pytest.approx(rig.limits.workspace_low[2], abs=3e-3)
        np.testing.assert_allclose(pos[:2], [0.5, 0.1], atol=3e-3)
    finally:
        env.close()


def mutate(path: str, value):
    raw = copy.deepcopy(SIM)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize("path, value, field", [
    ("colour", "red", "colour"),
    ("home", KeyError, "home"),
    ("home", [0.0] * 6, "home"),
    ("home", [3.0, 0, 0, -1, 0, 1, 0], "home"),
    ("control_hz", "fast", "control_hz"),
    ("command_hz", 5, "command_hz"),
    ("limits.joint_upper", [1.0] * 6, "limits.joint_upper"),
    ("limits.workspace_low", [0.0, float("nan"), 0.0], "limits.workspace_low[1]"),
    ("limits.max_ee_step", -0.1, "limits.max_ee_step"),
    ("limits.max_speed", 1.0, "limits"),
    ("robot.class", "os:system", "robot.class"),
    ("robot.kwargs.sdk", "os", "robot.kwargs.sdk"),
    ("robot.kwargs.limits", {"joint_lower": [0.0]}, "robot.kwargs.limits"),
    ("cameras.front.kwargs.arm", "sim_arm", "cameras.front.kwargs.arm"),
    ("cameras.wrist.kwargs.sdk", "cv2", "cameras.wrist.kwargs.sdk"),
    ("robot.kwargs", [1, 2], "robot.kwargs"),
    ("action_mode", "torque", "action_mode"),
    ("task.obs_keys", ["robot0_eef_pos", "top_image"], "task.obs_keys"),
    ("task.obs_keys", [], "task.obs_keys"),
    ("task.max_episode_steps", 0, "task.max_episode_steps"),
    ("cameras.front.kwargs", {"camera": "front"}, "cameras.front.kwargs"),
    ("calibration", {"cameras": {"top": {"extrinsics": np.eye(4).tolist()}}}, "calibration.cameras.top"),
    ("calibration", {"cameras": {"front": {"extrinsics": (2 * np.eye(4)).tolist()}}}, "calibration.cameras.front.extrinsics"),
    ("calibration", {"joints": []}, "calibration"),
    ("safety", {"watchdog_timeout_s": 0.05}, "safety.watchdog_timeout_s"),
    ("safety", {"home_speed": 0}, "safety"),
])
def test_bad_rig_files_name_the_file_and_the_field(path, value, field):
    with pytest.raises(RigError) as err:
        parse_rig(mutate(path, value), Path("hardware/broken.yaml"))
    assert str(err.value).startswith(f"hardware/broken.yaml: {field}")


def test_load_by_name_or_path_and_missing_rigs(tmp_path):
    with pytest.raises(FileNotFoundError, match="available: .*sim_arm"):
        load_rig("no_such_rig")
    with pytest.raises(FileNotFoundError):
        load_rig(tmp_path / "missing.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(RigError, match="not valid YAML"):
        load_rig(path)
    path.write_text(yaml.safe_dump(mutate("name", "copy")))
    assert load_rig(path).name == "copy"


def test_build_errors_name_the_rig(tmp_path):
    raw = mutate("robot.kwargs.model", "kuka")
    with pytest.raises(RigError, match=r"robot\.kwargs: .*unknown simulated arm model 'kuka'"):
        parse_rig(raw, tmp_path / "kuka.yaml").build_robot()
    raw = mutate("limits.joint_max_velocity", [9.0] * 7)
    with pytest.raises(RigError, match=r"wider than the robot's own"):
        parse_rig(raw, tmp_path / "fast.yaml").build_robot()
    raw = mutate("calibration", {"robot": {"offsets": [0] * 7}})
    with pytest.raises(RigError, match="takes no `calibration`"):
        parse_rig(raw, tmp_path / "cal.yaml").build_robot()


def test_rig_files_name_drivers_from_the_registry():
    from robolearn.registry import CAMERAS, ROBOTS

    for path in RIG_FILES:
        raw = yaml.safe_load(path.read_text())
        assert raw["robot"]["class"] in ROBOTS.names(), path.name  # short names, not import paths
        assert all(c["class"] in CAMERAS.names() for c in (raw.get("cameras") or {}).values()), path.name
    assert load_rig("ur5e").robot.cls == "ur_rtde" and load_rig("ur5e").cameras["front"].cls == "realsense"


def test_old_rig_files_with_import_paths_still_load_and_build():
    raw = mutate("robot.class", "robolearn.hal.drivers.ur_rtde:URRobot")
    raw["cameras"]["front"]["class"] = "robolearn.hal.drivers.opencv_camera:OpenCVCamera"
    rig = parse_rig(raw, Path("old.yaml"))
    assert rig.robot.cls == "ur_rtde" and rig.cameras["front"].cls == "opencv"
    old_sim = parse_rig(mutate("robot.class", "robolearn.hal.sim_arm:SimulatedArm"), Path("old_sim.yaml"))
    assert old_sim.robot.cls == "sim_arm"


def test_an_unregistered_function_named_by_a_rig_is_refused_without_being_called(monkeypatch):
    import robolearn.data.sources as sources

    called = []
    monkeypatch.setattr(sources, "download", lambda *a, **k: called.append((a, k)), raising=False)
    for where in ("robot.class", "cameras.front.class"):
        with pytest.raises(RigError) as err:
            parse_rig(mutate(where, "robolearn.data.sources:download"), Path("hardware/evil.yaml"))
        message = str(err.value)
        assert message.startswith(f"hardware/evil.yaml: {where}: unknown ")
        assert "robolearn.data.sources:download" in message
        known = "sim_arm, ur_rtde" if where == "robot.class" else "opencv, realsense, sim_camera"
        assert known.split(", ")[0] in message and "known:" in message
    assert called == []


def test_loading_a_rig_imports_no_driver():
    import subprocess
    import sys

    code = ("import sys; from robolearn.hal.rig import load_rig\n"
            "for name in ('ur5e', 'so100', 'franka_panda', 'sim_arm'): load_rig(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('robolearn.hal.drivers.') or m.endswith('sim_arm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
