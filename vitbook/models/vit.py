"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

The whole model, top to bottom:

    image (b, c, H, W)
      -> patches, each flattened and projected   (b, n, dim)      n = (H/ph) * (W/pw)
      -> [class] token prepended                  (b, 1 + n, dim)  pool='cls' only
      -> + position embedding (learned or 2D sin-cos)
      -> depth x pre-norm transformer Block
      -> LayerNorm                                 forward_features() returns this
      -> class token, or the mean of the patch tokens  (b, dim)
      -> linear head                               (b, num_classes)
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import Block, PatchEmbed, posemb_sincos_2d, trunc_normal_init

POOLS = ("cls", "mean")
POS_EMBEDS = ("learned", "sincos")


class ViT(nn.Module):
    def __init__(self, *, image_size, patch_size, num_classes: int, dim: int, depth: int, heads: int,
                 mlp_dim: int | None = None, channels: int = 3, dim_head: int | None = None,
                 pool: str = "cls", pos_embed: str = "learned", qkv_bias: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0, emb_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} is not one of {POOLS}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r} is not one of {POS_EMBEDS}")
        for name, value in (("num_classes", num_classes), ("dim", dim), ("depth", depth), ("heads", heads),
                            ("channels", channels)):
            if int(value) < (0 if name == "num_classes" else 1):
                raise ValueError(f"{name}={value} must be positive")
        self.num_classes, self.dim, self.pool = num_classes, dim, pool
        mlp_dim = mlp_dim or 4 * dim

        self.patch_embed = PatchEmbed(image_size, patch_size, channels, dim)
        self.num_prefix_tokens = 1 if pool == "cls" else 0  # the GAP variant (paper App. D.3) has no class token
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        else:  # fixed; the class token gets a zero position (it has no place in the grid)
            table = posemb_sincos_2d(*self.patch_embed.grid, dim)  # (n, dim)
            table = torch.cat((torch.zeros(self.num_prefix_tokens, dim), table))
            self.register_buffer("pos_embed", table[None], persistent=False)  # (1, num_tokens, dim)
        self.pos_drop = nn.Dropout(emb_dropout)

        rates = torch.linspace(0, drop_path, depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList([
            Block(dim, heads, mlp_dim, dim_head, qkv_bias, dropout, attn_dropout, rate) for rate in rates
        ])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        self.apply(trunc_normal_init)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid ``(h, w)``: where each patch token sits in the image."""
        return self.patch_embed.grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> normalized tokens ``(b, prefix + n, dim)``."""
        x = self.patch_embed(x)  # (b, n, dim)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (b, 1 + n, dim)
        x = self.pos_drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)  # (b, dim)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (b, num_classes)
