"""The robot verbs end to end on the simulated arm: teleop collection, deploy, replay; runners; bad input."""
import time

import numpy as np
import pytest
import torch
import yaml

from robolearn.cli import main
from robolearn.commands.robot import check_policy_fits, collect_teleop, deploy, make_teleop, replay, teleoperate
from robolearn.control.clock import SteppedClock
from robolearn.control.replay_runner import ReplayRunner, recorded_actions
from robolearn.control.session_keys import DEFAULT_KEYS, EventQueue, SessionEvent
from robolearn.control.teleop_runner import TeleopRunner
from robolearn.data.store import EpisodeStore
from robolearn.hal.drivers.keyboard_teleop import KEY_BINDINGS
from robolearn.hal.rig import parse_rig
from robolearn.hal.robot import RobotLimits
from robolearn.hal.robot_env import make_robot_spec
from robolearn.hal.safety import RobotHalted
from robolearn.hal.teleop import TeleopCommand
from robolearn.paths import hardware_dir
from robolearn.policies.checkpoint import save_policy
from robolearn.policies.regression import RegressionConfig, RegressionPolicy

LOW_DIM = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos"]
HZ = 20


def rig_dict(**changes):
    """The sim_arm rig at 20 Hz without cameras (cheap on a CI machine), episodes of 10 steps."""
    raw = yaml.safe_load((hardware_dir() / "sim_arm.yaml").read_text())
    raw["cameras"] = {}
    raw["robot"]["kwargs"]["camera_names"] = []
    raw["control_hz"] = HZ
    raw["task"] = {"name": "sim_arm_cube", "obs_keys": LOW_DIM, "max_episode_steps": 10}
    raw["safety"] = {"stale_after_s": 0.5, "watchdog_timeout_s": 1.0, "home_speed": 1.0}
    raw["limits"]["max_ee_step"] = 0.02
    raw.update(changes)
    return raw


@pytest.fixture
def rig_file(tmp_path):
    path = tmp_path / "sim_arm_test.yaml"
    path.write_text(yaml.safe_dump(rig_dict()))
    return path


class ScriptedTeleop:
    """A teleop device holding one velocity command; counts reads."""

    name = "scripted"

    def __init__(self, velocity=(0.1, 0.0, 0.0, 0.0, 0.0, 0.0), gripper=0.0):
        self.velocity, self.gripper = np.array(velocity, float), gripper
        self.reads = 0
        self.connected = False

    def connect(self):
        self.connected = True

    def disconnect(self):
        self.connected = False

    def read(self):
        self.reads += 1
        return TeleopCommand(self.velocity, self.gripper, timestamp=time.monotonic())


LIMITS = RobotLimits(joint_lower=(-1.0,) * 3, joint_upper=(1.0,) * 3, joint_max_velocity=(1.0,) * 3,
                     workspace_low=(0.2, -0.3, 0.0), workspace_high=(0.6, 0.3, 0.5), max_ee_step=0.02,
                     max_ee_rotation_step=0.1)


def spec(mode):
    return make_robot_spec("t", LIMITS, ["robot0_eef_pos", "robot0_eef_quat"], {}, mode, control_hz=10)


def test_session_keys_do_not_clash_with_the_keyboard_teleop():
    assert not set(DEFAULT_KEYS) & {*KEY_BINDINGS, " "}


def test_teleop_runner_turns_velocities_into_delta_actions_within_the_action_bounds():
    runner = TeleopRunner(ScriptedTeleop((0.1, -0.5, 0.0, 0.0, 0.0, 2.0), gripper=1.0), spec("ee_delta"))
    runner.reset([{}])
    action = runner.act()
    # 0.1 m/s for 0.1 s = 1 cm; -0.5 m/s would be 5 cm: clipped to the 2 cm step; 2 rad/s -> 0.2 rad, clipped to 0.1
    np.testing.assert_allclose(action, [[0.01, -0.02, 0.0, 0.0, 0.0, 0.1, 1.0]], atol=1e-7)


