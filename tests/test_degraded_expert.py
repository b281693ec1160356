"""The degraded Lift expert fails the way it is meant to (and only when it is meant to); collection records it."""
import numpy as np
import pytest

from robolearn.sim.collect import collect
from robolearn.sim.experts import make_degraded_expert, make_expert
from robolearn.sim.robosuite_env import RobosuiteEnv
from robolearn.task import TaskConfig


def run(env, expert, seed):
    """One episode: final info, actions, phases in order, the hand's height at every close command, the cube's
    highest point above its start."""
    obs = env.reset(seed=seed)
    expert.reset()
    cube0 = env.body_pose("cube_main")[0][2]
    actions, phases, close_heights, rise, done, info = [], [], [], 0.0, False, {}
    while not done:
        action = expert.act(obs)
        if not phases or phases[-1] != expert.phase:
            phases.append(expert.phase)
        if action[-1] > 0:
            close_heights.append(env.eef_pose()[0][2] - env.body_pose("cube_main")[0][2])
        actions.append(action)
        obs, _, done, info = env.step(action)
        rise = max(rise, env.body_pose("cube_main")[0][2] - cube0)
    return info, np.stack(actions), phases, close_heights, rise


@pytest.fixture(scope="module")
def env():
    env = RobosuiteEnv("lift")
    yield env
    env.close()


def test_clean_expert_succeeds_where_early_close_fails(env):
    clean, degraded = make_expert("lift", env), make_degraded_expert("lift", env, failure="early_close", p=1.0)
    for seed in (0, 1):
        info, _, _, _, rise = run(env, clean, seed)
        assert info["success"] and rise > 0.01  # robosuite: success once the cube is 4 cm above the table top
        info, actions, phases, close_heights, rise = run(env, degraded, seed)
        assert not info["success"] and info["steps"] == env.spec.max_episode_steps  # no retry: it times out
        assert phases == ["approach", "descend", "close_early", "hold_empty"]
        assert min(close_heights) > 0.03  # every close command came with the hand well above the cube
        assert rise < 0.005  # the cube never left the table
        assert np.all(np.abs(actions) <= 1.0)
        assert degraded.episode_info() == {"failure": "early_close"}


def test_release_grasps_then_lets_go(env):
    expert = make_degraded_expert("lift", env, failure="release", p=1.0)
    info, actions, phases, _, rise = run(env, expert, seed=2)
    assert not info["success"] and rise < 0.005
    assert phases == ["approach", "descend", "grasp", "release", "hold_empty"]
    assert actions[-1, -1] == -1.0  # the gripper ends open


def test_p_zero_is_the_clean_expert_action_for_action(env):
    _, clean, _, _, _ = run(env, make_expert("lift", env), seed=3)
    info, same, _, _, _ = run(env, make_degraded_expert("lift", env, p=0.0), seed=3)
    assert info["success"]
    np.testing.assert_array_equal(clean, same)


def test_bad_options_are_named(env):
    with pytest.raises(ValueError, match="unknown failure 'drop'"):
        make_degraded_expert("lift", env, failure="drop")
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        make_degraded_expert("lift", env, p=1.5)


def test_collect_records_the_failure_in_metadata(tmp_path):
    task = TaskConfig(name="lift", env="robolearn.sim.robosuite_env:RobosuiteEnv",
                      env_kwargs={"task": "lift", "obs_type": "low_dim", "action_mode": "delta"},
                      obs_keys=["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"])
    store = collect(task, 1, tmp_path / "deg.zarr", expert="degraded", progress=False,
                    expert_options={"failure": "early_close", "p": 1.0})
    meta = store.episode_meta(0)
    assert meta["success"] is False and meta["failure"] == "early_close"
    assert store.attrs["expert_options"] == {"failure": "early_close", "p": 1.0}
    with pytest.raises(ValueError, match="expert_options"):  # resuming with other options is refused
        collect(task, 2, tmp_path / "deg.zarr", expert="degraded", progress=False, expert_options={"p": 0.5})
