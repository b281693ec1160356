"""Where models run: the GPU when there is one, else the CPU."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None -> default_device(); otherwise the named device, checked to exist."""
    if name in (None, "", "auto"):
        return default_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine; use 'cpu' or 'auto'")
    return device
