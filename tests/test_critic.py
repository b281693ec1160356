"""Chunk critics: loss and target math by hand, and learned values that order a chain MDP's states and actions."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from robolearn.data.store import EpisodeStore
from robolearn.models.critic import (
    ChunkTransitions,
    Critic,
    CriticConfig,
    chunk_rewards,
    expectile_loss,
    load_critic,
    returns_to_go,
    save_critic,
    step_rewards,
    td_target,
    train_critic,
)

GOAL, GAMMA = 6, 0.9  # chain states 0..5, reaching 6 ends the episode with reward 1


def chain_store(path, n_episodes: int = 150, seed: int = 0, reward_key: bool = False) -> EpisodeStore:
    """Random walk on 0..GOAL (actions -1 / +1, reflecting at 0) until the goal or 60 steps."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        x = int(rng.integers(0, GOAL))
        xs, actions, rewards = [], [], []
        for _ in range(60):
            a = 1 if rng.random() < 0.5 else -1
            xs.append([x])
            actions.append([a])
            x = min(max(x + a, 0), GOAL)
            rewards.append(float(x == GOAL))
            if x == GOAL:
                break
        data = {"state": np.asarray(xs, np.float32), "action": np.asarray(actions, np.float32)}
        if reward_key:
            data["reward"] = np.asarray(rewards, np.float32)
        episodes.append((data, {"success": x == GOAL}))
    store = EpisodeStore.create(path, fps=10, task="chain")
    store.append_episodes(episodes, commit_every=n_episodes)
    return store


def behaviour_values() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact V, Q(+1), Q(-1) of the 50/50 random walk: V(x) = 0.5 Q(x, +1) + 0.5 Q(x, -1)."""
    a, b = np.eye(GOAL), np.zeros(GOAL)
    for x in range(GOAL):
        if x + 1 == GOAL:
            b[x] += 0.5
        else:
            a[x, x + 1] -= 0.5 * GAMMA
        a[x, max(x - 1, 0)] -= 0.5 * GAMMA
    v = np.linalg.solve(a, b)
    q_right = np.array([1.0 if x + 1 == GOAL else GAMMA * v[x + 1] for x in range(GOAL)])
    q_left = np.array([GAMMA * v[max(x - 1, 0)] for x in range(GOAL)])
    return v, q_right, q_left


def chain_critic(store: EpisodeStore, method: str, h: int) -> Critic:
    cfg = CriticConfig(obs_keys=["state"], n_obs_steps=1, action_steps=h, method=method, gamma=GAMMA, expectile=0.9,
                       target_update=0.05, hidden=[64, 64], steps=400, batch_size=128, lr=3e-3, device="cpu")
    return train_critic(store, cfg)


def values(critic: Critic, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V(x), Q(x, all +1), Q(x, all -1) for x = 0..GOAL-1."""
    xs = torch.arange(GOAL, dtype=torch.float32)[:, None, None]
    chunks = torch.tensor([[[1.0]] * h, [[-1.0]] * h])[None].expand(GOAL, -1, -1, -1)
    with torch.no_grad():
        q = critic.q_values({"state": xs}, chunks).numpy()
        return critic.value({"state": xs}).numpy(), q[:, 0], q[:, 1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return chain_store(tmp_path_factory.mktemp("chain") / "chain.zarr")


@pytest.fixture(scope="module")
def mc_critic(store):
    return chain_critic(store, "mc", h=1)


# ------------------------------------------------------------------------------------------ math by hand
def test_expectile_loss_by_hand():
    diff = torch.tensor([1.0, -1.0, 2.0])
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (1 + 1 + 4) / 3)
    prediction, target = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, 0.5, -0.5])
    assert expectile_loss(target - prediction, 0.5).item() == pytest.approx(0.5 * F.mse_loss(prediction, target).item())
    # tau = 0.9: a prediction below the target costs 9 times one above it
    assert expectile_loss(torch.tensor([1.0]), 0.9).item() == pytest.approx(0.9)
    assert expectile_loss(torch.tensor([-1.0]), 0.9).item() == pytest.approx(0.1)
    # the minimizing constant of targets {0, 1} is the expectile itself: tau (1 - v) = (1 - tau) v -> v = tau
    targets = torch.tensor([0.0, 1.0])
    losses = {v: expectile_loss(targets - v, 0.9).item() for v in (0.85, 0.9, 0.95)}
    assert losses[0.9] < losses[0.85] and losses[0.9] < losses[0.95]


def test_chunk_rewards_returns_and_td_target_by_hand():
    rewards = np.array([0.0, 0.0, 1.0, 0.0, 2.0])
    ends = np.array([3, 5])  # episodes [0, 1, 2] and [3, 4]
    r_chunk, done = chunk_rewards(rewards, ends, h=2, gamma=0.5)
    np.testing.assert_allclose(r_chunk, [0.0, 0.5, 1.0, 1.0, 2.0])  # never sums across an episode boundary
    np.testing.assert_array_equal(done, [0, 1, 1, 1, 1])  # t + h reaches the end: nothing to bootstrap from
    np.testing.assert_allclose(returns_to_go(rewards, ends, 0.5), [0.25, 0.5, 1.0, 1.0, 2.0])
    target = td_target(torch.tensor([0.0, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 100.0]), 0.5, 2)
    np.testing.assert_allclose(target.numpy(), [0.0 + 0.25 * 4.0, 0.5])  # gamma^h discount; done drops V


