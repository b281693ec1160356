"""Acting on how sure an energy-based policy is: every decision of a head with an energy (energy-descent) comes
with the energy of the chosen chunk, and a decision above `threshold` is unsure.

The gate first re-plans (up to `replans` fresh samplings for the unsure envs, keeping each env's lowest-energy
chunk), then hands the envs still above the threshold to `on_uncertain(envs, energies, actions) -> actions`,
which returns what those envs execute instead: the place for a deployment's own rule (hold the current pose,
slow down, ask the operator). Without a hook the re-planned actions are executed. Every decision's energy is
recorded by the runner (`PolicyRunner.energies`), like its latency, gated or not.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from robolearn.policies.base import Policy

UncertainHook = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EnergyGate:
    threshold: float
    replans: int = 0  # extra samplings for unsure envs before the hook is called
    on_uncertain: UncertainHook | None = None  # (env indices, their energies, their actions) -> actions to execute
    n_uncertain: int = 0  # decisions (per env) that ended above the threshold
    n_replans: int = 0  # re-plans taken

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"energy threshold must be a finite number, got {self.threshold}")
        if not isinstance(self.replans, int) or self.replans < 0:
            raise ValueError(f"replans must be a non-negative integer, got {self.replans!r}")

    def apply(self, policy: Policy, obs: Mapping[str, np.ndarray | torch.Tensor], actions: np.ndarray,
              energies: np.ndarray, generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The actions (B, n_action_steps, action_dim) to execute and their energies (B,) after the gate."""
        actions, energies = actions.copy(), energies.copy()
        for _ in range(self.replans):
            unsure = np.flatnonzero(energies > self.threshold)
            if not len(unsure):
                break
            self.n_replans += 1
            subset = {k: v[unsure] for k, v in obs.items()}
            new_actions, new_energies = policy.act_with_energy(subset, generator)
            better = new_energies < energies[unsure]
            actions[unsure[better]] = new_actions[better]
            energies[unsure[better]] = new_energies[better]
        unsure = np.flatnonzero(energies > self.threshold)
        self.n_uncertain += len(unsure)
        if len(unsure) and self.on_uncertain is not None:
            replaced = np.asarray(self.on_uncertain(unsure, energies[unsure], actions[unsure]), dtype=actions.dtype)
            if replaced.shape != actions[unsure].shape:
                raise ValueError(f"on_uncertain must return actions shaped {actions[unsure].shape}, "
                                 f"got {replaced.shape}")
            actions[unsure] = replaced
        return actions, energies
