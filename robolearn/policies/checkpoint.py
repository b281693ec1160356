"""Policy checkpoints: `model.safetensors` (weights, normalizer included) + `policy.json` (what rebuilds it).

No pickle: loading a checkpoint reads tensors and JSON only, and the class it names must be one of
robolearn's own. The JSON carries a format version so that a checkpoint from a future version fails clearly.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from robolearn.device import default_device
from robolearn.nn.checkpoint_folder import (
    CheckpointKind,
    config_from_record,
    load_weights,
    read_checkpoint_record,
    write_checkpoint,
)
from robolearn.policies.base import Policy
from robolearn.task import TaskConfig, import_object

KIND = CheckpointKind(what="policy", format="robolearn.policy", version=1, weights="model.safetensors",
                      config="policy.json")


def save_policy(policy: Policy, directory: str | os.PathLike, task: TaskConfig | None = None,
                info: dict[str, Any] | None = None) -> Path:
    """Write the policy's weights and config into `directory` (created if needed)."""
    cls = type(policy)
    return write_checkpoint(KIND, policy, directory, {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": dataclasses.asdict(policy.config),
        "task": dataclasses.asdict(task) if task is not None else None,
        "info": info or {},
    })


def read_record(directory: str | os.PathLike) -> dict[str, Any]:
    return read_checkpoint_record(KIND, directory)


def load_policy(path: str | os.PathLike, device: str | torch.device | None = None) -> Policy:
    """Rebuild a policy from a checkpoint folder, in eval mode, on `device` (default: CUDA if present)."""
    record = read_record(path)
    cls = import_object(record["class"])
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"{record['class']} is not a robolearn Policy")
    policy = cls(config_from_record(KIND, cls.config_class, record["config"]))
    return load_weights(KIND, policy, path, device if device is not None else default_device())


def load_task(path: str | os.PathLike) -> TaskConfig:
    record = read_record(path)
    if not record.get("task"):
        raise ValueError(f"checkpoint {path} does not say which task it was trained on; pass the task explicitly")
    return TaskConfig(**record["task"])