def test_step_rewards_from_key_or_success_metadata(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    for length, success in ((3, True), (2, False), (1, True)):
        store.append_episode({"state": np.zeros((length, 1), np.float32)}, success=success)
    np.testing.assert_array_equal(step_rewards(store), [0, 0, 1, 0, 0, 1])
    with pytest.raises(KeyError, match="no 'reward' key"):
        step_rewards(store, "reward")

    keyed = EpisodeStore.create(tmp_path / "k.zarr")
    keyed.append_episode({"state": np.zeros((2, 1), np.float32), "reward": np.array([0.5, 0.25], np.float32)})
    np.testing.assert_array_equal(step_rewards(keyed), [0.5, 0.25])  # the key wins; no metadata needed
    with pytest.raises(ValueError, match=r"episodes \[0\] have no 'success'"):
        step_rewards(keyed, "success")


def test_transitions_gather_history_chunk_and_next_state(tmp_path):
    store = EpisodeStore.create(tmp_path / "t.zarr")
    for begin, length in ((0, 5), (5, 3)):
        steps = np.arange(begin, begin + length, dtype=np.float32)[:, None]
        store.append_episode({"state": steps, "action": steps + 100}, success=True)
    cfg = CriticConfig(obs_keys=["state"], n_obs_steps=2, action_steps=2, gamma=0.5)
    data = ChunkTransitions(store, cfg, step_rewards(store))
    assert len(data) == 8  # every step of every episode is a decision point
    batch = data.gather(np.arange(8))
    current = batch["obs"]["state"][:, -1, 0].numpy()
    np.testing.assert_array_equal(current, np.arange(8))
    np.testing.assert_array_equal(batch["obs"]["state"][:, 0, 0].numpy(), [0, 0, 1, 2, 3, 5, 5, 6])  # edge padding
    np.testing.assert_array_equal(batch["action"][:, :, 0].numpy() - 100, [[0, 1], [1, 2], [2, 3], [3, 4], [4, 4],
                                                                          [5, 6], [6, 7], [7, 7]])
    nxt = batch["next_obs"]["state"][:, -1, 0].numpy()
    np.testing.assert_array_equal(nxt[batch["done"].numpy() == 0], [2, 3, 4, 7])  # s_{t+h} inside the episode
    np.testing.assert_array_equal(batch["done"].numpy(), [0, 0, 0, 1, 1, 0, 1, 1])
    np.testing.assert_allclose(batch["r_chunk"].numpy(), [0, 0, 0, 0.5, 1, 0, 0.5, 1])


# ------------------------------------------------------------------------------------------ learned values
def test_iql_orders_chain_states_and_chunks(store, mc_critic):
    v, q_right, q_left = values(chain_critic(store, "iql", h=2), h=2)
    assert np.all(np.diff(v) > 0), f"V must rise towards the goal, got {v}"
    assert np.all(q_right > q_left + 0.05), f"(+1, +1) must beat (-1, -1) everywhere: {q_right} vs {q_left}"
    optimal = GAMMA ** (GOAL - 1 - np.arange(GOAL))  # V*(x): reward 1 after GOAL - x steps to the right
    assert np.all(v < optimal + 0.1), f"IQL's V {v} should stay near or below V* {optimal}"
    v_mc, _, _ = values(mc_critic, h=1)
    assert np.all(v > v_mc), f"the upper expectile must value states above the random behaviour: {v} vs {v_mc}"


def test_mc_baseline_recovers_behaviour_values(mc_critic):
    v, q_right, q_left = values(mc_critic, h=1)
    v_true, q_right_true, q_left_true = behaviour_values()
    np.testing.assert_allclose(v, v_true, atol=0.1)
    np.testing.assert_allclose(q_right, q_right_true, atol=0.1)
    np.testing.assert_allclose(q_left, q_left_true, atol=0.1)
    assert np.all(q_right > q_left)


def test_checkpoint_round_trip(mc_critic, tmp_path):
    path = save_critic(mc_critic, tmp_path / "critic", info={"trained_on": "chain"})
    loaded = load_critic(path, device="cpu")
    assert loaded.config == mc_critic.config
    for a, b in zip(values(mc_critic, 1), values(loaded, 1)):
        np.testing.assert_array_equal(a, b)  # the normalizer travels with the weights
    with pytest.raises(FileNotFoundError, match="no critic checkpoint"):
        load_critic(tmp_path)


def test_bad_input_is_refused_clearly(store):
    with pytest.raises(ValueError, match="method must be one of"):
        CriticConfig(method="dqn")
    with pytest.raises(ValueError, match="obs_keys is empty"):
        train_critic(store, CriticConfig(steps=0))
    with pytest.raises(KeyError, match="lacks keys \\['pixels'\\]"):
        train_critic(store, CriticConfig(obs_keys=["pixels"], steps=0))
    critic = Critic(CriticConfig(obs_shapes={"state": [1]}, action_dim=1, n_obs_steps=1, action_steps=2))
    with pytest.raises(ValueError, match=r"chunks must be \(B, K, action_steps, action_dim\) = \(3, K, 2, 1\)"):
        critic.q_values({"state": torch.zeros(3, 1, 1)}, torch.zeros(3, 4, 1, 1))
    with pytest.raises(ValueError, match=r"observation 'state' must be \(B, T >= 1, 1\)"):
        critic.value({"state": torch.zeros(3, 1, 2)})


@pytest.mark.parametrize("name", ["iql", "mc"])
def test_shipped_configs_build(name):
    path = Path(__file__).resolve().parents[1] / "configs" / "critic" / f"{name}.yaml"
    fields = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "name"}
    assert CriticConfig(**fields).method == name
