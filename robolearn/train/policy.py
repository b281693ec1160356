"""Training a policy: windows from an EpisodeStore -> policy.loss through the shared TrainLoop (AdamW, warmup +
cosine, EMA), with evaluation, checkpoints and a report.

A run folder holds everything about a run::

    run/
      config.json                 the full run config (task, policy, train)
      log.jsonl  tb/              metrics, one JSON object per line, and TensorBoard events
      checkpoints/last/           policy.json + model.safetensors (EMA weights: what you deploy)
                      train_state.safetensors  raw weights, optimizer, EMA and RNG state: what `resume` needs
      eval/                       reports and videos
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.data.normalizer import fit_from_stores
from robolearn.data.obs_source import action_dim_of, store_obs_specs
from robolearn.data.sources import MakeDemonstrations, open_task_store
from robolearn.data.store import EpisodeStore
from robolearn.data.windows import Windows, WindowSpec
from robolearn.device import resolve_device
from robolearn.eval.report import write_run_report
from robolearn.eval.rollout import EvalReport, evaluate
from robolearn.nn.ema import EMA
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.policies.checkpoint import save_policy
from robolearn.registry import POLICIES
from robolearn.task import TaskConfig
from robolearn.train.loop import Schedule, TrainLoop
from robolearn.typed_config import dataclass_from_dict


@dataclass
class TrainConfig:
    steps: int = 20_000
    time_budget_min: float = 0.0  # stop early after this many minutes of training (0: no limit)
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    ema: bool = True
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    cache: str = "auto"  # windows RAM cache: auto | ram | none
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
                    "final_eval_episodes": 0, "eval_envs": 1, "eval_workers": 0, "video_episodes": 0}
        problems = [f"{name} must be >= {low}, got {getattr(self, name)!r}" for name, low in minimums.items()
                    if not getattr(self, name) >= low]
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
        self.device = resolve_device(self.cfg.device)
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        torch.manual_seed(self.cfg.seed)
        self.store = store or open_task_store(run.task, run.dataset_path, progress=progress,
                                               make_missing=make_missing)
        self.policy = build_policy(run, self.store).to(self.device)
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
                              hint="lower the learning rate or check the data for outliers")

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
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self.run), indent=2))
        batches = _Epochs(self.windows, self.cfg.batch_size, self.loop.rng, self.device)
        self.loop.run(batches, self.policy.loss, every=[
            (self.cfg.checkpoint_every, self.save),
            (self.cfg.eval_every, lambda: self.evaluate(self.cfg.eval_episodes, tag=f"step{self.step}"))])
        self.save()
        report = self.evaluate(self.cfg.final_eval_episodes, tag="final") if self.cfg.final_eval_episodes > 0 else None
        self.write_report(report)
        return report

    def write_report(self, report: EvalReport | None) -> Path:
        """`report.md` in the run folder: what was trained on what, for how long, and how it did."""
        n_params = sum(p.numel() for p in self.policy.parameters())
        facts = {"checkpoint": f"`{self.checkpoint_dir}`",
                 "training": f"{self.step} steps in {self.train_seconds / 60:.1f} min on {self.device}",
                 "data": f"`{self.store.path}`: {self.store.n_episodes} episodes, {len(self.windows)} windows",
                 "parameters": f"{n_params / 1e6:.2f} M", "config": "`config.json`"}
        return write_run_report(self.out, f"{type(self.policy).__name__} on {self.run.task.name}", facts, report)

    def evaluate(self, n_episodes: int, tag: str) -> EvalReport:
        report = evaluate(self.deployable, self.run.task, n_episodes=n_episodes, n_envs=self.cfg.eval_envs,
                          n_workers=self.cfg.eval_workers,
                          video_path=self.out / "eval" / f"{tag}.mp4", video_episodes=self.cfg.video_episodes,
                          progress=self.progress)
        (self.out / "eval").mkdir(parents=True, exist_ok=True)
        (self.out / "eval" / f"{tag}.json").write_text(json.dumps(report.to_dict(with_episodes=True), indent=2))
        self.loop.log({f"eval/{k}": v for k, v in report.to_dict().items() if isinstance(v, (int, float))})
        return report

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints" / "last"

    def save(self) -> Path:
        """The deployable policy (what eval and deploy load) and the loop's state (what `resume` needs)."""
        directory = self.checkpoint_dir
        save_policy(self.deployable, directory, task=self.run.task,
                    info={"step": self.step, "train_seconds": self.train_seconds, "ema": self.loop.ema is not None})
        self.loop.save_state(directory / "train_state.safetensors")
        return directory

    def resume(self) -> bool:
        """Continue from the run folder's last checkpoint; False when there is none."""
        path = self.checkpoint_dir / "train_state.safetensors"
        if not path.exists():
            return False
        self.loop.load_state(path)
        return True


class _Epochs:
    """Shuffled epochs of the windows, forever: one pass per iteration, so the loop sees epoch boundaries."""

    def __init__(self, windows: Windows, batch_size: int, rng: np.random.Generator, device: torch.device):
        self.windows, self.batch_size, self.rng, self.device = windows, batch_size, rng, device

    def __iter__(self):
        return iter(self.windows.batches(self.batch_size, self.rng, self.device))
