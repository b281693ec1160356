"""Policy checkpoints: `model.safetensors` (weights, normalizer included) + `policy.json` (what rebuilds it).

No pickle: loading a checkpoint reads tensors and JSON only, and it names its policy kind and env through
robolearn.registry (old checkpoints' import paths are aliases), type-checked before anything is built. The JSON
carries a format version so that a checkpoint from a future version fails clearly.
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
    build_checked,
    config_from_record,
    load_weights,
    read_checkpoint_record,
    write_checkpoint,
)
from robolearn.policies.base import Policy
from robolearn.registry import POLICIES
from robolearn.task import TaskConfig, task_from_dict

KIND = CheckpointKind(what="policy", format="robolearn.policy", version=1, weights="model.safetensors",
                      config="policy.json")


def save_policy(policy: Policy, directory: str | os.PathLike, task: TaskConfig | None = None,
                info: dict[str, Any] | None = None) -> Path:
    """Write the policy's weights and config into `directory` (created if needed)."""
    return write_checkpoint(KIND, policy, directory, {
        "class": POLICIES.name_of(type(policy)),
        "config": dataclasses.asdict(policy.config),
        "task": dataclasses.asdict(task) if task is not None else None,
        "info": info or {},
    })


def read_record(directory: str | os.PathLike) -> dict[str, Any]:
    return read_checkpoint_record(KIND, directory)


def load_policy(path: str | os.PathLike, device: str | torch.device | None = None) -> Policy:
    """Rebuild a policy from a checkpoint folder, in eval mode, on `device` (default: CUDA if present)."""
    record = read_record(path)
    cls = POLICIES.get(record.get("class"))
    policy = build_checked(KIND, cls, config_from_record(KIND, cls.config_class, record.get("config")), path)
    return load_weights(KIND, policy, path, device if device is not None else default_device())


def load_task(path: str | os.PathLike) -> TaskConfig:
    record = read_record(path)
    if not record.get("task"):
        raise ValueError(f"checkpoint {path} does not say which task it was trained on; pass the task explicitly")
    return task_from_dict(record["task"], f"checkpoint {path}")

