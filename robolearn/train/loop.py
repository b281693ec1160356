"""The one optimization loop: policies, critics and world models all train through `TrainLoop`.

It owns what every model's training shares: the learning-rate schedule, the non-finite-loss guard, gradient
clipping, the EMA copy, a time budget, the progress bar, logging (`log.jsonl` + TensorBoard in a run folder, and
an in-memory history), hooks every N steps (checkpoints, evaluations), and the resumable state (raw weights,
optimizer, EMA, RNGs, step) in one safetensors file. What is model-specific — how a batch is drawn and what the
loss is — comes in as two functions.

The same loop runs under torchrun: inside a process group it wraps the loss in DistributedDataParallel (each
rank steps on its share of the global batch; gradients are averaged, so the weights and the EMA stay identical on
every rank), logs the mean over ranks from rank 0 alone, and agrees on when the time budget is spent. It can also
autocast the loss to bf16/fp16 (a gradient scaler for fp16), torch.compile it, and logs the share of each step
spent waiting for the next batch.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

import robolearn.train.precision as amp
from robolearn.nn.checkpoint_folder import read_tensors
from robolearn.nn.ema import EMA
from robolearn.train.distributed import World, all_max, all_mean

# batch -> (loss, named float parts to log); a model's loss may return the tensor alone
LossFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class Schedule:
    """Learning rate: linear warmup over `warmup_steps`, then constant or cosine decay to 0 at `total_steps`."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    decay: str = "cosine"  # cosine | constant

    def __post_init__(self) -> None:
        if self.decay not in ("cosine", "constant"):
            raise ValueError(f"learning-rate decay must be 'cosine' or 'constant', got {self.decay!r}")

    def at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _Objective(nn.Module):
    """A model's loss as a module's forward: what DistributedDataParallel (whose gradient hooks arm only when its
    forward runs) and torch.compile wrap. `loss_fn` is a function of the model (model.loss, a closure)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(batch)


class TrainLoop:
    """Gradient steps on `model` until `schedule.total_steps` or `time_budget_s`, resumable from `save_state`.

    `world`: the torchrun process group this process joined (default: the current one, a single process when
    there is none); `precision`: auto | fp32 | bf16 | fp16 (auto: bf16 on GPUs that support it, else fp32);
    `compile`: torch.compile the loss (True, or the name of a torch.compile backend)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, *, what: str,
                 seed: int = 0, ema: bool = False, grad_clip: float | None = None, log_every: int = 50,
                 out_dir: str | os.PathLike | None = None, history: list[dict[str, float]] | None = None,
                 progress: bool = False, time_budget_s: float = math.inf, hint: str = "lower the learning rate",
                 after_step: Callable[[], None] | None = None, world: World | None = None,
                 precision: str = "auto", compile: bool | str = False):
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.what, self.hint = what, hint
        self.world = world or World.current()
        self.device = next(model.parameters()).device
        self.precision = amp.resolve_precision(precision, self.device)
        self.scaler = amp.grad_scaler(self.precision, self.device)
        self.compile = compile
        self.ema = EMA(model) if ema else None
        self.grad_clip, self.after_step = grad_clip, after_step
        self.log_every, self.progress = log_every, progress and self.world.is_main
        self.history = history
        self.out = Path(out_dir) if out_dir is not None and self.world.is_main else None  # rank 0 writes
        self.time_budget_s = time_budget_s
        # draws the batches: saved with the state, so a resume continues it. (Torch is seeded by the caller, before
        # it builds the model, so the initial weights are reproducible too.)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.train_seconds = 0.0
        self._agreed_seconds = 0.0  # the training time every rank agrees on: the time budget is judged on it
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._writer: Any = None
        self._objective: nn.Module | None = None
        self._objective_of: LossFn | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.schedule.total_steps or self._agreed_seconds >= self.time_budget_s

    @property
    def objective(self) -> nn.Module:
        """The module each step calls: the loss, wrapped in DDP under torchrun, compiled if asked."""
        if self._objective is None:
            raise RuntimeError("no step has run yet")
        return self._objective

    def _objective_for(self, loss_fn: LossFn) -> nn.Module:
        if self._objective is None or self._objective_of != loss_fn:
            objective: nn.Module = _Objective(self.model, loss_fn)
            if self.world.distributed:
                from torch.nn.parallel import DistributedDataParallel

                # built in the same order on every rank (it broadcasts rank 0's weights)
                objective = DistributedDataParallel(
                    objective, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.compile:
                # after DDP, so its bucketed all-reduce overlaps the compiled backward
                backend = self.compile if isinstance(self.compile, str) else "inductor"
                objective = torch.compile(objective, backend=backend)
            self._objective, self._objective_of = objective, loss_fn
        return self._objective

    @property
    def deployable(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA average when there is one."""
        return self.ema.model if self.ema is not None else self.model

    # ------------------------------------------------------------------ the loop
    def run(self, batches: Iterable[Any], loss_fn: LossFn,
            every: Iterable[tuple[int, Callable[[], object]]] = ()) -> None:
        """Step on `batches` (an endless or re-iterable source) until done; `every`: (period, hook) pairs run after
        each step whose number the period divides (checkpoints, evaluations; period 0: never)."""
        hooks = [(period, hook) for period, hook in every if period > 0]
        running: dict[str, list[float]] = {}
        waited = spent = 0.0  # seconds waiting for batches / in whole steps, since the last log record
        bar = tqdm(total=self.schedule.total_steps, initial=self.step, desc=self.what, unit="step",
                   disable=not self.progress)
        source, fresh = iter(batches), True
        try:
            while not self.done:
                t0 = time.perf_counter()
                try:
                    batch = next(source)
                except StopIteration:
                    if fresh:
                        raise ValueError(f"{self.what}: the batches ran out at step {self.step}; pass a re-iterable "
                                         f"or endless source") from None
                    source, fresh = iter(batches), True
                    continue
                t1 = time.perf_counter()
                parts = self.train_step(batch, loss_fn)
                t2 = time.perf_counter()
                fresh = False
                self.train_seconds += t2 - t0
                waited, spent = waited + t1 - t0, spent + t2 - t0
                if not self.world.distributed:
                    self._agreed_seconds = self.train_seconds
                for name, value in parts.items():
                    running.setdefault(name, []).append(value)
                bar.update(1)
                if self.step % self.log_every == 0:
                    means = {k: float(np.mean(v)) for k, v in running.items()}
                    means["data_wait_share"] = waited / spent if spent > 0 else 0.0
                    means = all_mean(means, self.world)  # the same collective on every rank, at the same step
                    self._agree_on_time()
                    self.log({**means, "lr": self.schedule.at(self.step)})
                    bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
                    running.clear()
                    waited = spent = 0.0
                for period, hook in hooks:
                    if self.step % period == 0:
                        hook()
        finally:
            bar.close()
            close = getattr(source, "close", None)
            if callable(close):
                close()  # a prefetching thread, a generator

    def _agree_on_time(self) -> None:
        """Ranks' clocks differ: under torchrun they stop on the slowest rank's time, agreed at each log step (the
        budget may be overshot by up to `log_every` steps), so every rank stops at the same step."""
        if self.world.distributed:
            self.train_seconds = all_max(self.train_seconds, self.world)
            self._agreed_seconds = self.train_seconds

    def train_step(self, batch: Any, loss_fn: LossFn) -> dict[str, float]:
        objective = self._objective_for(loss_fn)
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.at(self.step)
        with amp.autocast(self.precision, self.device):
            out = objective(batch)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.what} loss became {loss.item()} at step {self.step}; {self.hint}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        else:
            loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient overflowed; the scale then halves
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if self.after_step is not None:
            self.after_step()
        self.step += 1
        return {"loss": float(loss.detach()), **parts}

    # ------------------------------------------------------------------ logging
    def log(self, metrics: dict[str, float]) -> None:
        """One record: into `history`, and into the run folder's log.jsonl and TensorBoard when there is one."""
        record = {"step": self.step, "train_seconds": round(self.train_seconds, 3), **metrics}
        if self.history is not None:
            self.history.append({"step": self.step, **metrics})
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

            self._writer = SummaryWriter(str(self.out / "tb"))
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, self.step)
        self._writer.flush()

    # ------------------------------------------------------------------ resumable state
    def save_state(self, path: str | os.PathLike) -> Path:
        """Raw weights, optimizer slots, EMA, torch and numpy RNGs and the step, written atomically."""
        path = Path(path)
        state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for idx, slots in opt["state"].items():
            for name, value in slots.items():
                state[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        if self.ema is not None:
            state.update({f"ema.{k}": v.cpu().contiguous() for k, v in self.ema.state_dict().items()})
        state["torch_rng"] = torch.get_rng_state()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        meta = {"step": str(self.step), "train_seconds": str(self.train_seconds),
                "param_groups": json.dumps(opt["param_groups"]),
                "numpy_rng": json.dumps(self.rng.bit_generator.state)}
        if self.scaler is not None:
            meta["grad_scaler"] = json.dumps(self.scaler.state_dict())
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    def load_state(self, path: str | os.PathLike) -> None:
        """Continue exactly where `save_state` left off (the same file layout as every earlier robolearn)."""
        state = read_tensors(Path(path), "training state")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        if not {"step", "train_seconds", "param_groups", "numpy_rng"} <= set(meta or {}):
            raise ValueError(f"training state {path} lacks its step/optimizer/RNG metadata; it was not written by "
                             f"TrainLoop.save_state")
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                slots.setdefault(int(idx), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["param_groups"])})
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None and "grad_scaler" in meta:  # a run that changes precision starts a fresh scale
            self.scaler.load_state_dict(json.loads(meta["grad_scaler"]))
        self.rng.bit_generator.state = json.loads(meta["numpy_rng"])
        self.step = int(meta["step"])
        self.train_seconds = self._agreed_seconds = float(meta["train_seconds"])


