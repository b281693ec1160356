"""Mixed precision, compilation and data overlap in TrainLoop / Trainer, on what a CPU can show: bf16 autocast,
the fp16 gradient scaler (a loss made to overflow), torch.compile wiring, the data-wait share, prefetched batches
(StepBatches shares and resume), uint8 images kept uint8 to the device. CUDA-only checks are marked `cuda`."""
import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from robolearn.data.prefetch import Prefetcher
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import StepBatches, Windows, WindowSpec, epoch_order, to_device, to_tensors
from robolearn.train import Trainer
from robolearn.train.loop import Schedule, TrainLoop
from robolearn.train.precision import resolve_precision
from tests.distributed_worker import tiny_run
from tests.helpers import synthetic_pusht_store

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


def linear_loop(steps=30, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, TrainLoop(model, optimizer, Schedule(0.1, steps, decay="constant"), what="linear", log_every=10,
                            **kwargs)


def data(n=64, seed=0):
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 3)), dtype=torch.float32)
    return x, x @ TRUE_W.T


def test_bf16_autocasts_the_loss_and_keeps_fp32_weights():
    model, loop = linear_loop(precision="bf16")
    seen = []

    def loss(batch):
        out = model(batch[0])
        seen.append(out.dtype)
        return nn.functional.mse_loss(out.float(), batch[1])
    first = loop.train_step(data(), loss)["loss"]
    loop.run(iter([data()] * 40), loss)
    assert seen[0] == torch.bfloat16 and model.weight.dtype == torch.float32
    assert loop.precision == "bf16" and loop.scaler is None
    assert nn.functional.mse_loss(model(data()[0]), data()[1]).item() < 0.05 * first
    assert torch.allclose(model.weight, TRUE_W, atol=0.1)  # bf16 steps still reach the answer


def test_fp16_scaler_skips_an_overflowing_step_halves_the_scale_and_resumes_it(tmp_path):
    model, loop = linear_loop(precision="fp16")
    assert loop.scaler is not None and loop.scaler.get_scale() == 65536.0
    before = model.weight.detach().clone()
    x, y = data()
    overflow = lambda batch: (model(batch[0]).float() * 1e36).mean()  # noqa: E731  scaled gradients reach inf
    loop.train_step((x, y), overflow)
    assert torch.equal(model.weight, before), "a step whose gradients overflowed must be skipped"
    assert loop.scaler.get_scale() == 32768.0
    # a loss small enough that its scaled fp16 gradients fit (fp16 tops out at 65504): this step is taken
    loop.train_step((x, y), lambda batch: 1e-4 * nn.functional.mse_loss(model(batch[0]).float(), batch[1]))
    assert not torch.equal(model.weight, before) and loop.scaler.get_scale() == 32768.0
    loop.save_state(tmp_path / "state.safetensors")
    with safe_open(str(tmp_path / "state.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["grad_scaler"])["scale"] == 32768.0
    _, resumed = linear_loop(precision="fp16")
    resumed.load_state(tmp_path / "state.safetensors")
    assert resumed.scaler.get_scale() == 32768.0
    _, fp32 = linear_loop(precision="fp32")
    fp32.load_state(tmp_path / "state.safetensors")  # another precision resumes the same weights, without a scaler
    assert fp32.scaler is None and fp32.step == 2


def test_precision_auto_is_fp32_on_cpu_and_unknown_names_are_refused(tmp_path):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="train.precision must be one of auto, fp32, bf16, fp16"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_run(tmp_path, precision="half")


def test_compiled_loss_steps_like_the_eager_one():
    results = []
    for compile_ in (False, "eager"):  # "eager": dynamo traces the loss, no code generation (fast on CPU)
        model, loop = linear_loop(steps=3, compile=compile_)
        loss = lambda batch, m=model: nn.functional.mse_loss(m(batch[0]), batch[1])  # noqa: E731
        loop.run(iter([data(seed=s) for s in range(3)]), loss)
        results.append(model.weight.detach().clone())
        if compile_:
            assert type(loop.objective).__name__ == "OptimizedModule"
    torch.testing.assert_close(results[0], results[1])


def test_the_trainer_passes_compile_and_precision_to_the_loop(tmp_path):
    store = synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=2, length=20)
    trainer = Trainer(tiny_run(tmp_path / "run", compile=True, precision="bf16"), store=store, progress=False)
    assert trainer.loop.compile is True and trainer.loop.precision == "bf16"


def test_the_share_of_step_time_waiting_for_data_is_logged(tmp_path):
    model, loop = linear_loop(steps=10, out_dir=tmp_path)

    def slow_batches():
        while True:
            time.sleep(0.02)  # data far slower than the step
            yield data()
    loop.run(slow_batches(), lambda batch: nn.functional.mse_loss(model(batch[0]), batch[1]))
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert 0.8 < record["data_wait_share"] <= 1.0
    _, fast = linear_loop(steps=10, out_dir=tmp_path / "fast")
    ready = [data()] * 10
    fast.run(iter(ready), lambda batch: nn.functional.mse_loss(fast.model(batch[0]), batch[1]))
    assert json.loads((tmp_path / "fast" / "log.jsonl").read_text())["data_wait_share"] < 0.5


def test_the_prefetcher_keeps_order_raises_the_producers_error_and_stops_its_thread():
    with Prefetcher(iter(range(50)), depth=3) as ahead:
        assert list(ahead) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")
    ahead = Prefetcher(failing())
    assert next(ahead) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(ahead)
    endless = Prefetcher(iter(lambda: 0, 1), depth=2)
    next(endless)
    endless.close()
    assert not endless._thread.is_alive() and not any(t.name == "robolearn-prefetch" and t.is_alive()
                                                       for t in threading.enumerate())


def test_rank_shares_are_disjoint_and_make_the_single_process_batch(tmp_path):
    store = synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=3, length=20)
    windows = Windows(store, WindowSpec(("state",), 2, 8, 4))
    one = StepBatches(windows, 12, seed=7)
    shares = [StepBatches(windows, 12, seed=7, rank=r, world_size=3) for r in range(3)]
    per_epoch = len(windows) // 12
    for step in (0, 1, per_epoch - 1, per_epoch, 3 * per_epoch + 2):
        parts = [s.indices(step) for s in shares]
        assert all(len(p) == 4 for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), one.indices(step))
    epoch = np.concatenate([one.indices(k) for k in range(per_epoch)])
    assert len(set(epoch.tolist())) == len(epoch)  # an epoch draws each window at most once
    assert not np.array_equal(epoch_order(len(windows), 7, 0), epoch_order(len(windows), 7, 1))
    resumed = StepBatches(windows, 12, seed=7, first_step=5)  # a resume continues the same stream
    np.testing.assert_array_equal(next(iter(resumed))["action"], windows.gather(one.indices(5))["action"])
    with pytest.raises(ValueError, match="does not split evenly"):
        StepBatches(windows, 12, seed=7, rank=0, world_size=5)


