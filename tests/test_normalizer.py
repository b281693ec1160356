"""Normalizer: [min, max] -> [-1, 1] per dimension, exact inverses, constant dimensions, uint8 images, and
statistics that travel with the checkpoint (state_dict)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robolearn.data.normalizer import Normalizer
from robolearn.data.store import EpisodeStore

LO = np.array([-3.0, 0.0, 100.0, 7.0])
HI = np.array([5.0, 1e-3, 612.0, 7.0])  # the last dimension never varies


def fitted() -> Normalizer:
    norm = Normalizer({"state": (4,), "action": (2,)}, image_keys=("img",))
    return norm.fit({"state": {"min": LO, "max": HI},
                     "action": {"min": np.array([-1.0, 10.0]), "max": np.array([1.0, 30.0])}})


def test_min_max_map_to_minus_one_one_per_dimension():
    norm = fitted()
    lo, hi = torch.tensor(LO, dtype=torch.float32), torch.tensor(HI, dtype=torch.float32)
    np.testing.assert_allclose(norm.normalize("state", lo)[:3].numpy(), -1.0, atol=1e-6)
    np.testing.assert_allclose(norm.normalize("state", hi)[:3].numpy(), 1.0, atol=1e-5)
    mid = norm.normalize("state", (lo + hi) / 2)
    np.testing.assert_allclose(mid[:3].numpy(), 0.0, atol=1e-5)
    # affine per dimension: a quarter of the way up maps to -0.5
    q = norm.normalize("state", lo + (hi - lo) / 4)
    np.testing.assert_allclose(q[:3].numpy(), -0.5, atol=1e-5)
    act = norm.normalize("action", torch.tensor([[-1.0, 10.0], [1.0, 30.0], [0.0, 25.0]]))
    np.testing.assert_allclose(act.numpy(), [[-1, -1], [1, 1], [0, 0.5]], atol=1e-6)
    assert act.dtype == torch.float32


def test_round_trip_on_batched_data():
    norm = fitted()
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(LO, HI, size=(16, 2, 4)), dtype=torch.float32)  # (batch, time, dim) broadcasts
    y = norm.normalize("state", x)
    assert y.shape == x.shape
    assert float(y[..., :3].abs().max()) <= 1.0 + 1e-5
    torch.testing.assert_close(norm.unnormalize("state", y), x, rtol=1e-5, atol=1e-4)
    a = torch.tensor(rng.uniform([-1, 10], [1, 30], size=(5, 8, 2)), dtype=torch.float32)
    torch.testing.assert_close(norm.unnormalize("action", norm.normalize("action", a)), a, rtol=1e-6, atol=1e-5)


def test_constant_dimension_is_centred_and_round_trips():
    norm = fitted()
    x = torch.tensor([[0.0, 0.0005, 300.0, 7.0], [1.0, 0.0, 100.0, 7.0]])
    y = norm.normalize("state", x)
    assert torch.isfinite(y).all()
    assert torch.all(y[:, 3] == 0.0)  # constant 7 -> 0 (no division by the zero span)
    assert float(norm.normalize("state", torch.tensor([0.0, 0.0, 100.0, 8.0]))[3]) == pytest.approx(1.0)
    torch.testing.assert_close(norm.unnormalize("state", y), x)
    # a tiny but non-zero span (1e-3 in dimension 1) is still scaled, not treated as constant
    assert float(y[0, 1]) == pytest.approx(0.0, abs=1e-3)
    assert float(y[1, 1]) == pytest.approx(-1.0, abs=1e-3)


def test_uint8_images_map_to_minus_one_one_without_fitting():
    norm = fitted()
    img = torch.tensor([0, 255, 51, 128], dtype=torch.uint8).reshape(1, 2, 2, 1)
    y = norm.normalize("img", img)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.flatten().numpy(), [-1.0, 1.0, 51 / 127.5 - 1, 128 / 127.5 - 1], atol=1e-6)
    back = norm.unnormalize("img", y)
    assert torch.equal(back.round().to(torch.uint8), img)
    all_values = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    assert torch.equal(norm.unnormalize("img", norm.normalize("img", all_values)).round().to(torch.uint8), all_values)


def test_state_dict_round_trip():
    norm = fitted()
    fresh = Normalizer({"state": (4,), "action": (2,)}, image_keys=("img",))
    x = torch.tensor(np.random.default_rng(1).uniform(LO, HI, size=(3, 4)), dtype=torch.float32)
    assert not torch.equal(fresh.normalize("state", x), norm.normalize("state", x))  # unfitted = identity
    torch.testing.assert_close(fresh.normalize("state", x), x)
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh.normalize("state", x), norm.normalize("state", x))
    a = torch.tensor([[0.3, 12.0]])
    assert torch.equal(fresh.unnormalize("action", a), norm.unnormalize("action", a))
    assert set(norm.state_dict()) == {"state__scale", "state__offset", "action__scale", "action__offset"}
    # the statistics are part of the checkpoint: a shape mismatch is refused, not silently broadcast
    with pytest.raises(RuntimeError, match="size mismatch"):
        Normalizer({"state": (3,), "action": (2,)}).load_state_dict(norm.state_dict())


def test_dotted_keys_and_normalize_all():
    norm = Normalizer({"obs.state": (2,)}, image_keys=("obs.img",))
    norm.fit({"obs.state": {"min": np.array([0.0, -2.0]), "max": np.array([10.0, 2.0])}})
    out = norm.normalize_all({"obs.state": torch.tensor([10.0, -2.0]), "obs.img": torch.full((2,), 255, dtype=torch.uint8)})
    torch.testing.assert_close(out["obs.state"], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(out["obs.img"], torch.tensor([1.0, 1.0]))


def test_fit_from_store_stats(tmp_path):
    rng = np.random.default_rng(2)
    store = EpisodeStore.create(tmp_path / "s.zarr")
    data = [rng.normal([0, 50], [1, 10], size=(n, 2)).astype(np.float32) for n in (20, 7)]
    for d in data:
        store.append_episode({"action": d})
    norm = Normalizer({"action": (2,)}).fit({"action": store.stats("action")})
    y = norm.normalize("action", torch.from_numpy(np.concatenate(data)))
    np.testing.assert_allclose(y.min(0).values.numpy(), [-1, -1], atol=1e-5)
    np.testing.assert_allclose(y.max(0).values.numpy(), [1, 1], atol=1e-5)


def test_missing_stats_key():
    norm = Normalizer({"state": (4,), "action": (2,)})
    with pytest.raises(KeyError, match=r"no statistics for 'action'; have \['state'\]"):
        norm.fit({"state": {"min": LO, "max": HI}})