def random_batches(draw: Callable[[np.ndarray], Any], n_items: int, batch_size: int,
                   rng: np.random.Generator, world: World | None = None) -> Iterable[Any]:
    """Endless batches of `batch_size` items drawn with replacement: `draw(indices)` builds one.

    Under torchrun `batch_size` is the global batch: every rank draws the same indices from its (identically
    seeded) `rng` and builds only its own share of them."""
    world = world or World.current()
    if n_items < 1:
        raise ValueError("no training items to draw batches from")
    share = world.share(batch_size)
    while True:
        yield draw(rng.integers(0, n_items, batch_size)[world.rank * share:(world.rank + 1) * share])


def check_fit_settings(cfg: Any) -> None:
    """Refuses the settings `fit_on_random_batches` cannot train with, naming them."""
    if cfg.steps < 0 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ValueError(f"steps ({cfg.steps}) must be >= 0, batch_size ({cfg.batch_size}) >= 1, lr ({cfg.lr}) > 0")


def fit_on_random_batches(model: nn.Module, params: Iterable[nn.Parameter], draw: Callable[[np.ndarray], Any],
                          n_items: int, cfg: Any, *, what: str, history: list[dict[str, float]] | None = None,
                          progress: bool = False, **loop_options: Any) -> None:
    """How the auxiliary models (critic, world model) train: AdamW on `params` at `cfg.lr` (constant after the
    warm-up) for `cfg.steps` batches drawn with replacement (`random_batches`), stepping on `model.loss`.
    `cfg` carries lr, weight_decay, steps, batch_size, seed and log_every; `loop_options` go to TrainLoop."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = TrainLoop(model, optimizer, Schedule(cfg.lr, cfg.steps, decay="constant"), what=what, seed=cfg.seed,
                     log_every=cfg.log_every, history=history, progress=progress, **loop_options)
    loop.run(random_batches(draw, n_items, cfg.batch_size, loop.rng), model.loss)
