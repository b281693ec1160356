"""1-D temporal conditional UNet (the Diffusion Policy denoiser, Chi et al. 2023).

The network convolves over the time axis of an action chunk, so nearby actions in a chunk are denoised
jointly and stay smooth. The diffusion step and the observation features reach every residual block through
FiLM (a per-channel scale and bias), which conditions the whole hierarchy instead of only the input.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn


def check_unet(down_dims: Sequence[int], horizon: int) -> list[int]:
    """Validate UNet settings from a config; returns down_dims as a list of ints (JSON has no tuples)."""
    dims = [int(d) for d in down_dims]
    if not dims:
        raise ValueError("down_dims must name at least one UNet level")
    factor = 2 ** (len(dims) - 1)
    if horizon % factor:
        raise ValueError(f"horizon {horizon} must be divisible by {factor} "
                         f"for {len(dims)} UNet levels (down_dims={dims})")
    return dims


class SinusoidalPosEmb(nn.Module):
    """Fixed sin/cos features of a scalar, so the MLP after it sees the diffusion step at many frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"sinusoidal embedding dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32)
                          * (-math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish; 'same' padding keeps the time length."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int):
        if out_ch % n_groups:
            raise ValueError(f"channels {out_ch} must be divisible by n_groups {n_groups}")
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )


class CondResBlock(nn.Module):
    """Two conv blocks with FiLM from the condition between them, plus a residual path."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = ConvBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = ConvBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(scale * h + bias)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Denoiser for action chunks: (B, T, action_dim) in, same shape out.

    `T` must be divisible by 2 ** (len(down_dims) - 1): each level but the last halves the time axis.
    """

    def __init__(self, action_dim: int, global_cond_dim: int, down_dims: Sequence[int] = (256, 512, 1024),
                 kernel_size: int = 5, n_groups: int = 8, diffusion_step_embed_dim: int = 128):
        super().__init__()
        down_dims = [int(d) for d in down_dims]
        if not down_dims:
            raise ValueError("down_dims must name at least one level")
        self.action_dim = action_dim
        self.global_cond_dim = global_cond_dim
        self.n_levels = len(down_dims)

        e = diffusion_step_embed_dim
        self.step_encoder = nn.Sequential(SinusoidalPosEmb(e), nn.Linear(e, 4 * e), nn.Mish(), nn.Linear(4 * e, e))
        cond_dim = e + global_cond_dim

        def res(i: int, o: int) -> CondResBlock:
            return CondResBlock(i, o, cond_dim, kernel_size, n_groups)

        chans = [action_dim] + down_dims
        self.down = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(itertools.pairwise(chans)):
            last = level == self.n_levels - 1
            self.down.append(nn.ModuleList([
                res(c_in, c_out), res(c_out, c_out),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        self.mid = nn.ModuleList([res(down_dims[-1], down_dims[-1]), res(down_dims[-1], down_dims[-1])])
        # The up path mirrors every level but the first; each block takes the skip from the matching level.
        self.up = nn.ModuleList()
        for c_small, c_big in reversed(list(itertools.pairwise(down_dims))):
            self.up.append(nn.ModuleList([
                res(2 * c_big, c_small), res(c_small, c_small),
                nn.ConvTranspose1d(c_small, c_small, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """`sample` (B, T, action_dim), `timestep` scalar or (B,), `global_cond` (B, global_cond_dim)."""
        if sample.ndim != 3 or sample.shape[-1] != self.action_dim:
            raise ValueError(f"sample must be (B, T, {self.action_dim}), got {tuple(sample.shape)}")
        b, t_len = sample.shape[:2]
        factor = 2 ** (self.n_levels - 1)
        if t_len % factor:
            raise ValueError(f"horizon {t_len} must be divisible by {factor} for {self.n_levels} UNet levels")
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        cond = self.step_encoder(t)
        if self.global_cond_dim:
            if global_cond is None or tuple(global_cond.shape) != (b, self.global_cond_dim):
                got = None if global_cond is None else tuple(global_cond.shape)
                raise ValueError(f"global_cond must be ({b}, {self.global_cond_dim}), got {got}")
            cond = torch.cat([cond, global_cond.to(cond.dtype)], dim=-1)

        x = sample.transpose(1, 2)  # convolve over time: (B, C, T)
        skips = []
        for block1, block2, downsample in self.down:
            x = block2(block1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, cond)
        # Each up level fuses the matching down level's output (deepest first) and then doubles T, so the
        # finest level's features arrive through the upsampling path rather than a skip of their own.
        for block1, block2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(block2(block1(x, cond), cond))
        return self.final(x).transpose(1, 2)
