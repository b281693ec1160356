"""Training windows over an EpisodeStore: counts, edge padding, episode boundaries, caching and batching.

Every value in the test store encodes where it came from: column 0 is the global step index and column 1 the
episode index, and the image's pixels are the global step, so a window's content tells exactly which rows it
gathered."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec, to_device, window_index

LENGTHS = [12, 4, 9]  # the 4-step episode is too short for a horizon of 8 with 2 steps of padding
SPEC = WindowSpec(obs_keys=("state", "img"), n_obs_steps=2, horizon=8, n_action_steps=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "store.zarr"
    store = EpisodeStore.create(path)
    begin = 0
    for ep, n in enumerate(LENGTHS):
        steps = np.arange(begin, begin + n, dtype=np.float32)
        state = np.stack([steps, np.full(n, ep, np.float32), -steps], axis=1)
        action = np.stack([steps + 0.5, np.full(n, ep, np.float32)], axis=1)
        img = np.broadcast_to(steps.astype(np.uint8)[:, None, None, None], (n, 6, 5, 3)).copy()
        store.append_episode({"state": state, "action": action, "img": img})
        begin += n
    return EpisodeStore.open(path)


def expected_count(lengths, spec):
    return sum(max(0, n - spec.horizon + spec.pad_before + spec.pad_after + 1) for n in lengths)


def reference_window(lengths, spec, episode, start):
    """The (obs steps, action steps) global rows diffusion_policy's SequenceSampler would use: a window starting
    at episode-relative step `start` (possibly negative), edge-padded with the episode's first/last frame."""
    begin = sum(lengths[:episode])
    clamp = lambda s: begin + min(max(s, 0), lengths[episode] - 1)  # noqa: E731
    obs = [clamp(start + t) for t in range(spec.n_obs_steps)]
    act = [clamp(start + t) for t in range(spec.horizon)]
    return obs, act


def test_padding_properties():
    spec = WindowSpec(obs_keys=("state",), n_obs_steps=3, horizon=16, n_action_steps=8)
    assert (spec.pad_before, spec.pad_after, spec.action_key) == (2, 7, "action")


@pytest.mark.parametrize("n_obs,horizon,n_act", [(2, 8, 2), (1, 4, 4), (2, 16, 8), (3, 5, 1)])
def test_window_count_matches_diffusion_policy_formula(n_obs, horizon, n_act):
    spec = WindowSpec(obs_keys=("state",), n_obs_steps=n_obs, horizon=horizon, n_action_steps=n_act)
    lengths = [12, 4, 9, 1, 30]
    index = window_index(np.cumsum(lengths), spec)
    assert index.shape == (expected_count(lengths, spec), 3) and index.dtype == np.int64
    # rows are (start, episode begin, episode end); per episode the starts run over a contiguous range
    begins = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for ep, n in enumerate(lengths):
        rows = index[index[:, 1] == begins[ep]]
        assert np.all(rows[:, 2] == begins[ep] + n)
        want = list(range(begins[ep] - spec.pad_before, begins[ep] + n - horizon + spec.pad_after + 1))
        assert rows[:, 0].tolist() == want
    assert window_index(np.zeros(0, np.int64), spec).shape == (0, 3)


def test_every_window_matches_reference_and_never_crosses_episodes(store):
    windows = Windows(store, SPEC, cache="ram")
    assert len(windows) == expected_count(LENGTHS, SPEC) == (12 - 8 + 1 + 1 + 1) + 0 + (9 - 8 + 1 + 1 + 1) == 11
    batch = windows.gather(np.arange(len(windows)))
    state, img, action = batch["obs"]["state"], batch["obs"]["img"], batch["action"]
    assert state.shape == (11, SPEC.n_obs_steps, 3)  # only the observed frames, not the whole horizon
    assert img.shape == (11, SPEC.n_obs_steps, 6, 5, 3) and img.dtype == np.uint8
    assert action.shape == (11, SPEC.horizon, 2) and action.dtype == np.float32
    begins = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    for w, (start, ep_begin, ep_end) in enumerate(windows.index):
        episode = int(np.searchsorted(begins, ep_begin))
        obs_rows, act_rows = reference_window(LENGTHS, SPEC, episode, int(start - ep_begin))
        np.testing.assert_array_equal(state[w, :, 0], obs_rows)
        np.testing.assert_array_equal(state[w, :, 2], -np.array(obs_rows, np.float32))
        np.testing.assert_array_equal(img[w, :, 0, 0, 0], obs_rows)
        np.testing.assert_array_equal(action[w, :, 0], np.array(act_rows) + 0.5)
        # one window, one episode
        assert np.all(state[w, :, 1] == episode) and np.all(action[w, :, 1] == episode)
        assert ep_begin <= min(obs_rows + act_rows) and max(obs_rows + act_rows) < ep_end


