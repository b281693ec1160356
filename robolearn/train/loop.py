"""The one optimization loop: policies, critics and world models all train through `TrainLoop`.

It owns what every model's training shares: the learning-rate schedule, the non-finite-loss guard, gradient
clipping, the EMA copy, a time budget, the progress bar, logging (`log.jsonl` + TensorBoard in a run folder, and
an in-memory history), hooks every N steps (checkpoints, evaluations), and the resumable state (raw weights,
optimizer, EMA, RNGs, step) in one safetensors file. What is model-specific — how a batch is drawn and what the
loss is — comes in as two functions.
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

from robolearn.nn.checkpoint_folder import read_tensors
from robolearn.nn.ema import EMA

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


class TrainLoop:
    """Gradient steps on `model` until `schedule.total_steps` or `time_budget_s`, resumable from `save_state`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, *, what: str,
                 seed: int = 0, ema: bool = False, grad_clip: float | None = None, log_every: int = 50,
                 out_dir: str | os.PathLike | None = None, history: list[dict[str, float]] | None = None,
                 progress: bool = False, time_budget_s: float = math.inf, hint: str = "lower the learning rate",
                 after_step: Callable[[], None] | None = None):
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.what, self.hint = what, hint
        self.ema = EMA(model) if ema else None
        self.grad_clip, self.after_step = grad_clip, after_step
        self.log_every, self.history, self.progress = log_every, history, progress
        self.out = Path(out_dir) if out_dir is not None else None
        self.time_budget_s = time_budget_s
        # draws the batches: saved with the state, so a resume continues it. (Torch is seeded by the caller, before
        # it builds the model, so the initial weights are reproducible too.)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.train_seconds = 0.0
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._writer: Any = None

    @property
    def done(self) -> bool:
        return self.step >= self.schedule.total_steps or self.train_seconds >= self.time_budget_s

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
        bar = tqdm(total=self.schedule.total_steps, initial=self.step, desc=self.what, unit="step",
                   disable=not self.progress)
        try:
            while not self.done:
                stepped = self.step
                for batch in batches:
                    t0 = time.perf_counter()
                    parts = self.train_step(batch, loss_fn)
                    self.train_seconds += time.perf_counter() - t0
                    for name, value in parts.items():
                        running.setdefault(name, []).append(value)
                    bar.update(1)
                    if self.step % self.log_every == 0:
                        means = {k: float(np.mean(v)) for k, v in running.items()}
                        self.log({**means, "lr": self.schedule.at(self.step)})
                        bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
                        running.clear()
                    for period, hook in hooks:
                        if self.step % period == 0:
                            hook()
                    if self.done:
                        break
                if self.step == stepped:
                    raise ValueError(f"{self.what}: the batches ran out at step {self.step}; pass a re-iterable or "
                                     f"endless source")
        finally:
            bar.close()

    def train_step(self, batch: Any, loss_fn: LossFn) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.at(self.step)
        out = loss_fn(batch)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.what} loss became {loss.item()} at step {self.step}; {self.hint}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._params, self.grad_clip)
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
        meta = {"step": str(self.step), "train_seconds": str(self.train_seconds),
                "param_groups": json.dumps(opt["param_groups"]),
                "numpy_rng": json.dumps(self.rng.bit_generator.state)}
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
        self.rng.bit_generator.state = json.loads(meta["numpy_rng"])
        self.step = int(meta["step"])
        self.train_seconds = float(meta["train_seconds"])


def random_batches(draw: Callable[[np.ndarray], Any], n_items: int, batch_size: int,
                   rng: np.random.Generator) -> Iterable[Any]:
    """Endless batches of `batch_size` items drawn with replacement: `draw(indices)` builds one."""
    if n_items < 1:
        raise ValueError("no training items to draw batches from")
    while True:
        yield draw(rng.integers(0, n_items, batch_size))
