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
from einops import rearrange
from torch import nn

from ..layers import (
    Block,
    PatchEmbed,
    mlp_width,
    posemb_sincos_2d,
    renamed,
    resample_pos_embed,
    trunc_normal_init,
)
from .base import (
    Classifier,
    check_num_classes,
    check_positive,
    take_indices,
)

POOLS = ("cls", "mean")
POS_EMBEDS = ("learned", "sincos")


class ViT(Classifier):
    """The Vision Transformer. ``forward_features`` returns the normalized tokens
    ``(b, prefix + n, dim)`` (class token first when ``pool='cls'``), as timm's does;
    ``forward_intermediates`` the tokens after each block (before the final norm).

    ``global_pool`` is timm's name for the pooling ``forward_head`` does: ``'token'``
    (the class token, ``pool='cls'``), ``'avg'`` (the mean of the patch tokens,
    ``pool='mean'``) or ``''`` (none: every token goes to the head);
    ``reset_classifier(n, global_pool)`` changes it. ``pool`` stays what the model was
    built with: whether it has a class token.

    The MLP is ``mlp_ratio * dim`` wide, or ``mlp_dim`` wide when that is given (the
    paper's "MLP size", what the chapters pass). ``attn_drop`` is the dropout on the
    attention weights (``attn_dropout``, its old name, still works, with a
    DeprecationWarning)."""

    no_weight_decay_keys = ("pos_embed", "cls_token")
    global_pools = ("token", "avg", "")

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        channels: int = 3,
        dim_head: int | None = None,
        pool: str = "cls",
        pos_embed: str = "learned",
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
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
        mlp_dim = mlp_width(dim, mlp_ratio, mlp_dim)
        self.dim, self.pool = dim, pool
        self.global_pool = "token" if pool == "cls" else "avg"
        self.num_features = dim

        # dynamic_img_size (timm's name): any image size divisible by the patch is
        # taken, the position embedding resized to its grid (DINO's small local crops)
        self.patch_embed = PatchEmbed(
            image_size, patch_size, channels, dim, dynamic=dynamic_img_size
        )
        # the GAP variant (paper App. D.3) has no class token
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        else:
            # fixed, so not saved with the weights
            table = self.sincos_position_embedding(self.patch_embed.grid)
            self.register_buffer("pos_embed", table, persistent=False)
        self.pos_drop = nn.Dropout(emb_dropout)

        # stochastic depth grows with depth
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, dim_head, qkv_bias, dropout, attn_drop, rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.reset_classifier(num_classes, init=False)
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
        w)``: the model's own at its training size; otherwise the learned table
        resampled as timm's ``resample_abs_pos_embed`` does (:func:`resample_pos_embed`)
        or the sin-cos table rebuilt for that grid."""
        if tuple(grid) == tuple(self.grid):
            return self.pos_embed
        if isinstance(self.pos_embed, nn.Parameter):
            return resample_pos_embed(
                self.pos_embed, grid, self.grid, self.num_prefix_tokens
            )
        return self.sincos_position_embedding(grid).to(self.pos_embed)

    def sincos_position_embedding(self, grid) -> torch.Tensor:
        """The fixed 2D sin-cos table ``(1, prefix + h * w, dim)`` of a patch grid; the
        class token gets a zero position (it has no place in the grid)."""
        table = posemb_sincos_2d(*grid, self.dim)
        # (1, prefix + h * w, dim)
        return torch.cat((torch.zeros(self.num_prefix_tokens, self.dim), table))[None]

    def set_image_size(self, image_size) -> None:
        """Take images of ``image_size`` from now on, with the same weights (timm's
        ``set_input_size``): the patch grid follows, a learned position embedding is
        resampled to it (:func:`resample_pos_embed`; what the ViT paper does to
        fine-tune at a higher resolution, Sec. 3.2; the class token's row is kept), a
        sin-cos table is rebuilt. At the model's own size nothing changes."""
        old_grid = self.grid
        self.patch_embed.set_image_size(image_size)
        grid = self.grid
        if grid == old_grid:
            return
        if isinstance(self.pos_embed, nn.Parameter):
            table = resample_pos_embed(
                self.pos_embed.detach(), grid, old_grid, self.num_prefix_tokens
            )
            self.pos_embed = nn.Parameter(
                table, requires_grad=self.pos_embed.requires_grad
            )
        else:
            self.pos_embed = self.sincos_position_embedding(grid).to(self.pos_embed)

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
        if self.global_pool == "token":
            # (b, dim)
            x = tokens[:, 0]
        elif self.global_pool == "avg":
            # (b, dim): the class token, if any, is left out, as in timm
            x = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            # (b, prefix + n, dim): no pooling, the head sees every token
            x = tokens
        return x if pre_logits else self.head(x)

    def check_global_pool(self, global_pool: str) -> str:
        global_pool = super().check_global_pool(global_pool)
        if global_pool == "token" and self.cls_token is None:
            raise ValueError(
                "global_pool='token' needs a class token; this ViT was built with "
                "pool='mean' and has none"
            )
        return global_pool

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices=None,
        *,
        norm: bool = False,
        output_fmt: str | None = None,
        intermediates_only: bool = True,
        return_prefix_tokens: bool = False,
    ):
        """timm's ``forward_intermediates``: the tokens after the blocks ``indices``
        (all by default; an int ``n`` the last ``n``; a list those blocks, negative
        counting from the end), in block order.

        ``norm=True`` passes each through the final LayerNorm. ``output_fmt='NLC'``
        gives the patch tokens ``(b, n, dim)``, ``'NCHW'`` the same as a map ``(b, dim,
        h, w)``; with either, ``return_prefix_tokens=True`` pairs each with its prefix
        (class) tokens ``(b, prefix, dim)``, as timm does. ``intermediates_only=False``
        returns ``(forward_features(x), intermediates)`` from the one pass.

        Two defaults differ from timm's, so that a plain call keeps vitbook's meaning:
        ``intermediates_only=True`` (timm: ``False``), and ``output_fmt=None``, the
        tokens as the blocks give them, ``(b, prefix + n, dim)`` with the class token
        first (timm: ``'NCHW'``; it never returns the class token in place)."""
        if output_fmt not in (None, "NLC", "NCHW"):
            raise ValueError(
                f"output_fmt={output_fmt!r} is not one of None, 'NLC', 'NCHW'"
            )
        if return_prefix_tokens and output_fmt is None:
            raise ValueError(
                "return_prefix_tokens=True needs output_fmt='NLC' or 'NCHW'; "
                "output_fmt=None keeps the prefix tokens in place"
            )
        outputs = list(self.intermediate_layers(x))
        chosen = [outputs[i] for i in take_indices(len(outputs), indices)]
        intermediates = [self.norm(t) if norm else t for t in chosen]
        if output_fmt is not None:
            prefix = [t[:, : self.num_prefix_tokens] for t in intermediates]
            intermediates = [t[:, self.num_prefix_tokens :] for t in intermediates]
            if output_fmt == "NCHW":
                h = x.shape[-2] // self.patch_embed.patch_size[0]
                # (b, n, dim) -> (b, dim, h, w)
                intermediates = [
                    rearrange(t, "b (h w) d -> b d h w", h=h) for t in intermediates
                ]
            if return_prefix_tokens:
                intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(outputs[-1]), intermediates


def vit_at_image_size(model: ViT, image_size) -> ViT:
    """A copy of ``model`` that takes images of ``image_size``: the same weights, the
    position embedding moved to the new patch grid (:meth:`ViT.set_image_size`)."""
    new = copy.deepcopy(model)
    new.set_image_size(image_size)
    return new
