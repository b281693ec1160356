"""The network over the action chunk that the diffusion, flow and energy-descent heads share: a 1-D temporal UNet
(Diffusion Policy's CNN) or a time-series transformer (its transformer variant), chosen by `backbone`.

Both take (chunk (N, horizon, action_dim), time or noise level (scalar or (N,)), condition (N, cond_dim)) and
return a chunk-shaped output, so a head never knows which one it runs. The module is registered under the
backbone's own name (`policy.unet` or `policy.transformer`): checkpoints written before the transformer existed
name their weights `unet.*`, and they keep loading unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from robolearn.nn.transformer1d import ConditionalTransformer1D
from robolearn.nn.unet1d import ConditionalUnet1D, check_unet
from robolearn.policies.base import Policy, PolicyConfig

BACKBONES = ("unet", "transformer")


@dataclass
class BackboneConfig(PolicyConfig):
    backbone: str = "unet"  # "unet" or "transformer"
    # UNet
    down_dims: list[int] = field(default_factory=lambda: [256, 512, 1024])
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128  # width of the UNet's time embedding
    # transformer (Diffusion Policy's defaults for state tasks: 8 layers, 4 heads, width 256)
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    n_cond_tokens: int = 2  # tokens the observation features are projected into
    attn_dropout: float = 0.1
    causal_attn: bool = True  # an action token attends only to itself and the actions before it

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "unet":
            self.down_dims = check_unet(self.down_dims, self.horizon)
            return
        if not (1 <= self.n_layer <= 64 and 1 <= self.n_head <= 64 and 1 <= self.n_cond_tokens <= 64):
            raise ValueError(f"n_layer ({self.n_layer}), n_head ({self.n_head}) and n_cond_tokens "
                             f"({self.n_cond_tokens}) must be between 1 and 64")
        if not 1 <= self.n_emb <= 4096 or self.n_emb % self.n_head:
            raise ValueError(f"n_emb must be between 1 and 4096 and divisible by n_head ({self.n_head}), "
                             f"got {self.n_emb}")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"attn_dropout must be in [0, 1), got {self.attn_dropout}")


class BackbonePolicy(Policy):
    """A head whose network over the action chunk is the configured backbone (`self.backbone`)."""

    config: BackboneConfig

    def __init__(self, config: BackboneConfig, extra_cond_dim: int = 0):
        """`extra_cond_dim`: features the head appends to the observation's condition vector (flow's step size)."""
        super().__init__(config)
        cond_dim = self.obs_encoder.out_dim + extra_cond_dim
        if config.backbone == "unet":
            net: nn.Module = ConditionalUnet1D(
                action_dim=config.action_dim, global_cond_dim=cond_dim, down_dims=config.down_dims,
                kernel_size=config.kernel_size, n_groups=config.n_groups,
                diffusion_step_embed_dim=config.diffusion_step_embed_dim)
        else:
            net = ConditionalTransformer1D(
                action_dim=config.action_dim, global_cond_dim=cond_dim, horizon=config.horizon,
                n_layer=config.n_layer, n_head=config.n_head, n_emb=config.n_emb,
                n_cond_tokens=config.n_cond_tokens, dropout=config.attn_dropout, causal=config.causal_attn)
        self.add_module(config.backbone, net)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.config.backbone)