def test_teleop_runner_in_absolute_mode_integrates_from_the_measured_pose_and_stops_at_the_workspace():
    runner = TeleopRunner(ScriptedTeleop((0.5, 0.0, 0.0, 0.0, 0.0, 0.0)), spec("ee_absolute"))
    runner.reset([{"robot0_eef_pos": np.array([0.4, 0.1, 0.2]), "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0])}])
    xs = [runner.act()[0, 0] for _ in range(6)]
    np.testing.assert_allclose(xs, [0.45, 0.5, 0.55, 0.6, 0.6, 0.6], atol=1e-6)  # 5 cm a period, then the wall
    assert runner.act()[0, 1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="end effector.*'joint'"):
        TeleopRunner(ScriptedTeleop(), make_robot_spec("t", LIMITS, ["robot0_joint_pos"], {}, "joint", 10))
    with pytest.raises(KeyError, match="robot0_eef_pos"):
        runner.reset([{"robot0_joint_pos": np.zeros(3)}])


def test_replay_runner_plays_the_actions_back_in_order_and_refuses_other_action_meanings(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", fps=10, task="t", attrs={"action_mode": "ee_delta"})
    actions = np.arange(21, dtype=np.float32).reshape(3, 7)
    store.append_episode({"robot0_eef_pos": np.zeros((3, 3), np.float32), "action": actions})
    loaded = recorded_actions(store, 0, spec("ee_delta"))
    runner = ReplayRunner(loaded)
    runner.reset([{}])
    np.testing.assert_array_equal(np.concatenate([runner.act() for _ in range(3)]), actions)
    with pytest.raises(IndexError, match="only 3 actions"):
        runner.act()
    with pytest.raises(ValueError, match="recorded with action_mode 'ee_delta', this rig runs 'ee_absolute'"):
        recorded_actions(store, 0, spec("ee_absolute"))
    with pytest.raises(IndexError, match="episodes 0..0"):
        recorded_actions(store, 1, spec("ee_delta"))


def test_collect_records_teleoperated_episodes_with_timestamps_and_resumes(tmp_path):
    rig = parse_rig(rig_dict())
    out = tmp_path / "teleop.zarr"
    teleop = ScriptedTeleop((0.1, 0.0, 0.0, 0.0, 0.0, 0.0))
    summary = collect_teleop(rig, out, teleop, EventQueue(), n_episodes=2, wait_for_start=False, message=lambda m: None)
    assert summary.saved == [0, 1] and not teleop.connected
    EpisodeStore.open(out, mode="a").close()  # the session released its write lock when it ended
    store = EpisodeStore.open(out)
    assert store.n_episodes == 2 and list(store.episode_lengths) == [10, 10] and store.fps == HZ
    assert store.attrs["rig"] == "sim_arm" and store.attrs["action_mode"] == "ee_delta"
    episode = store.episode(0)
    np.testing.assert_allclose(episode["action"], np.tile([0.005, 0, 0, 0, 0, 0, 0], (10, 1)), atol=1e-7)
    gaps = np.diff(episode["timestamp"])
    assert np.median(gaps) == pytest.approx(1 / HZ, abs=0.01)  # recorded at the rig's rate, real time
    assert episode["robot0_eef_pos"][-1, 0] - episode["robot0_eef_pos"][0, 0] > 0.02  # the arm followed +x
    assert store.episode_meta(1)["seed"] == 1 and store.episode_meta(0)["teleop"] == "scripted"

    collect_teleop(rig, out, ScriptedTeleop(), EventQueue(), n_episodes=1, wait_for_start=False, message=lambda m: None)
    assert EpisodeStore.open(out).n_episodes == 3 and EpisodeStore.open(out).episode_meta(2)["seed"] == 2
    absolute = parse_rig(rig_dict(action_mode="ee_absolute"))
    with pytest.raises(ValueError, match="its action_mode is 'ee_delta', this rig's is 'ee_absolute'"):
        collect_teleop(absolute, out, ScriptedTeleop(), EventQueue(), 1, False, message=lambda m: None)


def x_policy(obs_keys=LOW_DIM):
    """A regression policy whose every chunk is +1 cm in x with the gripper open (weights zero, bias fixed)."""
    rig_spec = parse_rig(rig_dict()).spec()
    config = RegressionConfig(obs_shapes={k: list(rig_spec.obs[k].shape) if k in rig_spec.obs else [3] for k in obs_keys},
                              action_dim=7, hidden=[8], n_obs_steps=1, horizon=4, n_action_steps=4)
    policy = RegressionPolicy(config)
    low, high = np.array(rig_spec.action_low), np.array(rig_spec.action_high)
    policy.normalizer.fit({**{k: {"min": np.full(s, -1.0), "max": np.ones(s)} for k, s in config.obs_shapes.items()},
                           "action": {"min": low, "max": high}})
    target = np.array([0.01, 0, 0, 0, 0, 0, 0.0])
    normalized = 2 * (target - low) / (high - low) - 1
    last = policy.net[-1]
    last.weight.data.zero_()
    last.bias.data = torch.tensor(np.tile(normalized, 4), dtype=torch.float32)
    return policy


def test_deploy_runs_a_checkpoint_on_the_sim_arm_records_it_and_replay_sends_it_again(tmp_path, rig_file, capsys):
    ckpt = save_policy(x_policy(), tmp_path / "ckpt")
    record = tmp_path / "rollouts.zarr"
    assert main(["deploy", "--rig", str(rig_file), str(ckpt), "--episodes", "1", "--record", str(record),
                 "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "missed periods" in printed and "inference:" in printed and "recorded 1 episodes" in printed
    store = EpisodeStore.open(record)
    episode = store.episode(0)
    np.testing.assert_allclose(episode["action"], np.tile([0.01, 0, 0, 0, 0, 0, 0], (10, 1)), atol=1e-5)
    moved = episode["robot0_eef_pos"][-1] - episode["robot0_eef_pos"][0]
    assert moved[0] > 0.04 and abs(moved[1]) < 0.01  # nine commands of 1 cm in x, seen through the loop's lag
    assert store.episode_meta(0)["seed"] == 7 and store.attrs["source"] == "policy rollouts"

    result = replay(parse_rig(rig_dict()), record, 0)
    assert result.steps == 10 and result.seed == 7 and result.end_reason == "max_steps"
    assert result.timing.ticks == 10
    assert main(["replay", "--rig", str(rig_file), str(record), "--episode", "3"]) == 2
    assert "episode 3 does not exist" in capsys.readouterr().err


def test_deploy_refuses_a_policy_that_reads_keys_the_rig_does_not_observe(tmp_path, rig_file, capsys):
    ckpt = save_policy(x_policy([*LOW_DIM, "object"]), tmp_path / "ckpt")
    assert main(["deploy", "--rig", str(rig_file), str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "does not fit rig task 'sim_arm_cube'" in err and "it reads 'object', which the rig does not give" in err
    rig_spec = parse_rig(rig_dict()).spec()
    with pytest.raises(ValueError, match="outputs 2-d actions"):
        check_policy_fits(RegressionConfig(obs_shapes={"robot0_eef_pos": [3]}, action_dim=2), rig_spec)


def test_deploy_with_asynchronous_chunking_on_a_stepped_clock(tmp_path):
    from robolearn.control.chunking import ChunkExecution

    messages = []
    summary = deploy(parse_rig(rig_dict()), x_policy(), 1, EventQueue(), wait_for_start=False,
                     execution=ChunkExecution(mode="ensemble"), clock=SteppedClock(HZ), message=messages.append)
    (result,) = summary.results
    assert result.steps == 10 and summary.kept == 1 and summary.saved == []
    assert any(m.startswith("inference: 10 calls") for m in messages)  # ensembling queries every step


def test_teleop_drives_the_arm_until_the_operator_quits():
    events = EventQueue()
    teleop = ScriptedTeleop((0.0, 0.1, 0.0, 0.0, 0.0, 0.0))
    original = teleop.read

    def read():
        if teleop.reads == 5:
            events.put(SessionEvent.QUIT)
        return original()

    teleop.read = read
    result = teleoperate(parse_rig(rig_dict()), teleop, seconds=10.0, events=events)
    assert result.end_reason == "operator" and result.steps == 6 and not teleop.connected
    assert result.timing.ticks == 6
    with pytest.raises(ValueError, match="unknown teleop device 'joystick'"):
        make_teleop("joystick")


def test_the_operator_labels_a_teleoperated_episode_a_success(tmp_path):
    events = EventQueue()
    teleop = ScriptedTeleop()
    original = teleop.read

    def read():
        if teleop.reads == 3:  # three commands in, the operator presses y
            events.put(SessionEvent.SUCCESS)
        return original()

    teleop.read = read
    out = tmp_path / "labelled.zarr"
    summary = collect_teleop(parse_rig(rig_dict()), out, teleop, events, n_episodes=1, wait_for_start=False,
                             message=lambda m: None)
    (result,) = summary.results
    assert result.end_reason == "success" and result.success and result.steps == 4
    meta = EpisodeStore.open(out).episode_meta(0)
    assert meta["success"] is True and meta["reason"] == "success" and meta["interrupted"] is None


def test_collect_on_a_rig_without_a_terminal_needs_an_episode_count(rig_file, tmp_path, capsys):
    assert main(["collect", "--rig", str(rig_file), "--out", str(tmp_path / "x.zarr")]) == 2
    assert "give --episodes" in capsys.readouterr().err


def test_demonstrations_collected_on_a_rig_train_a_policy_that_is_evaluated_on_the_rig_in_real_time(tmp_path, rig_file):
    from robolearn.cli import compose
    from robolearn.train import RunConfig, Trainer

    store = tmp_path / "teleop.zarr"
    collect_teleop(parse_rig(rig_dict()), store, ScriptedTeleop(), EventQueue(), 2, False, message=lambda m: None)
    config = compose("train", ["task=sim_arm", f"task.env_kwargs.rig={rig_file}", "policy=regression",
                               "policy.hidden=[16]", "policy.horizon=4", "policy.n_action_steps=4", "policy.n_obs_steps=1",
                               f"dataset_path={store}", f"out_dir={tmp_path / 'run'}", "train.steps=3",
                               "train.batch_size=4", "train.final_eval_episodes=1", "train.video_episodes=0",
                               "train.device=cpu"])
    run = RunConfig.from_dict(config)
    assert run.task.on_robot
    report = Trainer(run, progress=False).fit()
    assert report.n_episodes == 1 and report.mean_steps == 10  # the rig task's episode length
    assert report.wall_s > 9 / HZ  # paced by the wall clock: ten commands at 20 Hz take 0.45 s at least
    assert main(["deploy", "--rig", str(rig_file), str(tmp_path / "run" / "checkpoints" / "last")]) == 0


def test_an_overrunning_policy_trips_the_watchdog_the_robot_stops_and_the_recording_is_kept_marked(tmp_path, capsys):
    raw = rig_dict(safety={"stale_after_s": 0.5, "watchdog_timeout_s": 0.2, "home_speed": 1.0})
    rig_file = tmp_path / "strict.yaml"
    rig_file.write_text(yaml.safe_dump(raw))
    policy = x_policy()
    sample = policy.sample
    calls = []

    def slow_second_chunk(obs, n=1, generator=None):
        calls.append(1)
        if len(calls) == 2:
            time.sleep(0.5)  # an inference that overruns the 0.2 s watchdog
        return sample(obs, n=n, generator=generator)

    policy.sample = slow_second_chunk
    record = tmp_path / "rollouts.zarr"
    with pytest.raises(RobotHalted, match="inference has run"):
        deploy(parse_rig(raw), policy, 1, EventQueue(), wait_for_start=False, record=record, message=lambda m: None)
    store = EpisodeStore.open(record)
    meta = store.episode_meta(0)
    assert store.episode_lengths[0] == 4  # the first chunk's four steps, then the halt: nothing after it was sent
    assert meta["interrupted"].startswith("RobotHalted") and meta["reason"] == "interrupted"