def test_edge_padding_repeats_first_obs_and_last_action(store):
    windows = Windows(store, SPEC, cache="ram")
    first = windows.gather([0])
    np.testing.assert_array_equal(first["obs"]["state"][0, :, 0], [0, 0])  # [first, first]
    np.testing.assert_array_equal(first["obs"]["img"][0, :, 0, 0, 0], [0, 0])
    np.testing.assert_array_equal(first["action"][0, :, 0], np.array([0, 0, 1, 2, 3, 4, 5, 6]) + 0.5)
    # the last window of episode 0 (steps 0..11) starts at 5: its chunk runs pad_after = 1 step past the end,
    # which repeats the last action (step 11) instead of reading episode 1's first step (12)
    last_ep0 = int(np.flatnonzero(windows.index[:, 1] == 0)[-1])
    last = windows.gather([last_ep0])
    np.testing.assert_array_equal(last["obs"]["state"][0, :, 0], [5, 6])
    np.testing.assert_array_equal(last["action"][0, :, 0], np.array([5, 6, 7, 8, 9, 10, 11, 11]) + 0.5)
    np.testing.assert_array_equal(last["action"][0, :, 1], np.zeros(8))
    # the same at the end of the store: episode 2 covers steps 16..24
    tail = windows.gather([len(windows) - 1])
    np.testing.assert_array_equal(tail["action"][0, :, 0], np.array([18, 19, 20, 21, 22, 23, 24, 24]) + 0.5)
    np.testing.assert_array_equal(tail["action"][0, :, 1], np.full(8, 2))


def test_uncached_reads_give_identical_batches(store):
    ram = Windows(store, SPEC, cache="ram")
    disk = Windows(store, SPEC, cache="none")
    assert ram.cached and not disk.cached
    assert Windows(store, SPEC).cached  # "auto": this tiny store fits in RAM
    np.testing.assert_array_equal(ram.index, disk.index)
    idx = np.array([8, 0, 3, 3, 5, 7, 1])
    a, b = ram.gather(idx), disk.gather(idx)
    for key in SPEC.obs_keys:
        assert a["obs"][key].dtype == b["obs"][key].dtype
        np.testing.assert_array_equal(a["obs"][key], b["obs"][key])
    np.testing.assert_array_equal(a["action"], b["action"])
    ta = list(ram.batches(4, np.random.default_rng(7)))
    tb = list(disk.batches(4, np.random.default_rng(7)))
    assert len(ta) == len(tb) == 2  # 11 windows, drop_last
    for x, y in zip(ta, tb):
        assert torch.equal(x["action"], y["action"])
        assert all(torch.equal(x["obs"][k], y["obs"][k]) for k in SPEC.obs_keys)


def window_ids(batch) -> list[tuple]:
    """A window's identity: its observed steps and its action steps (unique per window start)."""
    obs = batch["obs"]["state"][:, :, 0].tolist()
    act = batch["action"][:, :, 0].tolist()
    return [tuple(o + a) for o, a in zip(obs, act)]


