"""Plain MLPs for the heads that need one (regression baseline, energy network)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS = {"mish": nn.Mish, "relu": nn.ReLU}


def check_mlp(hidden: Sequence[int], activation: str) -> list[int]:
    """Validate MLP settings from a config; returns the widths as a list of ints (JSON has no tuples)."""
    widths = [int(h) for h in hidden]
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden must list at least one positive width, got {list(hidden)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return widths


def mlp_layers(widths: Sequence[int], activation: str) -> list[nn.Module]:
    """Linear + activation for each consecutive pair of widths (the caller adds the output layer)."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), act()]
    return layers
