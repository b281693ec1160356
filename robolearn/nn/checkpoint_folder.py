"""The on-disk layout every robolearn model shares: a folder with `<name>.safetensors` and a JSON record.

No pickle: loading reads tensors and JSON only. Both files are written to a temporary name and renamed, so a
crash mid-save leaves the previous checkpoint readable. The record carries a format name (a policy folder is
not mistaken for a critic), a version (a checkpoint from a newer robolearn fails clearly) and the weights'
SHA-256 (checked on load); config fields are checked by name and type, and the module is laid out on the meta
device and compared with the weights' header before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
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
    full = {"format": kind.format, "version": kind.version, **record,
            "weights_sha256": file_sha256(directory / kind.weights)}
    _replace_atomically(directory / kind.config, lambda p: p.write_text(json.dumps(full, indent=2)))
    return directory


def read_checkpoint_record(kind: CheckpointKind, directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / kind.config
    if not path.is_file():
        raise FileNotFoundError(f"no {kind.what} checkpoint at {directory} (missing {kind.config})")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a robolearn {kind.what} checkpoint: not JSON ({err})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a robolearn {kind.what} checkpoint: a JSON {type(record).__name__}, "
                         f"not an object")
    if record.get("format") != kind.format:
        raise ValueError(f"{path} is not a robolearn {kind.what} checkpoint (format {record.get('format')!r})")
    if not isinstance(record.get("version", 0), int) or isinstance(record.get("version"), bool):
        raise ValueError(f"{path}: version must be an integer, got {record['version']!r}")
    if record.get("version", 0) > kind.version:
        raise ValueError(f"{path} was written by a newer robolearn ({kind.what} checkpoint version {record['version']}, "
                         f"this one reads up to {kind.version}); upgrade robolearn")
    return record


def config_from_record(kind: CheckpointKind, config_cls: type, values: dict[str, Any]) -> Any:
    """The dataclass config saved in a record; fields this code does not know are an error, not dropped."""
    return dataclass_from_dict(config_cls, values, f"{kind.what} checkpoint config")


def build_checked(kind: CheckpointKind, cls: type[nn.Module], config: Any, directory: str | os.PathLike) -> nn.Module:
    """`cls(config)`, built only once its weights file is known to fit. The module is first laid out on the meta
    device (no memory) and its tensor shapes compared with the file's header, so a hostile or damaged config can
    neither make us allocate terabytes nor build something the weights do not describe."""
    path = Path(directory) / kind.weights
    on_file = weight_shapes(path, f"{kind.what} weights")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(f"{kind.what} checkpoint {directory}: its config cannot build {cls.__name__}: {err}") from err
    missing, unexpected = sorted(set(expected) - set(on_file)), sorted(set(on_file) - set(expected))
    reshaped = [k for k in expected if k in on_file and on_file[k] != expected[k]]
    if missing or unexpected or reshaped:
        raise ValueError(f"{kind.what} weights in {directory} do not match {cls.__name__} as configured: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {reshaped[:5]}")
    return cls(config)


def weight_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, without reading the data."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError (not an OSError/ValueError) on bad bytes
        raise ValueError(f"{what} file {path} is damaged: {err}") from err


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(kind: CheckpointKind, module: nn.Module, directory: str | os.PathLike,
                 device: str | torch.device) -> nn.Module:
    """Load the folder's weights into `module` (built from its config) and return it on `device`, in eval mode.

    The record's checksum of the weights (written since robolearn records have one) catches damage that still
    parses, such as one flipped bit that turns a weight into 1e38."""
    path = Path(directory) / kind.weights
    expected_sha = read_checkpoint_record(kind, directory).get("weights_sha256")
    if expected_sha is not None and path.is_file() and file_sha256(path) != expected_sha:
        raise ValueError(f"{kind.what} weights {path} are damaged: their SHA-256 differs from the one recorded in "
                         f"{kind.config} when they were saved")
    state = read_tensors(path, f"{kind.what} weights")
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    retyped = [k for k in expected if k in state and state[k].dtype != expected[k].dtype]
    if missing or unexpected or reshaped or retyped:
        raise ValueError(f"{kind.what} weights in {directory} do not match {type(module).__name__} as configured: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {reshaped[:5]}, "
                         f"wrong dtype {retyped[:5]}")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # a policy with NaN weights would send NaN actions
        raise ValueError(f"{kind.what} weights in {directory} hold NaN or infinite values in {broken[:5]}; the file is "
                         f"damaged or came from a diverged run")
    module.load_state_dict(state)
    return module.to(torch.device(device)).eval()


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing, truncated or garbled file is a ValueError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError (not an OSError/ValueError) on bad bytes
        raise ValueError(f"{what} file {path} is damaged: {err}") from err


def save_configured(kind: CheckpointKind, module: nn.Module, directory: str | os.PathLike,
                    info: Mapping[str, Any] | None = None) -> Path:
    """For modules built as `cls(config)` with a dataclass `module.config`: the config rebuilds the module."""
    return write_checkpoint(kind, module, directory, {"config": dataclasses.asdict(module.config), "info": dict(info or {})})


def load_configured(kind: CheckpointKind, cls: type[nn.Module], config_cls: type, directory: str | os.PathLike,
                    device: str | torch.device | None = None) -> Any:
    """Rebuild what `save_configured` wrote, in eval mode, on `device` (default: CUDA if present)."""
    record = read_checkpoint_record(kind, directory)
    module = build_checked(kind, cls, config_from_record(kind, config_cls, record.get("config")), directory)
    return load_weights(kind, module, directory, device if device is not None else default_device())