def test_batches_are_tensors_and_cover_each_window_once(store):
    windows = Windows(store, SPEC, cache="ram")
    all_ids = window_ids(windows.gather(np.arange(len(windows))))
    assert len(set(all_ids)) == len(windows) == 11

    batches = list(windows.batches(2, np.random.default_rng(0)))  # drop_last: 5 full batches of 11 windows
    assert len(batches) == 5
    for batch in batches:
        assert isinstance(batch["action"], torch.Tensor) and batch["action"].shape == (2, 8, 2)
        assert batch["action"].dtype == torch.float32 and batch["action"].device.type == "cpu"
        assert batch["obs"]["state"].shape == (2, 2, 3) and batch["obs"]["state"].dtype == torch.float32
        assert batch["obs"]["img"].shape == (2, 2, 6, 5, 3) and batch["obs"]["img"].dtype == torch.uint8
    seen = [i for batch in batches for i in window_ids(batch)]
    assert len(seen) == 10 and len(set(seen)) == 10 and set(seen) <= set(all_ids)

    full = list(windows.batches(2, np.random.default_rng(0), drop_last=False))
    assert [len(b["action"]) for b in full] == [2, 2, 2, 2, 2, 1]
    seen = [i for batch in full for i in window_ids(batch)]
    assert sorted(seen) == sorted(all_ids)  # every window exactly once per epoch

    other = [i for b in windows.batches(2, np.random.default_rng(1), drop_last=False) for i in window_ids(b)]
    assert other != seen and sorted(other) == sorted(all_ids)  # a different seed shuffles differently
    with pytest.raises(ValueError, match="batch_size 12 exceeds the 11 windows"):
        next(windows.batches(12, np.random.default_rng(0)))


def test_to_device_keeps_values_and_dtypes(store):
    batch = Windows(store, SPEC, cache="ram").gather([0, 4])
    moved = to_device(batch, "cpu")
    assert moved["obs"]["img"].dtype == torch.uint8
    np.testing.assert_array_equal(moved["obs"]["img"].numpy(), batch["obs"]["img"])
    np.testing.assert_array_equal(moved["action"].numpy(), batch["action"])


def test_episode_subset(store):
    sub = Windows(store, SPEC, episodes=[2], cache="ram")
    assert len(sub) == 9 - 8 + 1 + 1 + 1
    batch = sub.gather(np.arange(len(sub)))
    assert np.all(batch["obs"]["state"][:, :, 1] == 2) and np.all(batch["action"][:, :, 1] == 2)
    np.testing.assert_array_equal(batch["obs"]["state"][:, -1, 0], [16, 17, 18, 19])  # current steps
    both = Windows(store, SPEC, episodes=[0, 2], cache="none")
    assert len(both) == len(Windows(store, SPEC)) == 11  # episode 1 contributes no windows anyway
    with pytest.raises(ValueError, match=r"no windows: every selected episode is shorter than horizon - padding \(8 - 2\)"):
        Windows(store, SPEC, episodes=[1])


def test_errors(store, tmp_path):
    with pytest.raises(KeyError, match="has no key 'wrist' .*check the task's obs keys"):
        Windows(store, WindowSpec(obs_keys=("state", "wrist"), n_obs_steps=2, horizon=8, n_action_steps=2))
    with pytest.raises(KeyError, match="has no key 'act'"):
        Windows(store, WindowSpec(obs_keys=("state",), n_obs_steps=2, horizon=8, n_action_steps=2, action_key="act"))
    with pytest.raises(ValueError, match="cache must be one of auto, ram, disk, none, got 'gpu'"):
        Windows(store, SPEC, cache="gpu")

    # a store whose keys are defined but holds no committed episode (the only append was refused)
    empty = EpisodeStore.create(tmp_path / "empty.zarr")
    with pytest.raises(ValueError, match="metadata"):
        empty.append_episode({"state": np.zeros((10, 3), np.float32), "action": np.zeros((10, 2), np.float32),
                              "img": np.zeros((10, 6, 5, 3), np.uint8)}, score=float("nan"))
    assert empty.n_episodes == 0 and set(empty.keys) == {"state", "action", "img"}
    with pytest.raises(ValueError, match="has no episodes to train on"):
        Windows(empty, SPEC)
    # a brand-new store has no keys yet: the key check speaks first
    with pytest.raises(KeyError, match=r"has no key 'state' \(it has \[\]\)"):
        Windows(EpisodeStore.create(tmp_path / "new.zarr"), SPEC)
