"""Turns a chunking policy into a per-step controller for a batch of environments.

Every runner keeps each env's last `n_obs_steps` observations (repeating the first one after a reset, exactly
as training windows pad episode starts) and answers `act()` with one action per env. With the policy on a CUDA
device the history lives there (each observation crosses to the GPU once, when it arrives) and batch-1 sampling
replays CUDA graphs (`Policy.compile_for_inference`, switched on by the runners unless `cuda_graphs=False`). `PolicyRunner` is the
receding horizon: when its queue runs dry it asks the policy for the next chunk for all envs in one batched
call and executes its first `n_action_steps` actions. Temporal ensembling (`ensemble.py`) and real-time chunk
blending (`rtc.py`) share the same shape, so the loop drives any of them.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from robolearn.control.energy_gate import EnergyGate
from robolearn.policies.base import Policy


@runtime_checkable
class ChunkRunner(Protocol):
    """What the control loop calls: start episodes, push observations, take the next action of every env."""

    n_inferences: int

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None: ...

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None: ...

    def act(self) -> np.ndarray: ...

    def close(self) -> None: ...  # release what the runner holds (an inference thread, buffers); it is done after


class ObsHistory:
    """The last `n_obs_steps` observations of every env, edge-padded after a reset like training windows.

    `device`: a CUDA device keeps the frames there as tensors (the policy reads them without a copy); otherwise
    they stay numpy arrays on the host."""

    def __init__(self, keys: Sequence[str], n_obs_steps: int, device: torch.device | None = None):
        self.keys = tuple(keys)
        self.n_obs_steps = n_obs_steps
        self.device = device if device is not None and torch.device(device).type == "cuda" else None
        self._history: dict[str, np.ndarray | torch.Tensor] = {}

    @property
    def history(self) -> dict[str, np.ndarray]:
        """Each observed key's last `n_obs_steps` frames per env: (n_envs, n_obs_steps, *shape), on the host."""
        return {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in self._history.items()}

    def _frames(self, observations: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray | torch.Tensor:
        frames = np.stack([np.asarray(o[key]) for o in observations])
        return frames if self.device is None else torch.from_numpy(frames).to(self.device)

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Start new episodes from their first observations (one per env)."""
        for key in self.keys:
            missing = [i for i, o in enumerate(observations) if key not in o]
            if missing:
                raise KeyError(f"policy needs observation key {key!r}, missing for env(s) {missing}")
            first = self._frames(observations, key)
            if self.device is None:
                self._history[key] = np.repeat(first[:, None], self.n_obs_steps, axis=1)
            else:
                self._history[key] = first[:, None].repeat(1, self.n_obs_steps, *([1] * (first.ndim - 1)))

    def observe(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Push the newest observation of each env (envs that are done may repeat their last one)."""
        for key in self.keys:
            newest = self._frames(observations, key)
            hist = self._history[key]
            if self.device is not None:  # a new tensor: an in-place shift would overlap, and a snapshot may hold it
                self._history[key] = torch.cat([hist[:, 1:], newest[:, None]], dim=1)
                continue
            hist[:, :-1] = hist[:, 1:]
            hist[:, -1] = newest

    def close(self) -> None:
        """Drop the buffered observations (images of every env can be large); `reset` starts afresh."""
        self._history = {}


def policy_device(policy: Policy) -> torch.device | None:
    """The policy's device; None for a wrapper that only offers act/sample (its inner policy moves the inputs)."""
    return getattr(policy, "device", None)


def use_cuda_graphs(policy: Policy, cuda_graphs: bool | None) -> None:
    """None (the runners' default): CUDA graphs when the policy is on a CUDA device; False: eager sampling.
    Wrappers without `compile_for_inference` are left as they are."""
    if hasattr(policy, "compile_for_inference"):
        policy.compile_for_inference(cuda_graphs is None or cuda_graphs)  # a no-op on the CPU


@torch.no_grad()
def predict_future_tensor(policy: Policy, history: Mapping[str, np.ndarray | torch.Tensor],
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The whole predicted future of one chunk on the policy's device: (n_envs, horizon - n_obs_steps + 1,
    action_dim). Index 0 is the action for the step of the newest observation (the chunk starts at the oldest
    observed step). Ensembling and blending need every predicted step, not only the `n_action_steps` of `act`.
    """
    obs = {k: torch.as_tensor(v, device=policy_device(policy)) for k, v in history.items()}
    if hasattr(policy, "infer_chunk"):
        chunk = policy.infer_chunk(obs, generator=generator)
    else:
        chunk = policy.sample(obs, n=1, generator=generator)[:, 0]
    return chunk[:, policy.config.n_obs_steps - 1:]


def predict_future(policy: Policy, history: Mapping[str, np.ndarray | torch.Tensor],
                   generator: torch.Generator | None = None) -> np.ndarray:
    """`predict_future_tensor` as float32 numpy on the host."""
    return predict_future_tensor(policy, history, generator).float().cpu().numpy()


class PolicyRunner(ObsHistory):
    """Receding horizon: execute `n_action_steps` of each chunk, then replan (blocking) for all envs at once."""

    def __init__(self, policy: Policy, generator: torch.Generator | None = None, cuda_graphs: bool | None = None,
                 energy_gate: EnergyGate | None = None):
        """`energy_gate`: re-plan or replace unsure decisions of a policy with an energy (see energy_gate.py)."""
        super().__init__(tuple(policy.config.obs_shapes), policy.config.n_obs_steps, policy_device(policy))
        use_cuda_graphs(policy, cuda_graphs)
        self.policy = policy
        self.generator = generator
        self.energy_gate = energy_gate
        self._queue = np.zeros((0, 0, policy.config.action_dim), np.float32)
        self._next = 0
        self.n_inferences = 0
        self.latencies_s: list[float] = []  # wall time of each blocking inference
        self.energies: list[np.ndarray] = []  # energy of each env's decision (n_envs,), for heads that have one

    def reset(self, observations: Sequence[Mapping[str, np.ndarray]]) -> None:
        super().reset(observations)
        self._queue = np.zeros((len(observations), 0, self.policy.config.action_dim), np.float32)
        self._next = 0

    def act(self) -> np.ndarray:
        """(n_envs, action_dim): the next action of every env, replanning when the chunk is used up."""
        if self._next >= self._queue.shape[1]:
            t0 = time.perf_counter()
            # the executed actions cross to the host once per chunk: each goes to an env or a robot anyway
            if hasattr(self.policy, "act_with_energy"):
                self._queue, energies = self.policy.act_with_energy(self._history, generator=self.generator)
            else:  # a wrapper that only offers act
                self._queue, energies = self.policy.act(self._history, generator=self.generator), None
            if energies is not None and self.energy_gate is not None:
                self._queue, energies = self.energy_gate.apply(self.policy, self._history, self._queue, energies,
                                                               self.generator)
            self.latencies_s.append(time.perf_counter() - t0)
            if energies is not None:
                self.energies.append(energies)
            self._next = 0
            self.n_inferences += 1
        action = self._queue[:, self._next]
        self._next += 1
        return action
