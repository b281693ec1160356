"""The Push-T adapter against the real gym-pusht simulator."""
import numpy as np
import pytest

from robolearn.env import Env, Observation
from robolearn.sim.pusht import PushTEnv, pusht_spec


@pytest.fixture(params=["state", "image"])
def env(request):
    e = PushTEnv(obs_type=request.param)
    yield e
    e.close()


def _agent_xy(obs):
    return obs["state"][:2] if "state" in obs else obs["agent_pos"]


def test_spec_declarations():
    spec = pusht_spec("state")
    assert spec.name == "pusht" and spec.obs["state"].shape == (5,) and spec.obs["state"].dtype == "float32"
    image = pusht_spec("image")
    assert image.name == "pusht_image" and image.obs["image"].is_image and image.obs["image"].shape == (96, 96, 3)
    for s in (spec, image):
        assert (s.action_dim, s.control_hz, s.max_episode_steps) == (2, 10.0, 300)
        assert s.action_low == (0.0, 0.0) and s.action_high == (512.0, 512.0)
    with pytest.raises(ValueError, match="obs_type"):
        pusht_spec("pixels")


def test_reset_and_step_match_spec(env):
    assert isinstance(env, Env)
    obs = env.reset(seed=0)
    assert isinstance(obs, Observation) and obs.timestamp == 0.0
    assert set(obs) == set(env.spec.obs)
    env.spec.check_obs(obs)
    obs, reward, done, info = env.step(np.array([256.0, 256.0]))
    env.spec.check_obs(obs)
    assert obs.timestamp == pytest.approx(0.1)
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0
    assert done is False
    assert isinstance(info["coverage"], float) and info["max_coverage"] >= info["coverage"]
    assert isinstance(info["success"], bool) and info["truncated"] is False
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (384, 384, 3)


def test_seeding_is_deterministic(env):
    a, b, c = env.reset(seed=3), env.reset(seed=3), env.reset(seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(3), r"shape \(2,\)"),
        (np.zeros((1, 2)), r"shape \(2,\)"),
        (np.array([np.nan, 1.0]), "finite"),
        (np.array([np.inf, 1.0]), "finite"),
    ],
)
def test_bad_actions_raise(action, message):
    env = PushTEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        PushTEnv().step(np.zeros(2))


def test_agent_moves_toward_target(env):
    start = _agent_xy(env.reset(seed=1)).copy()
    target = np.array([100.0, 100.0]) if np.linalg.norm(start - 100.0) > 150 else np.array([400.0, 400.0])
    dist0 = np.linalg.norm(start - target)
    obs = None
    for _ in range(20):
        obs, *_ = env.step(target)
    assert np.linalg.norm(_agent_xy(obs) - target) < 0.05 * dist0


def test_done_after_max_episode_steps():
    env = PushTEnv(obs_type="state")
    obs = env.reset(seed=0)
    hold = obs["state"][:2].astype(np.float64)  # agent stays put, so the block never reaches the goal
    for i in range(1, 301):
        obs, _, done, info = env.step(hold)
        assert done is (i == 300)
    assert info["truncated"] is True and info["success"] is False
    assert obs.timestamp == pytest.approx(30.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(hold)
    short = PushTEnv(max_episode_steps=3)
    assert short.spec.max_episode_steps == 3
    short.reset(seed=0)
    assert [short.step(hold)[2] for _ in range(3)] == [False, False, True]
