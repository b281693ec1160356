"""Training a policy: windows from an EpisodeStore -> policy.loss through the shared TrainLoop (AdamW, warmup +
cosine, EMA), with evaluation, checkpoints and a report.

A run folder holds everything about a run::

    run/
      config.json                 the full run config (task, policy, train)
      log.jsonl  tb/              metrics, one JSON object per line, and TensorBoard events
      checkpoints/last/           policy.json + model.safetensors (EMA weights: what you deploy)
                      train_state.safetensors  raw weights, optimizer, EMA and RNG state: what `resume` needs
      eval/                       reports and videos

Under torchrun every rank runs this same Trainer: `train.batch_size` is the global batch of one optimizer step,
split evenly over the ranks (each draws its disjoint share of the step's windows from the same seeded shuffle), so
the learning rate, the schedule and the data a step sees do not depend on the number of ranks, and a run resumes
with any number of them. Rank 0 alone writes the run folder; evaluations split their episodes over the ranks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.data.normalizer import fit_from_stores
from robolearn.data.obs_source import action_dim_of, store_obs_specs
from robolearn.data.prefetch import Prefetcher
from robolearn.data.sources import MakeDemonstrations, open_task_store
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import StepBatches, Windows, WindowSpec, to_device, to_tensors
from robolearn.device import choose_num_threads
from robolearn.eval.report import write_run_report
from robolearn.eval.rollout import EvalReport, evaluate
from robolearn.nn.ema import EMA
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.policies.checkpoint import save_policy
from robolearn.registry import POLICIES
from robolearn.task import TaskConfig
from robolearn.train.distributed import DEFAULT_TIMEOUT_S, broadcast_bytes, check_identical, init_world
from robolearn.train.loop import Schedule, TrainLoop
from robolearn.train.precision import PRECISIONS, allow_tf32
from robolearn.typed_config import dataclass_from_dict


@dataclass
class TrainConfig:
    steps: int = 20_000
    time_budget_min: float = 0.0  # stop early after this many minutes of training (0: no limit)
    batch_size: int = 256  # the global batch of one step: split evenly over torchrun's ranks (lr unchanged)
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    ema: bool = True
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # torch CPU threads (0: OMP_NUM_THREADS if set, else the cores other processes leave free)
    precision: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16 (+ grad scaler)
    compile: bool = False  # torch.compile the loss (forward and backward)
    tf32: bool = True  # CUDA: fp32 matmuls and convolutions on TF32 tensor cores
    prefetch: int = 2  # batches prepared ahead by a background thread (0: prepared between steps)
    dist_timeout_s: float = DEFAULT_TIMEOUT_S  # torchrun: a rank waiting longer on the others fails (no hang)
    cache: str = "auto"  # windows cache: auto (RAM if it fits, else camera frames from disk) | ram | disk | none
    log_every: int = 50
    checkpoint_every: int = 2_000
    eval_every: int = 0  # steps between evaluations during training (0: only at the end)
    eval_episodes: int = 50  # episodes per evaluation during training
    final_eval_episodes: int = 100
    eval_envs: int = 50  # envs per batched evaluation
    eval_workers: int = 0  # worker processes stepping them (0: in this process)
    video_episodes: int = 4

    def __post_init__(self) -> None:
        # checked before anything is built or collected (0 steps: a checkpoint of the untrained policy)
        minimums = {"steps": 0, "time_budget_min": 0, "batch_size": 1, "warmup_steps": 0, "num_threads": 0,
                    "log_every": 1, "checkpoint_every": 1, "eval_every": 0, "eval_episodes": 1,
                    "final_eval_episodes": 0, "eval_envs": 1, "eval_workers": 0, "video_episodes": 0,
                    "prefetch": 0, "dist_timeout_s": 1}
        problems = [f"{name} must be >= {low}, got {getattr(self, name)!r}" for name, low in minimums.items()
                    if not getattr(self, name) >= low]
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    policy_class: str = "diffusion"  # a name in robolearn.registry.POLICIES
    policy: dict[str, Any] = field(default_factory=dict)  # fields of the policy's config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/pusht_diffusion"
    dataset_path: str | None = None  # overrides the task's dataset search

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["policy"] = {k: v for k, v in d.get("policy", {}).items() if k != "name"}  # name only labels the config
        return dataclass_from_dict(cls, d, "run config")


def build_policy(run: RunConfig, store: EpisodeStore) -> Policy:
    """The policy of a run, shaped by the store's keys and normalized by its statistics.

    Each observed key takes the shape, dtype and statistics of its source in the store (the task's
    `obs_sources`, e.g. agent_pos <- state[0:2]), so a policy trained on a shared dataset is built exactly as
    if the store held the environment's keys."""
    cls = POLICIES.get(run.policy_class)
    task = run.task
    obs_specs = store_obs_specs(store, task.obs_keys, task.obs_sources, reader=f"task {task.name!r}")
    config: PolicyConfig = dataclass_from_dict(cls.config_class, {
        **run.policy,
        "obs_shapes": {k: list(spec.shape) for k, spec in obs_specs.items()},
        "image_keys": [k for k, spec in obs_specs.items() if spec.is_image],
        "action_dim": action_dim_of(store, task.action_key),
    }, f"policy config ({run.policy_class})")
    policy = cls(config)
    fit_from_stores(policy.normalizer, [store], task.obs_sources, task.action_key)
    return policy


