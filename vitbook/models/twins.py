"""Twins-SVT (Chu et al. 2021, "Twins: Revisiting the Design of Spatial Attention in
Vision Transformers").

The whole model, top to bottom. Feature maps stay channels-last, ``(b, h, w, d)``, as
in Swin: every layer but the convolutions acts on the channel vector of one position.

    image (b, c, H, W)
      -> stage 1: patch embedding (p x p patches, linear, LayerNorm) (b, H/p, W/p, d1)
                  LSA block, PEG, GSA block, LSA block, GSA block, ...
      -> stage 2: patch embedding (2 x 2 patches of the map)     (b, H/2p, W/2p, d2)
                  LSA block, PEG, GSA block, ...
      -> ...      (every stage halves the map and has its own width)
      -> LayerNorm                              forward_features() -> (b, d, h, w)
      -> mean over positions, linear head                             (b, num_classes)

Two attentions alternate, both cheap, neither needs a shift or a mask:

- LSA (locally-grouped self-attention): the map is cut into ``k x k`` sub-windows and
  every token attends only to its own sub-window (Swin's W-MSA without the relative
  bias). A map the window does not divide is padded with zeros at the bottom and the
  right, as timm and the official detection code do; the padded tokens are real keys
  (their key is the projection's bias). The official classification code never pads
  (its maps are whole windows); its segmentation code masks the padded keys out.
- GSA (global sub-sampled attention): every token is a query, but the keys and values
  come from a summary of the whole map: ``r x r`` patches of it, each mapped linearly
  to one vector (a convolution with kernel = stride = r), then a LayerNorm. A query
  sees the whole image at ``1/r^2`` of the cost. With ``r = 1`` it is full attention.

There is no position embedding: a PEG (CPVT's positional encoding generator, a
depthwise 3x3 convolution added to its input) after the first block of each stage
gives the tokens their position from their neighbourhood, so any input size works.
Layer names follow timm's (``timm.models.twins``, a port of the official code) where
the layouts agree; ``vitbook.reference.twins_from_timm`` converts the rest.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import (
    Attention,
    DropPath,
    FeedForward,
    check_image,
    pair,
    patch_grid,
    renamed,
    trunc_normal_init,
)
from .base import (
    PyramidClassifier,
    check_mlp_ratio,
    check_num_classes,
    check_positive,
)
from .swin import check_whole, window_partition, window_reverse


def patchify(x: torch.Tensor, patch) -> torch.Tensor:
    """``(b, H, W, c)`` -> ``(b, H/p, W/p, p*p*c)``: each ``p x p`` patch flattened in
    ``(p1 p2 c)`` order. Rows and columns past the last whole patch are dropped, as a
    convolution with kernel = stride = p drops them."""
    ph, pw = pair(patch)
    h, w = x.shape[1] // ph * ph, x.shape[2] // pw * pw
    return rearrange(x[:, :h, :w], "b (h p1) (w p2) c -> b h w (p1 p2 c)", p1=ph, p2=pw)


def conv_init_(layer: nn.Module, kernel_area: int, groups: int = 1) -> None:
    """The official Twins init of a convolution (He normal over the fan-out,
    ``k*k*out/groups``, zero bias), also for the convolutions vitbook writes as a
    ``Linear`` of flattened patches."""
    fan_out = kernel_area * layer.weight.shape[0] // groups
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_out))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


# --------------------------------------------------------------------------- layers
class PatchEmbed(nn.Module):
    """``p x p`` patches of a map (or an image), each mapped linearly, then normalized:
    ``(b, H, W, c) -> (b, H/p, W/p, dim)``. The linear map of a flattened patch equals
    the official strided convolution (``reference.py`` converts)."""

    def __init__(self, patch_size, in_dim: int, dim: int):
        super().__init__()
        self.patch_size = pair(patch_size)
        ph, pw = self.patch_size
        self.proj = nn.Linear(in_dim * ph * pw, dim)
        self.norm = nn.LayerNorm(dim)  # PyTorch's eps 1e-5, as the official code

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The map this embedding makes of a ``height x width`` one: whole patches."""
        ph, pw = self.patch_size
        return height // ph, width // pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(patchify(x, self.patch_size)))  # (b, h, w, dim)


