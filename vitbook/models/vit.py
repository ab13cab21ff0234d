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

import copy

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import Block, PatchEmbed, pair, posemb_sincos_2d, trunc_normal_init
from .base import Classifier, check_mlp_ratio, check_num_classes, check_positive

POOLS = ("cls", "mean")
POS_EMBEDS = ("learned", "sincos")


class ViT(Classifier):
    """The Vision Transformer. ``forward_features`` returns the normalized tokens
    ``(b, prefix + n, dim)`` (class token first when ``pool='cls'``), as timm's does;
    ``forward_intermediates`` the tokens after each block (before the final norm)."""

    no_weight_decay_keys = ("pos_embed", "cls_token")

    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int | None = None,
        channels: int = 3,
        dim_head: int | None = None,
        pool: str = "cls",
        pos_embed: str = "learned",
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        emb_dropout: float = 0.0,
        drop_path: float = 0.0,
        dynamic_img_size: bool = False,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} is not one of {POOLS}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r} is not one of {POS_EMBEDS}")
        check_num_classes(num_classes)
        check_positive(dim=dim, depth=depth, heads=heads, channels=channels)
        if mlp_dim is not None:
            check_mlp_ratio(mlp_dim / dim)
        self.num_classes, self.dim, self.pool = num_classes, dim, pool
        self.num_features = dim
        mlp_dim = mlp_dim or 4 * dim

        # dynamic_img_size (timm's name): any image size divisible by the patch is
        # taken, the position embedding resized to its grid (DINO's small local crops)
        self.patch_embed = PatchEmbed(
            image_size, patch_size, channels, dim, dynamic=dynamic_img_size
        )
        self.num_prefix_tokens = (
            1 if pool == "cls" else 0
        )  # the GAP variant (paper App. D.3) has no class token
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        # fixed; the class token gets a zero position (it has no place in the grid)
        else:
            table = posemb_sincos_2d(*self.patch_embed.grid, dim)  # (n, dim)
            table = torch.cat((torch.zeros(self.num_prefix_tokens, dim), table))
            self.register_buffer(
                "pos_embed", table[None], persistent=False
            )  # (1, num_tokens, dim)
        self.pos_drop = nn.Dropout(emb_dropout)

        rates = torch.linspace(
            0, drop_path, depth
        ).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim, heads, mlp_dim, dim_head, qkv_bias, dropout, attn_dropout, rate
                )
                for rate in rates
            ]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """timm's ViT initialization: Linear weights N(0, 0.02) truncated at +-2
        (absolute, so in effect untruncated), zero biases, unit LayerNorms, position
        embedding likewise N(0, 0.02), class token N(0, 1e-6), and the patch projection
        left at PyTorch's default (timm's is a Conv2d that its init skips; a Linear's
        default is the same uniform(+-1/sqrt(fan_in)) as a Conv2d's, std about 0.08 for
        7x7x1 patches)."""
        self.apply(trunc_normal_init)
        self.patch_embed.proj.reset_parameters()
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid ``(h, w)``: where each patch token sits in the image."""
        return self.patch_embed.grid

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> the tokens the first block reads ``(b, prefix + n,
        dim)``."""
        grid = tuple(s // p for s, p in zip(x.shape[-2:], self.patch_embed.patch_size))
        x = self.patch_embed(x)  # (b, n, dim)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls, x), dim=1)  # (b, 1 + n, dim)
        return self.pos_drop(x + self.position_embedding(grid))

    def position_embedding(self, grid) -> torch.Tensor:
        """The position embedding ``(1, prefix + h * w, dim)`` for a patch grid ``(h,
        w)``: the model's own at its training size; otherwise the learned table resized
        bicubically (as DINO's ``interpolate_pos_encoding``) or the sin-cos table
        rebuilt for that grid."""
        if tuple(grid) == tuple(self.grid):
            return self.pos_embed
        prefix = self.pos_embed[:, : self.num_prefix_tokens]
        if isinstance(self.pos_embed, nn.Parameter):
            table = rearrange(
                self.pos_embed[:, self.num_prefix_tokens :],
                "1 (h w) d -> 1 d h w",
                h=self.grid[0],
            )
            table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
            table = rearrange(table, "1 d h w -> 1 (h w) d")
        else:
            table = posemb_sincos_2d(*grid, self.dim).to(self.pos_embed)[None]
        return torch.cat((prefix, table), dim=1)

    def intermediate_layers(self, x: torch.Tensor):
        """Yield the tokens ``(b, prefix + n, dim)`` after each block."""
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
            yield x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> normalized tokens ``(b, prefix + n, dim)``."""
        *_, last = self.intermediate_layers(x)
        return self.norm(last)

    def forward_head(
        self, tokens: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        x = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)  # (b, dim)
        return x if pre_logits else self.head(x)


def vit_at_image_size(model: ViT, image_size) -> ViT:
    """A copy of ``model`` that takes images of ``image_size``: the same weights, the
    learned position embedding resampled bicubically from the old patch grid to the
    new one (what the ViT paper does to fine-tune at a higher resolution, Sec. 3.2; the
    class token's embedding is kept), a sin-cos table rebuilt for the new grid."""
    new = copy.deepcopy(model)
    embed = new.patch_embed
    (h, w), (ph, pw) = pair(image_size), embed.patch_size
    for side, size, p in (("height", h, ph), ("width", w, pw)):
        if size < p or size % p:
            raise ValueError(f"image {side} {size} is not divisible by patch_size {p}")
    old_grid, grid = embed.grid, (h // ph, w // pw)
    embed.image_size, embed.grid = (h, w), grid
    prefix = new.num_prefix_tokens
    table = model.pos_embed.detach()  # (1, prefix + n, dim)
    if isinstance(model.pos_embed, nn.Parameter):
        patches = rearrange(
            table[:, prefix:], "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1]
        )
        patches = F.interpolate(
            patches, size=grid, mode="bicubic", align_corners=False
        )  # (1, dim, h', w')
        patches = rearrange(patches, "1 d h w -> 1 (h w) d")
        new.pos_embed = nn.Parameter(torch.cat((table[:, :prefix], patches), 1))
    else:
        sincos = posemb_sincos_2d(*grid, table.shape[-1])
        new.pos_embed = torch.cat((table[0, :prefix], sincos))[None]
    return new
