"""The optimization loop shared by the evaluation models (critics, world models): step, guard, log."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

LossFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


def fit_steps(loss_fn: LossFn, params: Iterable[nn.Parameter], optimizer: torch.optim.Optimizer, steps: int, *,
              what: str, log_every: int, history: list[dict[str, float]] | None = None, progress: bool = False,
              grad_clip: float | None = None, after_step: Callable[[], None] | None = None, hint: str = "lower lr") -> None:
    """`steps` gradient steps on `loss_fn(step) -> (loss, named parts)`.

    A non-finite loss stops training with the step it happened at (`hint` says what to try); `history`, when
    given, receives the mean of each named part every `log_every` steps; `after_step` runs after each update
    (target-network averaging)."""
    params = list(params)
    running: dict[str, list[float]] = {}
    for step in tqdm(range(steps), desc=what, unit="step", disable=not progress):
        loss, parts = loss_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{what} loss became {loss.item()} at step {step}; {hint}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        for name, value in parts.items():
            running.setdefault(name, []).append(value)
        if history is not None and (step + 1) % log_every == 0:
            history.append({"step": step + 1, **{k: float(np.mean(v)) for k, v in running.items()}})
            running.clear()