class LocallyGroupedAttention(Attention):
    """LSA: attention inside non-overlapping ``k x k`` sub-windows of the map.

    ``forward`` takes and returns a map ``(b, H, W, dim)``. Being an ``Attention``, it
    runs through SDPA and ``record_attention`` keeps ``(b * windows, heads, k*k, k*k)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window_size,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(dim, heads, None, qkv_bias, attn_drop, proj_drop)
        check_whole(window_size=window_size)
        self.window_size = pair(window_size)
        check_positive(window_size=min(self.window_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))  # (b, Hp, Wp, dim), zeros
        hp, wp = x.shape[1:3]
        windows = window_partition(x, self.window_size)  # (b * windows, k*k, dim)
        windows = super().forward(windows)  # attention inside each window
        return window_reverse(windows, self.window_size, hp, wp)[:, :h, :w]

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}"


class GlobalSubsampledAttention(Attention):
    """GSA: every token queries a sub-sampled summary of the whole map.

    Keys and values come from ``r x r`` patches of the map, each mapped linearly to one
    vector (the official strided convolution, kernel = stride = ``sr_ratio``) and
    normalized: ``(H/r) (W/r)`` keys instead of ``H W``. ``sr_ratio=1`` skips both and
    is full attention. The query and key/value projections are the rows of the one
    ``qkv`` matrix every ``Attention`` has (q first, then k, v).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(dim, heads, None, qkv_bias, attn_drop, proj_drop)
        check_whole(sr_ratio=sr_ratio)
        check_positive(sr_ratio=sr_ratio)
        self.sr_ratio = int(sr_ratio)
        if self.sr_ratio > 1:
            self.sr = nn.Linear(dim * self.sr_ratio**2, dim)  # one vector per patch
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = self.norm = None

    def summary(self, x: torch.Tensor) -> torch.Tensor:
        """The keys' and values' source: ``(b, H, W, dim) -> (b, H/r * W/r, dim)``."""
        if self.sr is not None:
            x = self.norm(self.sr(patchify(x, self.sr_ratio)))  # (b, H/r, W/r, dim)
        return rearrange(x, "b h w d -> b (h w) d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        inner = self.heads * self.dim_head
        w_q, w_kv = self.qkv.weight.split([inner, 2 * inner])
        b_q, b_kv = (
            (None, None)
            if self.qkv.bias is None
            else self.qkv.bias.split([inner, 2 * inner])
        )
        tokens = rearrange(x, "b h w d -> b (h w) d")
        # (b, heads, H*W, d)
        q = rearrange(F.linear(tokens, w_q, b_q), "b n (h d) -> b h n d", h=self.heads)
        # 2 x (b, heads, H/r * W/r, d)
        k, v = rearrange(
            F.linear(self.summary(x), w_kv, b_kv),
            "b m (kv h d) -> kv b h m d",
            kv=2,
            h=self.heads,
        )
        out = self.attend(q, k, v)  # (b, H*W, dim)
        return rearrange(out, "b (h w) d -> b h w d", h=h, w=w)

    def extra_repr(self) -> str:
        return f"sr_ratio={self.sr_ratio}"


class PEG(nn.Module):
    """CPVT's positional encoding generator: ``x + DWConv3x3(x)`` on the map.

    Zero padding at the border tells a token where the edge is, and the convolution
    passes it on: positions come from the neighbourhood, for any input size.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # depthwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = rearrange(x, "b h w d -> b d h w")
        return x + rearrange(self.proj(feat), "b d h w -> b h w d")


class TwinsBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)) on a map ``(b, H, W, dim)``, where Attn is
    LSA (``window_size`` given) or GSA (``sr_ratio``). ScalableViT's block is this one
    with its own two attentions (:meth:`attention`). ``attn_drop`` was
    ``attn_dropout`` (still taken, with a DeprecationWarning)."""

    kinds = ("LSA", "GSA")  # (windowed, global): the names ``kind`` reports

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        dim: int,
        heads: int,
        window_size=None,
        sr_ratio: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        **attention_kw,
    ):
        super().__init__()
        check_mlp_ratio(mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = self.attention(
            dim,
            heads,
            window_size,
            sr_ratio,
            qkv_bias,
            attn_drop,
            dropout,
            **attention_kw,
        )
        self.kind = self.kinds[window_size is None]
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), dropout)

    def attention(
        self, dim, heads, window_size, sr_ratio, qkv_bias, attn_drop, dropout
    ) -> nn.Module:
        """LSA inside ``window_size`` windows, or GSA when ``window_size`` is None."""
        if window_size is None:
            return GlobalSubsampledAttention(
                dim, heads, sr_ratio, qkv_bias, attn_drop, dropout
            )
        return LocallyGroupedAttention(
            dim, heads, window_size, qkv_bias, attn_drop, dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Patch embedding, then ``depth`` blocks alternating LSA and GSA (LSA first), with
    the PEG right after the first block. ScalableViT's stage is this one with its own
    ``patch_embedding`` and ``block`` classes."""

    patch_embedding = PatchEmbed
    block = TwinsBlock

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        heads: int,
        patch_size,
        window_size,
        sr_ratio: int,
        drop_paths,
        index: int = 0,
        **block_kw,
    ):
        super().__init__()
        self.index, self.sr_ratio = index, sr_ratio  # for the error on a small map
        self.patch_embed = self.patch_embedding(patch_size, in_dim, dim)
        self.blocks = nn.ModuleList(
            [
                self.block(
                    dim,
                    heads,
                    window_size=None if i % 2 else window_size,
                    sr_ratio=sr_ratio,
                    drop_path=rate,
                    **block_kw,
                )
                for i, rate in enumerate(drop_paths)
            ]
        )
        self.peg = PEG(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # an image smaller than the one the model was built for can leave a stage a map
        # smaller than its sub-sampling: refused as the constructor refuses it, not
        # left to return the projection's bias or to fail inside a reshape
        resolution = self.patch_embed.output_size(*x.shape[1:3])
        check_stage_map(self.index, resolution, self.sr_ratio, self.block.kinds[1])
        x = self.patch_embed(x)  # (b, h, w, dim)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0:
                x = self.peg(x)  # positions, once the first block has mixed the tokens
        return x


def _per_stage(name: str, value, stages: int) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * stages
    if len(values) != stages:
        raise ValueError(
            f"{name}={values} must give one value per stage ({stages} stages)"
        )
    return values


class StageArgs(NamedTuple):
    """The arguments Twins-SVT and ScalableViT share, checked: sizes as pairs,
    per-stage values as one tuple entry per stage."""

    num_classes: int
    channels: int
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    # the first stage's map: image_size / patch_size
    grid: tuple[int, int]
    dims: tuple
    depths: tuple
    heads: tuple
    sr_ratios: tuple
    # of (height, width) pairs
    window_sizes: tuple
    mlp_ratios: tuple


def check_stages(
    num_classes,
    channels,
    image_size,
    patch_size,
    dims,
    depths,
    heads,
    sr_ratios,
    window_sizes,
    mlp_ratios,
) -> StageArgs:
    """Validate the arguments Twins-SVT and ScalableViT share, each error naming the
    argument, its value and the rule; returns them as :class:`StageArgs`."""
    check_num_classes(num_classes)
    check_positive(channels=channels)
    dims, depths, heads = tuple(dims), tuple(depths), tuple(heads)
    n = len(depths)
    if not n or len(dims) != n or len(heads) != n:
        raise ValueError(
            f"dims {dims}, depths {depths} and heads {heads} must name the same "
            "number (>= 1) of stages"
        )
    sr_ratios = _per_stage("sr_ratios", sr_ratios, n)
    window_sizes = _per_stage("window_sizes", window_sizes, n)
    # 2.5 is refused, not truncated to 2
    for i in range(n):
        check_whole(
            **{f"sr_ratios[{i}]": sr_ratios[i], f"window_sizes[{i}]": window_sizes[i]}
        )
    check_whole(patch_size=patch_size)
    sr_ratios = tuple(int(r) for r in sr_ratios)
    window_sizes = tuple(pair(w) for w in window_sizes)
    mlp_ratios = tuple(
        check_mlp_ratio(r) for r in _per_stage("mlp_ratios", mlp_ratios, n)
    )
    for i in range(n):
        check_positive(
            **{
                f"dims[{i}]": dims[i],
                f"depths[{i}]": depths[i],
                f"heads[{i}]": heads[i],
                f"sr_ratios[{i}]": sr_ratios[i],
                f"window_sizes[{i}]": min(window_sizes[i]),
            }
        )
        if dims[i] % heads[i]:
            raise ValueError(
                f"stage {i + 1} has dim {dims[i]}, not divisible by heads {heads[i]}"
            )
    grid = patch_grid(image_size, patch_size)
    return StageArgs(
        num_classes,
        channels,
        pair(image_size),
        pair(patch_size),
        grid,
        dims,
        depths,
        heads,
        sr_ratios,
        window_sizes,
        mlp_ratios,
    )


def stage_resolutions(first, sr_ratios, attention: str, ceil: bool = False) -> list:
    """Each stage's ``(h, w)`` map, from the first stage's ``first``: every later
    stage halves it (rounding up with ``ceil``, as a stride-2 convolution with padding
    1 does). A map smaller than its stage's ``sr_ratios`` would leave ``attention``
    (GSA, SSA) without a key, and is refused."""
    resolution, resolutions = tuple(first), []
    for i, r in enumerate(sr_ratios):
        if i:
            h, w = resolution
            resolution = (-(-h // 2), -(-w // 2)) if ceil else (h // 2, w // 2)
        check_stage_map(i, resolution, r, attention)
        resolutions.append(resolution)
    return resolutions


def check_stage_map(index: int, resolution, sr_ratio: int, attention: str) -> None:
    """Refuse a map of stage ``index`` (from 0) smaller than the stage's ``sr_ratio``:
    the ``r x r`` sub-sampling would leave ``attention`` (GSA, SSA) without a key.
    The constructor checks the maps of ``image_size``, the forward those of its
    input."""
    if min(resolution) < sr_ratio:
        raise ValueError(
            f"stage {index + 1} has a {resolution[0]}x{resolution[1]} map, smaller "
            f"than sr_ratios[{index}]={sr_ratio}: {attention} would have no key"
        )


# --------------------------------------------------------------------------- the model
class Twins(PyramidClassifier):
    """Twins-SVT. Defaults are Twins-SVT-S's (``dims=(64, 128, 256, 512)``, ``depths=(2,
    2, 10, 4)``, ``heads=(2, 4, 8, 16)``, windows 7, ``sr_ratios=(8, 4, 2, 1)``).

    ``dims``, ``depths``, ``heads``, ``sr_ratios`` have one entry per stage;
    ``window_sizes`` and ``mlp_ratios`` may be one value for all. ``patch_size`` is the
    first stage's patch; every later stage embeds 2 x 2 patches of the previous map.
    ``forward_features`` returns the last map normalized, channels-first ``(b, d, h,
    w)``; ``forward_intermediates`` every stage's map. ``image_size`` fixes the sizes
    the arguments are checked against; other sizes the patch divides also run (LSA
    pads), as long as every stage's map is at least its ``sr_ratio`` on each side (a
    smaller one is refused with the constructor's error). A plural name takes one
    value per stage (one value for all where allowed), as timm's Twins does
    (``window_sizes`` is its ``wss``); ``attn_drop`` is the dropout on the attention
    weights (``attn_dropout``, its old name, still works, with a DeprecationWarning).
    """

    no_weight_decay_modules = ("peg",)  # the position encoding, as officially

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        *,
        image_size,
        num_classes: int,
        patch_size=4,
        dims=(64, 128, 256, 512),
        depths=(2, 2, 10, 4),
        heads=(2, 4, 8, 16),
        window_sizes=7,
        sr_ratios=(8, 4, 2, 1),
        mlp_ratios=4.0,
        channels: int = 3,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        args = check_stages(
            num_classes,
            channels,
            image_size,
            patch_size,
            dims,
            depths,
            heads,
            sr_ratios,
            window_sizes,
            mlp_ratios,
        )
        self.resolutions = stage_resolutions(args.grid, args.sr_ratios, "GSA")
        self.build_stages(
            Stage,
            args,
            drop_path,
            qkv_bias=qkv_bias,
            dropout=dropout,
            attn_drop=attn_drop,
        )

    def reset_parameters(self):
        """The official Twins init (timm's ``_init_weights``): Linear weights N(0,
        0.02), zero biases, unit LayerNorms, and every convolution (patch embeddings,
        GSA's sub-sampling, PEG) He-normal over its fan-out."""
        self.apply(trunc_normal_init)
        for stage in self.stages:
            conv_init_(stage.patch_embed.proj, math.prod(stage.patch_embed.patch_size))
            conv_init_(stage.peg.proj, 9, groups=stage.peg.proj.groups)
            for block in stage.blocks:
                if getattr(block.attn, "sr", None) is not None:
                    conv_init_(block.attn.sr, block.attn.sr_ratio**2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> the map of pixels ``(b, H, W, c)`` the first
        stage's patch embedding reads."""
        check_image(x, self.channels, multiple_of=self.patch_size)
        return rearrange(x, "b c h w -> b h w c")


def attention_flops(
    height: int,
    width: int,
    dim: int,
    window: int | None = None,
    sr_ratio: int | None = None,
) -> float:
    """Multiply-adds of one attention layer on an ``height x width`` map of width C.

    Full: 4 n C^2 + 2 n^2 C. LSA (k x k windows): 4 n C^2 + 2 k^2 n C. GSA (ratio r):
    2 n C^2 (q, output) + 2 (n/r^2) C^2 (k, v) + n C^2 (the r x r patches' linear map)
    + 2 n (n/r^2) C. ``window`` and ``sr_ratio`` are exclusive.
    """
    n = height * width
    if window is not None and sr_ratio is not None:
        raise ValueError("give window (LSA) or sr_ratio (GSA), not both")
    if window is not None:
        return 4 * n * dim**2 + 2 * window**2 * n * dim
    if sr_ratio is not None and sr_ratio > 1:
        m = (height // sr_ratio) * (width // sr_ratio)
        return 2 * n * dim**2 + 2 * m * dim**2 + n * dim**2 + 2 * n * m * dim
    return 4 * n * dim**2 + 2 * n * n * dim


__all__ = [
    "Twins",
    "TwinsBlock",
    "Stage",
    "PatchEmbed",
    "LocallyGroupedAttention",
    "GlobalSubsampledAttention",
    "PEG",
    "patchify",
    "attention_flops",
]
