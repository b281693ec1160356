"""Batch-1 sampling replayed from CUDA graphs: the whole sampler (every denoising / integration / DFO step) is
captured once and then launched as one graph, so a 10-step DDIM chunk costs one launch instead of hundreds of
kernel launches from Python.

One graph per (observation shapes and dtypes, n, sampler options, generator, train/eval mode). Inputs are copied
into the graph's static buffers before each replay and the result is cloned out of its static output. A sampler
that cannot be captured (one that reads a value back to the host mid-way, as a custom head might) is run eagerly
for that key, with one warning naming the error.

Random numbers: the generator (or torch's default CUDA generator when none is given) is registered with the
graph, so a replay draws exactly what an eager `sample` would draw from the generator's current state and
advances it by the same amount: graph and eager results agree for the same seed. The warm-up runs before capture
consume random numbers; the generator's state is restored after them, so capturing is invisible to the caller.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

WARMUP_RUNS = 2  # eager runs on a side stream before capture (cuBLAS/cuDNN pick and allocate their workspaces)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor
    generator: torch.Generator | None  # held so its id in the key stays unique while the graph lives
    weights: list[int]  # data_ptr of every parameter and buffer at capture: a moved/reloaded model recaptures


class GraphedSampler:
    """`policy.sample` for a fixed batch, replayed from CUDA graphs (`Policy.compile_for_inference` builds it)."""

    def __init__(self, policy: nn.Module):
        if policy.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need the policy on a CUDA device; it is on {policy.device}")
        self.policy = policy
        self._graphs: dict[tuple, _Graph | None] = {}  # None: capture failed, sample eagerly
        self.n_captures = 0

    def _weights(self) -> list[int]:
        return [t.data_ptr() for t in (*self.policy.parameters(), *self.policy.buffers())]

    def _key(self, obs: Mapping[str, torch.Tensor], n: int, generator: torch.Generator | None,
             options: Mapping[str, Any]) -> tuple:
        shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(obs.items()))
        return shapes, n, id(generator), tuple(sorted(options.items())), self.policy.training

    @torch.no_grad()
    def sample(self, obs: Mapping[str, torch.Tensor], n: int = 1, generator: torch.Generator | None = None,
               **options: Any) -> torch.Tensor:
        """Same contract and values as `policy.sample(obs, n, generator, **options)`; the first call per key
        captures (a few eager runs plus the capture), later calls only copy the inputs and replay."""
        obs = {k: v for k, v in obs.items() if k in self.policy.config.obs_shapes}
        key = self._key(obs, n, generator, options)
        if key in self._graphs and self._graphs[key] is None:
            return self.policy.sample(obs, n=n, generator=generator, **options)
        entry = self._graphs.get(key)
        if entry is not None and entry.weights != self._weights():
            entry = None  # the weights were moved or replaced by new tensors: the old graph reads freed memory
        if entry is None:
            entry = self._graphs[key] = self._capture_or_none(obs, n, generator, options)
            if entry is None:
                return self.policy.sample(obs, n=n, generator=generator, **options)
        for k, buf in entry.inputs.items():
            buf.copy_(obs[k], non_blocking=True)
        entry.graph.replay()
        return entry.output.clone()

    def _capture_or_none(self, obs: Mapping[str, torch.Tensor], n: int, generator: torch.Generator | None,
                         options: Mapping[str, Any]) -> _Graph | None:
        state = _rng_state(generator, self.policy.device)
        try:
            return self._capture(obs, n, generator, options)
        except RuntimeError as err:
            _set_rng_state(generator, self.policy.device, state)
            warnings.warn(f"{type(self.policy).__name__}.sample could not be captured in a CUDA graph ({err}); "
                          f"sampling eagerly for these inputs", RuntimeWarning, stacklevel=3)
            return None

    def _capture(self, obs: Mapping[str, torch.Tensor], n: int, generator: torch.Generator | None,
                 options: Mapping[str, Any]) -> _Graph:
        device = self.policy.device
        inputs = {k: v.to(device).clone() for k, v in obs.items()}
        state = _rng_state(generator, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.policy.sample(inputs, n=n, generator=generator, **options)
        torch.cuda.current_stream(device).wait_stream(side)
        _set_rng_state(generator, device, state)
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)  # the default generator is registered by capture itself
        # thread_local: the real-time chunking worker captures while the control thread keeps using CUDA
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = self.policy.sample(inputs, n=n, generator=generator, **options)
        _set_rng_state(generator, device, state)
        self.n_captures += 1
        return _Graph(graph, inputs, output, generator, self._weights())

    def clear(self) -> None:
        """Drop every captured graph (and the memory pools they hold)."""
        self._graphs.clear()


def _rng_state(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return generator.get_state() if generator is not None else torch.cuda.get_rng_state(device)


def _set_rng_state(generator: torch.Generator | None, device: torch.device, state: torch.Tensor) -> None:
    if generator is not None:
        generator.set_state(state)
    else:
        torch.cuda.set_rng_state(state, device)
