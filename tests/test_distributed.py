"""DDP on CPU (gloo) under the real torchrun: 2 ranks equal 1 process with the same global batch (and resume a
1-process run), checkpoints identical on every rank, a two-"node" launch on this machine, a killed rank ends the
job, sharded evaluation equals serial. Each launch starts real processes (~20 s on a 2-core VM), so one launch
checks several things."""
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

import robolearn
from robolearn.data.store import EpisodeStore
from robolearn.eval.rollout import evaluate
from robolearn.train import Trainer
from tests.distributed_worker import SHORT_PUSHT, tiny_run, tiny_stochastic_policy
from tests.helpers import synthetic_pusht_store

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def two_nodes(port: int, rdzv_id: str, *worker: str, timeout: float = 180) -> tuple[list[int], str]:
    """Two torchrun agents with one rank each, meeting at a localhost c10d rendezvous: two "machines"."""
    command = torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
                       f"--rdzv-id={rdzv_id}", "-m", "tests.distributed_worker", *worker)
    nodes = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    return [node.returncode for node in nodes], "\n".join(o[-3000:] for o in outputs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


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


def test_two_ranks_resume_a_one_process_run_and_train_like_one_process(tmp_path, store_path):
    """1 process trains 4 steps; 2 ranks (global batch 16 = 2 x 8) resume it to 8 steps, evaluate the policy
    (4 episodes split over the ranks) and a stochastic policy (sharded evaluation); compared with one process."""
    run = tmp_path / "run"
    single_process(store_path, run, steps=4)
    result = subprocess.run(torchrun("--standalone", "--nproc_per_node=2", "-m", "tests.distributed_worker", "train",
                                     str(store_path), str(run), "--steps", "8", "--resume", "--eval-episodes", "4",
                                     "--sharded-eval", "4"),
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [load_file(run / "ranks" / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        if key != "torch_rng":  # each rank draws its own noise; everything trained is bit-identical on every rank
            assert torch.equal(ranks[0][key], ranks[1][key]), key
    reference = resumed_in_one_process(store_path, tmp_path / "reference", 4, 8)
    saved = load_file(run / "checkpoints" / "last" / "train_state.safetensors")  # rank 0's checkpoint
    for key, value in reference.loop.model.state_dict().items():
        assert torch.allclose(saved[f"model.{key}"], value, rtol=1e-5, atol=1e-6), key
        assert torch.equal(saved[f"model.{key}"], ranks[0][f"model.{key}"])
    for key, value in reference.ema.state_dict().items():
        assert torch.allclose(saved[f"ema.{key}"], value, rtol=1e-5, atol=1e-6), key
    # rank 0 alone wrote the log (the mean over ranks), continuing the 1-process log
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    reference_log = [json.loads(line) for line in (tmp_path / "reference" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8, 8] and all(0 <= r["data_wait_share"] <= 1 for r in log[:4])
    np.testing.assert_allclose([r["loss"] for r in log[2:4]], [r["loss"] for r in reference_log[2:4]], rtol=1e-5)
    # the final evaluation, split over the ranks, equals a serial evaluation of the saved checkpoint
    final = json.loads((run / "eval" / "final.json").read_text())
    policy = robolearn.load_policy(run / "checkpoints" / "last", device="cpu")
    serial = evaluate(policy, SHORT_PUSHT, n_episodes=4, n_envs=2, progress=False).to_dict(with_episodes=True)
    assert final["episodes"] == serial["episodes"] and final["success_rate"] == serial["success_rate"]
    # a stochastic policy: per-batch sampling seeds make the sharded evaluation equal the serial one
    sharded = json.loads((run / "eval.json").read_text())
    expected = evaluate(tiny_stochastic_policy(), SHORT_PUSHT, n_episodes=4, n_envs=2,
                        progress=False).to_dict(with_episodes=True)
    assert [e["seed"] for e in sharded["episodes"]] == [100000, 100001, 100002, 100003]
    assert sharded["episodes"] == expected["episodes"]
    assert len({e["max_reward"] for e in sharded["episodes"]}) > 1  # episodes differ: not a vacuous comparison
    for key in ("success_rate", "success_low", "success_high", "score_mean", "score_low", "score_high",
                "max_reward_mean", "max_reward_low", "max_reward_high", "mean_steps", "n_episodes"):
        assert sharded[key] == expected[key], key


def test_two_nodes_on_one_machine_train_and_checkpoint_then_resume_in_one_process(tmp_path, store_path):
    out = tmp_path / "nodes"
    codes, output = two_nodes(free_port(), "robolearn-test", "train", str(store_path), str(out), "--steps", "4")
    assert codes == [0, 0], output
    first, second = (load_file(out / "ranks" / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first if k != "torch_rng")
    assert json.loads((out / "checkpoints" / "last" / "policy.json").read_text())["info"]["step"] == 4
    # --resume with another world size (1 process) continues the same global batches as a 1-process run would
    resumed = Trainer(tiny_run(out, steps=6), store=EpisodeStore.open(store_path), progress=False)
    assert resumed.resume() and resumed.step == 4
    resumed.fit()
    reference = resumed_in_one_process(store_path, tmp_path / "reference", 4, 6)
    for a, b in zip(resumed.policy.parameters(), reference.policy.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_rank_killed_on_another_node_fails_the_survivor_with_an_error(tmp_path, store_path):
    """Rank 1 dies (SIGKILL) at step 3: rank 0, on the other "machine", is inside a gradient all-reduce; its
    collective fails and both agents exit with an error, well inside the process-group timeout."""
    t0 = time.monotonic()
    codes, output = two_nodes(free_port(), "robolearn-kill", "train", str(store_path), str(tmp_path / "dead"),
                              "--steps", "1000", "--kill-rank", "1", "--kill-step", "3", timeout=150)
    assert all(code != 0 for code in codes), output
    assert "Signal 9 (SIGKILL)" in output, output
    assert time.monotonic() - t0 < 140
    assert not (tmp_path / "dead" / "ranks").exists()  # no rank finished its run


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none on this machine); "
                                                          "scripts/gpu_check.sh runs it where there is one")
def test_ddp_on_one_gpu_under_torchrun_uses_nccl_and_checkpoints(tmp_path, store_path):
    result = subprocess.run(torchrun("--standalone", "--nproc_per_node=1", "-m", "tests.distributed_worker", "train",
                                     str(store_path), str(tmp_path / "gpu"), "--steps", "4", "--device", "cuda"),
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    saved = load_file(tmp_path / "gpu" / "checkpoints" / "last" / "train_state.safetensors")
    assert "cuda_rng" in saved and all(torch.isfinite(v).all() for k, v in saved.items() if k.startswith("model."))
