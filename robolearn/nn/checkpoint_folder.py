"""The on-disk layout every robolearn model shares: a folder with `<name>.safetensors` and a JSON record.

No pickle: loading reads tensors and JSON only. Both files are written to a temporary name and renamed, so a
crash mid-save leaves the previous checkpoint readable. The record carries a format name (a policy folder is
not mistaken for a critic) and a version (a checkpoint from a newer robolearn fails clearly), and the config
fields are checked by name, so a renamed field is reported instead of silently dropped.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robolearn.device import default_device
from robolearn.typed_config import dataclass_from_dict


@dataclass(frozen=True)
class CheckpointKind:
    what: str  # "policy", "critic", ... for messages
    format: str  # the record's "format" value
    version: int  # the newest record version this code reads
    weights: str  # file names inside the folder
    config: str


def _replace_atomically(target: Path, write: Any) -> None:
    tmp = target.with_name(target.name + ".tmp")
    write(tmp)
    os.replace(tmp, target)


def write_checkpoint(kind: CheckpointKind, module: nn.Module, directory: str | os.PathLike,
                     record: dict[str, Any]) -> Path:
    """Save `module`'s weights and `record` (plus format and version) into `directory`, created if needed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    _replace_atomically(directory / kind.weights, lambda p: save_file(state, str(p)))
    full = {"format": kind.format, "version": kind.version, **record}
    _replace_atomically(directory / kind.config, lambda p: p.write_text(json.dumps(full, indent=2)))
    return directory


def read_checkpoint_record(kind: CheckpointKind, directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / kind.config
    if not path.exists():
        raise FileNotFoundError(f"no {kind.what} checkpoint at {directory} (missing {kind.config})")
    record = json.loads(path.read_text())
    if record.get("format") != kind.format:
        raise ValueError(f"{path} is not a robolearn {kind.what} checkpoint (format {record.get('format')!r})")
    if record.get("version", 0) > kind.version:
        raise ValueError(f"{path} was written by a newer robolearn ({kind.what} checkpoint version {record['version']}, "
                         f"this one reads up to {kind.version}); upgrade robolearn")
    return record


def config_from_record(kind: CheckpointKind, config_cls: type, values: dict[str, Any]) -> Any:
    """The dataclass config saved in a record; fields this code does not know are an error, not dropped."""
    return dataclass_from_dict(config_cls, values, f"{kind.what} checkpoint config")


def load_weights(kind: CheckpointKind, module: nn.Module, directory: str | os.PathLike,
                 device: str | torch.device) -> nn.Module:
    """Load the folder's weights into `module` (built from its config) and return it on `device`, in eval mode."""
    state = load_file(str(Path(directory) / kind.weights))
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        raise ValueError(f"{kind.what} weights in {directory} do not match {type(module).__name__} as configured: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {reshaped[:5]}")
    module.load_state_dict(state)
    return module.to(torch.device(device)).eval()


def save_configured(kind: CheckpointKind, module: nn.Module, directory: str | os.PathLike,
                    info: Mapping[str, Any] | None = None) -> Path:
    """For modules built as `cls(config)` with a dataclass `module.config`: the config rebuilds the module."""
    return write_checkpoint(kind, module, directory, {"config": dataclasses.asdict(module.config), "info": dict(info or {})})


def load_configured(kind: CheckpointKind, cls: type[nn.Module], config_cls: type, directory: str | os.PathLike,
                    device: str | torch.device | None = None) -> Any:
    """Rebuild what `save_configured` wrote, in eval mode, on `device` (default: CUDA if present)."""
    record = read_checkpoint_record(kind, directory)
    module = cls(config_from_record(kind, config_cls, record["config"]))
    return load_weights(kind, module, directory, device if device is not None else default_device())
