"""Mixed precision for training: autocast to bf16 or fp16 around the loss, a gradient scaler for fp16, TF32.

bf16 keeps fp32's exponent range, so it needs no loss scaling and is the default on GPUs that have it; fp16
gradients underflow without a scaler, so fp16 always runs with one. The weights, the optimizer and the EMA stay
fp32 whatever the precision: only the forward and backward computations change.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on a GPU that supports it, else fp32 (on CPUs bf16 is slower than fp32 on most machines)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 only: scales the loss up so small gradients survive, skips steps whose gradients overflowed."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def allow_tf32() -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (Ampere and later): ~10 mantissa bits, far faster."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; mixing it with the older flags is an error
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
