"""DDP on CPU (gloo) under the real torchrun: 2 ranks equal 1 process, checkpoints identical on every rank,
a two-"node" launch on this machine, resume with another world size, a killed rank ends the job, sharded
evaluation equals serial. Each launch starts real processes (a few seconds each)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robolearn.data.store import EpisodeStore
from robolearn.eval.rollout import evaluate
from robolearn.train import Trainer
from tests.distributed_worker import SHORT_PUSHT, tiny_run, tiny_stochastic_policy
from tests.helpers import synthetic_pusht_store

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def two_ranks(*worker: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return torchrun("--standalone", "--nproc_per_node=2", "-m", "tests.distributed_worker", *worker, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.fixture()
def store_path(tmp_path):
    synthetic_pusht_store(tmp_path / "data.zarr", n_episodes=4, length=30)
    return tmp_path / "data.zarr"


def single_process(store_path, out, **kwargs) -> Trainer:
    trainer = Trainer(tiny_run(out, **kwargs), store=EpisodeStore.open(store_path), progress=False)
    trainer.fit()
    return trainer


def resumed_in_one_process(store_path, out, first: int, then: int) -> Trainer:
    """The reference: `first` steps, then resumed to `then` steps (its schedule changes at the resume), one process."""
    single_process(store_path, out, steps=first)
    trainer = Trainer(tiny_run(out, steps=then), store=EpisodeStore.open(store_path), progress=False)
    assert trainer.resume() and trainer.step == first
    trainer.fit()
    return trainer


def test_two_ranks_train_like_one_process_with_the_same_global_batch(tmp_path, store_path):
    ok(two_ranks("train", str(store_path), str(tmp_path / "ddp"), "--steps", "6", "--batch", "16"))
    ranks = [load_file(tmp_path / "ddp" / "ranks" / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        if key != "torch_rng":  # each rank draws its own noise; everything trained is bit-identical
            assert torch.equal(ranks[0][key], ranks[1][key]), key
    # rank 0 alone wrote the run folder: one log, one checkpoint
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6] and all(0 <= r["data_wait_share"] <= 1 for r in log)
    saved = load_file(tmp_path / "ddp" / "checkpoints" / "last" / "train_state.safetensors")
    one = single_process(store_path, tmp_path / "one", steps=6, batch_size=16)
    reference = one.loop.model.state_dict()
    for key, value in reference.items():
        assert torch.allclose(saved[f"model.{key}"], value, rtol=1e-5, atol=1e-6), key
        assert torch.equal(saved[f"model.{key}"], ranks[0][f"model.{key}"])
    for key, value in one.ema.state_dict().items():
        assert torch.allclose(saved[f"ema.{key}"], value, rtol=1e-5, atol=1e-6), key
    one_log = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in one_log], rtol=1e-5)


def test_two_nodes_on_one_machine_train_and_checkpoint_then_resume_in_one_process(tmp_path, store_path):
    port = free_port()
    out = tmp_path / "nodes"
    common = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
              "--rdzv-id=robolearn-test", "-m", "tests.distributed_worker", "train", str(store_path), str(out),
              "--steps", "4", "--batch", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *common], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=180)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    first = load_file(out / "ranks" / "rank0.safetensors")
    second = load_file(out / "ranks" / "rank1.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first if k != "torch_rng")
    assert json.loads((out / "checkpoints" / "last" / "policy.json").read_text())["info"]["step"] == 4
    # --resume with another world size (1 process) continues the same global batches as a 1-process run would
    resumed = Trainer(tiny_run(out, steps=6), store=EpisodeStore.open(store_path), progress=False)
    assert resumed.resume() and resumed.step == 4
    resumed.fit()
    reference = resumed_in_one_process(store_path, tmp_path / "reference", 4, 6)
    for a, b in zip(resumed.policy.parameters(), reference.policy.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_run_of_one_process_resumes_on_two_ranks(tmp_path, store_path):
    single_process(store_path, tmp_path / "run", steps=4)
    ok(two_ranks("train", str(store_path), str(tmp_path / "run"), "--steps", "6", "--resume"))
    reference = resumed_in_one_process(store_path, tmp_path / "reference", 4, 6)
    saved = load_file(tmp_path / "run" / "checkpoints" / "last" / "train_state.safetensors")
    for key, value in reference.policy.state_dict().items():
        assert torch.allclose(saved[f"model.{key}"], value, rtol=1e-5, atol=1e-6), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_a_killed_rank_ends_the_job_with_an_error(tmp_path, store_path):
    t0 = time.monotonic()
    result = two_ranks("train", str(store_path), str(tmp_path / "dead"), "--steps", "1000", "--kill-rank", "1",
                       "--kill-step", "3", timeout=120)
    assert result.returncode != 0
    assert "SIGKILL" in result.stderr or "Signal 9" in result.stderr, result.stderr[-3000:]
    assert time.monotonic() - t0 < 100
    assert not (tmp_path / "dead" / "ranks").exists()  # no rank finished


def test_a_rank_killed_on_another_node_fails_the_survivor_with_an_error(tmp_path, store_path):
    """Two torchrun agents (two "machines"): the surviving rank's collective fails, it does not hang."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    base = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
            "--rdzv-id=robolearn-kill", "-m", "tests.distributed_worker", "train", str(store_path),
            str(tmp_path / "dead"), "--steps", "1000", "--kill-rank", "1", "--kill-step", "3"]
    t0 = time.monotonic()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *base], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=150)[0] for node in nodes]
    assert all(node.returncode != 0 for node in nodes), "\n".join(o[-2000:] for o in outputs)
    assert time.monotonic() - t0 < 140
    assert not (tmp_path / "dead" / "ranks").exists()


def test_sharded_evaluation_equals_the_serial_one(tmp_path):
    ok(two_ranks("eval", str(tmp_path), "--episodes", "4", "--envs", "2"))
    sharded = json.loads((tmp_path / "eval.json").read_text())
    serial = evaluate(tiny_stochastic_policy(), SHORT_PUSHT, n_episodes=4, n_envs=2, progress=False)
    expected = serial.to_dict(with_episodes=True)
    assert [e["seed"] for e in sharded["episodes"]] == [100000, 100001, 100002, 100003]
    assert sharded["episodes"] == expected["episodes"]
    for key in ("success_rate", "success_low", "success_high", "score_mean", "score_low", "score_high",
                "max_reward_mean", "max_reward_low", "max_reward_high", "mean_steps", "n_episodes"):
        assert sharded[key] == expected[key], key
    # the episodes are not all alike: the comparison is not vacuous
    assert len({e["max_reward"] for e in sharded["episodes"]}) > 1
