"""Time-series transformer over an action chunk (the design of Diffusion Policy's transformer variant).

Each action of the chunk is one token. The tokens attend to each other (causally by default: an action sees
the actions before it, as in Diffusion Policy) and, through cross-attention, to condition tokens: one for the
time / noise level and `n_cond_tokens` projected from the observation features. It has the UNet's interface,
(B, T, action_dim) in and out with a scalar time and a global condition vector, so every head can use either.

Attention is written out (softmax of scaled dot products) rather than taken from a fused kernel: the energy
head differentiates through the network twice (an action gradient, then the weights' gradient of a loss on
it), and every operation here supports that on any device.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from robolearn.nn.unet1d import SinusoidalPosEmb


class Attention(nn.Module):
    """Multi-head attention of queries x (B, Tq, D) over keys/values memory (B, Tk, D), optional boolean mask
    (Tq, Tk) where True means "may attend"."""

    def __init__(self, dim: int, n_head: int, dropout: float):
        super().__init__()
        if dim % n_head:
            raise ValueError(f"n_emb {dim} must be divisible by n_head {n_head}")
        self.n_head = n_head
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, tq, d = x.shape
        heads = lambda t: t.reshape(b, t.shape[1], self.n_head, d // self.n_head).transpose(1, 2)  # noqa: E731
        q = heads(self.query(x))
        k, v = (heads(t) for t in self.key_value(memory).chunk(2, dim=-1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.dropout(scores.softmax(dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, tq, d))


class DecoderBlock(nn.Module):
    """Pre-norm: self-attention over the action tokens, cross-attention to the condition tokens, MLP."""

    def __init__(self, dim: int, n_head: int, dropout: float):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attention = Attention(dim, n_head, dropout)
        self.cross_attention = Attention(dim, n_head, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attention(h, h, mask)
        x = x + self.cross_attention(self.norm_cross(x), cond)
        return x + self.mlp(self.norm_mlp(x))


class ConditionalTransformer1D(nn.Module):
    """Denoiser / energy trunk for action chunks: (B, horizon, action_dim) in, same shape out."""

    def __init__(self, action_dim: int, global_cond_dim: int, horizon: int, n_layer: int = 8, n_head: int = 4,
                 n_emb: int = 256, n_cond_tokens: int = 2, dropout: float = 0.1, causal: bool = True):
        super().__init__()
        self.action_dim = action_dim
        self.global_cond_dim = global_cond_dim
        self.horizon = horizon
        self.n_cond_tokens = n_cond_tokens
        self.input = nn.Linear(action_dim, n_emb)
        self.position = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.time = SinusoidalPosEmb(n_emb)
        if global_cond_dim < 1 or n_cond_tokens < 1:
            raise ValueError(f"the transformer needs observation features (global_cond_dim {global_cond_dim}) and at "
                             f"least one condition token (n_cond_tokens {n_cond_tokens})")
        self.cond_tokens = nn.Linear(global_cond_dim, n_cond_tokens * n_emb)
        self.cond_position = nn.Parameter(torch.zeros(1, 1 + n_cond_tokens, n_emb))
        self.cond_mlp = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        self.blocks = nn.ModuleList(DecoderBlock(n_emb, n_head, dropout) for _ in range(n_layer))
        self.norm = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, action_dim)
        mask = torch.ones(horizon, horizon, dtype=torch.bool).tril() if causal else None
        self.register_buffer("mask", mask, persistent=False)  # rebuilt from the config, never read from a file
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.cond_position, std=0.02)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """`sample` (B, horizon, action_dim), `timestep` scalar or (B,), `global_cond` (B, global_cond_dim)."""
        if sample.ndim != 3 or tuple(sample.shape[1:]) != (self.horizon, self.action_dim):
            raise ValueError(f"sample must be (B, {self.horizon}, {self.action_dim}), got {tuple(sample.shape)}")
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        if global_cond is None or tuple(global_cond.shape) != (b, self.global_cond_dim):
            got = None if global_cond is None else tuple(global_cond.shape)
            raise ValueError(f"global_cond must be ({b}, {self.global_cond_dim}), got {got}")
        obs_tokens = self.cond_tokens(global_cond.to(sample.dtype)).reshape(b, self.n_cond_tokens, -1)
        cond = self.cond_mlp(torch.cat([self.time(t)[:, None], obs_tokens], dim=1) + self.cond_position)
        x = self.input(sample) + self.position
        for block in self.blocks:
            x = block(x, cond, self.mask)
        return self.head(self.norm(x))