def test_uint8_images_stay_uint8_until_the_device(tmp_path):
    store = EpisodeStore.create(tmp_path / "img.zarr")
    store.append_episode({"image": np.full((10, 8, 8, 3), 200, np.uint8), "action": np.zeros((10, 2), np.float32)})
    windows = Windows(store, WindowSpec(("image",), 2, 4, 2))
    batch = to_device(to_tensors(windows.gather(np.arange(4))), "cpu")
    assert batch["obs"]["image"].dtype == torch.uint8 and batch["obs"]["image"].shape == (4, 2, 8, 8, 3)
    assert batch["action"].dtype == torch.float32


def test_a_trainer_with_prefetching_equals_one_without(tmp_path):
    store = synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=3, length=20)
    weights = []
    for prefetch in (0, 2):
        trainer = Trainer(tiny_run(tmp_path / f"run{prefetch}", steps=5, prefetch=prefetch), store=store, progress=False)
        trainer.fit()
        weights.append([p.detach().clone() for p in trainer.policy.parameters()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none on this machine); "
                                                               "scripts/gpu_check.sh runs it where there is one")


@pytest.mark.cuda
@cuda
def test_cuda_training_defaults_to_bf16_with_pinned_prefetched_batches(tmp_path):
    store = synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=3, length=20)
    trainer = Trainer(tiny_run(tmp_path / "run", steps=4, device="cuda"), store=store, progress=False)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert trainer.loop.precision == expected
    batches = trainer.batches()
    first = next(iter(batches))
    batches.close()
    assert first["action"].device.type == "cuda"
    assert to_tensors(trainer.windows.gather(np.arange(4)), pin=True)["action"].is_pinned()
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


@pytest.mark.cuda
@cuda
def test_fp16_with_the_scaler_trains_on_cuda(tmp_path):
    store = synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=3, length=20)
    trainer = Trainer(tiny_run(tmp_path / "run", steps=6, device="cuda", precision="fp16"), store=store,
                      progress=False)
    trainer.fit()
    assert trainer.loop.scaler is not None and math.isfinite(trainer.loop.scaler.get_scale())
