"""Policy checkpoints: `model.safetensors` (weights, normalizer included) + `policy.json` (what rebuilds it).

No pickle: loading a checkpoint reads tensors and JSON only, and the class it names must be one of
robolearn's own. The JSON carries a format version so that a checkpoint from a future version fails clearly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from robolearn.device import default_device
from robolearn.policies.base import Policy
from robolearn.task import TaskConfig, import_object

FORMAT = "robolearn.policy"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "policy.json"


def save_policy(policy: Policy, directory: str | os.PathLike, task: TaskConfig | None = None,
                info: dict[str, Any] | None = None) -> Path:
    """Write the policy's weights and config into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cls = type(policy)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": dataclasses.asdict(policy.config),
        "task": dataclasses.asdict(task) if task is not None else None,
        "info": info or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / WEIGHTS)
    (directory / (CONFIG + ".tmp")).write_text(json.dumps(record, indent=2))
    os.replace(directory / (CONFIG + ".tmp"), directory / CONFIG)
    return directory


def read_record(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"no policy checkpoint at {directory} (missing {CONFIG})")
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a robolearn policy checkpoint")
    if record.get("version", 0) > VERSION:
        raise ValueError(f"{path} was written by a newer robolearn (checkpoint version {record['version']})")
    return record


def load_policy(path: str | os.PathLike, device: str | torch.device | None = None) -> Policy:
    """Rebuild a policy from a checkpoint folder, in eval mode, on `device` (default: CUDA if present)."""
    record = read_record(path)
    cls = import_object(record["class"])
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"{record['class']} is not a robolearn Policy")
    field_names = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(record["config"]) - field_names)
    if unknown:
        raise ValueError(f"checkpoint config has fields {unknown} that {cls.config_class.__name__} does not know; "
                         f"it was written by another robolearn version")
    policy = cls(cls.config_class(**record["config"]))
    state = load_file(str(Path(path) / WEIGHTS))
    expected = policy.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        raise ValueError(f"checkpoint weights do not match {cls.__name__} as configured: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {reshaped[:5]}")
    policy.load_state_dict(state)
    device = torch.device(device) if device is not None else default_device()
    return policy.to(device).eval()


def load_task(path: str | os.PathLike) -> TaskConfig:
    record = read_record(path)
    if not record.get("task"):
        raise ValueError(f"checkpoint {path} does not say which task it was trained on; pass the task explicitly")
    return TaskConfig(**record["task"])