class Trainer:
    """A policy's training run: the task's windows through `TrainLoop`, EMA weights checkpointed and evaluated."""

    def __init__(self, run: RunConfig, store: EpisodeStore | None = None, progress: bool = True,
                 make_missing: MakeDemonstrations | None = None):
        self.run = run
        self.cfg = run.train
        self.progress = progress
        self.out = Path(run.out_dir)
        # under torchrun: join the process group, one GPU per rank (NCCL) or CPU ranks (gloo)
        self.world, self.device = init_world(self.cfg.device, self.cfg.dist_timeout_s)
        self.world.share(self.cfg.batch_size)  # a global batch that does not split evenly fails here
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        elif self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it per rank
            torch.set_num_threads(choose_num_threads())  # the cores other processes leave free
        if self.device.type == "cuda" and self.cfg.tf32:
            allow_tf32()
        torch.manual_seed(self.cfg.seed)
        self.store = store or self._open_store(make_missing)
        self.policy = build_policy(run, self.store).to(self.device)
        if self.world.rank > 0:  # every rank built the same weights; now each draws its own noise and crops
            torch.manual_seed(_rank_seed(self.cfg.seed, self.world.rank, 0))
        pc = self.policy.config
        self.windows = Windows(self.store, WindowSpec(tuple(run.task.obs_keys), pc.n_obs_steps, pc.horizon,
                                                      pc.n_action_steps, run.task.action_key), cache=self.cfg.cache,
                               obs_sources=run.task.obs_sources)
        optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                      betas=(0.95, 0.999))
        self.loop = TrainLoop(self.policy, optimizer, Schedule(self.cfg.lr, self.cfg.steps, self.cfg.warmup_steps),
                              what="train", seed=self.cfg.seed, ema=self.cfg.ema, log_every=self.cfg.log_every,
                              out_dir=self.out, progress=progress,
                              time_budget_s=self.cfg.time_budget_min * 60 or math.inf,
                              hint="lower the learning rate or check the data for outliers", world=self.world,
                              precision=self.cfg.precision, compile=self.cfg.compile)

    def _open_store(self, make_missing: MakeDemonstrations | None) -> EpisodeStore:
        """The task's store; under torchrun each machine's first rank finds, downloads, imports or collects it
        while its other ranks wait, then open what it made (prepare big datasets before a long launch)."""
        if not self.world.distributed:
            return open_task_store(self.run.task, self.run.dataset_path, progress=self.progress,
                                   make_missing=make_missing)
        import torch.distributed as dist

        leader = self.world.local_rank == 0
        store = open_task_store(self.run.task, self.run.dataset_path, progress=self.progress and leader,
                                make_missing=make_missing) if leader else None
        dist.barrier()
        return store or open_task_store(self.run.task, self.run.dataset_path, allow_download=False, progress=False)

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def train_seconds(self) -> float:
        return self.loop.train_seconds

    @property
    def ema(self) -> EMA | None:
        return self.loop.ema

    def train_step(self, batch: dict) -> float:
        """One gradient step on `batch`; its loss."""
        return self.loop.train_step(batch, self.policy.loss)["loss"]

    @property
    def deployable(self) -> Policy:
        return self.loop.deployable  # type: ignore[return-value]

    def lr_at(self, step: int) -> float:
        """Linear warmup then cosine decay to 0 at `steps`."""
        return self.loop.schedule.at(step)

    def fit(self) -> EvalReport | None:
        """Train until `steps` (or the time budget), then evaluate the deployable (EMA) policy."""
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self.run), indent=2))
        self.loop.run(self.batches(), self.policy.loss, every=[
            (self.cfg.checkpoint_every, self.save),
            (self.cfg.eval_every, lambda: self.evaluate(self.cfg.eval_episodes, tag=f"step{self.step}"))])
        self.save()
        report = self.evaluate(self.cfg.final_eval_episodes, tag="final") if self.cfg.final_eval_episodes > 0 else None
        if self.world.is_main:
            self.write_report(report)
        return report

    def batches(self) -> DeviceBatches:
        """This rank's batches from the current step on, prepared (and pinned, for a GPU) ahead of the step."""
        source = StepBatches(self.windows, self.cfg.batch_size, self.cfg.seed, self.step, self.world.rank,
                             self.world.size)
        return DeviceBatches(source, self.device, self.cfg.prefetch)

    def write_report(self, report: EvalReport | None) -> Path:
        """`report.md` in the run folder: what was trained on what, for how long, and how it did."""
        n_params = sum(p.numel() for p in self.policy.parameters())
        facts = {"checkpoint": f"`{self.checkpoint_dir}`",
                 "training": f"{self.step} steps in {self.train_seconds / 60:.1f} min on {self.device}",
                 "data": f"`{self.store.path}`: {self.store.n_episodes} episodes, {len(self.windows)} windows",
                 "parameters": f"{n_params / 1e6:.2f} M", "config": "`config.json`"}
        return write_run_report(self.out, f"{type(self.policy).__name__} on {self.run.task.name}", facts, report)

    def evaluate(self, n_episodes: int, tag: str) -> EvalReport:
        """The deployable policy on seeds 100000.. ; under torchrun each rank runs a share of the episodes (in
        batches of at most eval_envs, as many as the ranks need) and every rank gets the whole report."""
        n_envs = min(self.cfg.eval_envs, math.ceil(n_episodes / self.world.size))
        report = evaluate(self.deployable, self.run.task, n_episodes=n_episodes, n_envs=n_envs,
                          n_workers=self.cfg.eval_workers,
                          video_path=self.out / "eval" / f"{tag}.mp4" if self.world.is_main else None,
                          video_episodes=self.cfg.video_episodes, progress=self.progress and self.world.is_main,
                          distributed=self.world.distributed)
        if self.world.is_main:
            (self.out / "eval").mkdir(parents=True, exist_ok=True)
            (self.out / "eval" / f"{tag}.json").write_text(json.dumps(report.to_dict(with_episodes=True), indent=2))
        self.loop.log({f"eval/{k}": v for k, v in report.to_dict().items() if isinstance(v, (int, float))})
        return report

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints" / "last"

    def save(self) -> Path:
        """The deployable policy (what eval and deploy load) and the loop's state (what `resume` needs), written
        by rank 0 after every rank checked that they all hold the same weights."""
        directory = self.checkpoint_dir
        check_identical(self.deployable, self.world, "EMA" if self.loop.ema is not None else "policy")
        if self.world.is_main:
            save_policy(self.deployable, directory, task=self.run.task,
                        info={"step": self.step, "train_seconds": self.train_seconds, "ema": self.loop.ema is not None})
            self.loop.save_state(directory / "train_state.safetensors")
        return directory

    def resume(self) -> bool:
        """Continue from the run folder's last checkpoint; False when there is none. Under torchrun rank 0 reads
        it and sends it to every rank (their machines need not share its disk); the world size may differ from
        the run that wrote it."""
        path = self.checkpoint_dir / "train_state.safetensors"
        if not self.world.distributed:
            if not path.exists():
                return False
            self.loop.load_state(path)
            return True
        data = broadcast_bytes(path.read_bytes() if self.world.is_main and path.exists() else None, self.world)
        if data is None:
            return False
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(data)
            self.loop.load_state(copy)
        if self.world.rank > 0:  # the saved torch RNG is rank 0's stream
            torch.manual_seed(_rank_seed(self.cfg.seed, self.world.rank, self.step))
        return True


def _rank_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class DeviceBatches:
    """Batches on the training device: gathered (and pinned, for a GPU) by a background thread `prefetch`
    batches ahead, then copied with non_blocking; uint8 images reach the device as uint8."""

    def __init__(self, source: StepBatches, device: torch.device, prefetch: int = 2):
        pin = device.type == "cuda"
        tensors = (to_tensors(batch, pin) for batch in source)
        self._source = Prefetcher(tensors, depth=prefetch) if prefetch > 0 else tensors
        self.device = device

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> dict:
        return to_device(next(self._source), self.device)

    def close(self) -> None:
        self._source.close()
