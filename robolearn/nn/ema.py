"""Exponential moving average of a model's weights, evaluated instead of the raw weights.

Diffusion policies sample noticeably smoother, better actions from averaged weights. The decay warms up
(Song et al. / Diffusion Policy schedule) so early, fast-changing weights are not frozen into the average.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, inv_gamma: float = 1.0, power: float = 0.75,
                 min_value: float = 0.0, max_value: float = 0.9999):
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.inv_gamma = inv_gamma
        self.power = power
        self.min_value = min_value
        self.max_value = max_value
        self.step = 0

    def decay(self, step: int | None = None) -> float:
        """Weight kept from the old average at `step` (default: the next update's); 0 copies the model."""
        step = self.step if step is None else step
        if step <= 0:
            return 0.0
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return max(self.min_value, min(value, self.max_value))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend `model` into the average. Floating parameters are averaged; buffers (normalizer statistics,
        counters) are not trained by gradients, so they are copied to stay exact."""
        decay = self.decay()
        ema_params = dict(self.model.named_parameters())
        for name, param in model.named_parameters():
            avg = ema_params[name]
            if avg.dtype.is_floating_point:
                avg.lerp_(param.detach().to(avg.dtype), 1.0 - decay)
            else:
                avg.copy_(param.detach())
        ema_buffers = dict(self.model.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)
        self.step += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors only (safetensors-friendly): the averaged weights under "model." plus "step"."""
        state = {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
        state["step"] = torch.tensor(self.step, dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if "step" not in state:
            raise KeyError("EMA state has no 'step' entry")
        model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        self.step = int(state["step"])
