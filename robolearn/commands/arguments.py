"""Argument types and checks shared by the verbs: counts are refused before any work starts, with the option named."""
from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import Any

# kept in step with robolearn.control.chunking.MODES (importing that module loads torch; tests compare the two)
EXECUTION_MODES = ("receding", "ensemble", "rtc")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: 1, 2, ... (episodes, envs, candidates)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: 0, 1, ... (worker processes, an episode index, video episodes)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (seconds, rates)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


def add_energy_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of robolearn.control.energy_gate for heads with an energy (receding-horizon execution)."""
    parser.add_argument("--energy-threshold", type=positive_float, default=None, metavar="E",
                        help="heads with an energy (policy=energy): a decision above E is unsure and re-planned")
    parser.add_argument("--energy-replans", type=non_negative_int, default=1, metavar="N",
                        help="with --energy-threshold: re-plans per unsure decision, the lowest energy is kept")


def add_rig_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--rig", required=required,
                        help="rig name in hardware/ (e.g. sim_arm, ur5e) or a rig YAML file")


def check_counts(config: Any, minimums: Mapping[str, int | float], where: str) -> None:
    """Refuse a config whose counts are below their minimum (e.g. train.steps=-1) before a model is built."""
    problems = [f"{name} must be >= {low}, got {getattr(config, name)!r}"
                for name, low in minimums.items() if not getattr(config, name) >= low]
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")


def check_device(name: str | None, option: str) -> None:
    """Refuse a torch device this machine does not have before any work (torch's own errors are RuntimeErrors or
    tracebacks from deep inside a model's .to())."""
    import torch

    from robolearn.device import resolve_device

    label = f"{option}{name!r}" if option.endswith("=") else f"{option} {name!r}"  # device='x' or --device 'x'
    try:
        device = resolve_device(name)
    except RuntimeError as err:
        raise ValueError(f"{label}: {err}") from err
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{label}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
