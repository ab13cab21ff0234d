"""ScalableViT (Yang et al. 2022, "ScalableViT: Rethinking the Context-oriented
Generalization of Vision Transformer", ECCV 2022).

The whole model, top to bottom. Feature maps stay channels-last, ``(b, h, w, d)``, as
in Twins (chapter 3), whose PEG this model reuses.

    image (b, c, H, W)
      -> stage 1: overlapping patch embedding (conv 2p-1, stride p, LayerNorm)
                                                                  (b, H/p, W/p, d1)
                  IWSA block, PEG, SSA block, IWSA block, SSA block, ...
      -> stage 2: overlapping patch embedding (conv 3, stride 2)  (b, H/2p, W/2p, d2)
                  IWSA block, PEG, SSA block, ...
      -> ...
      -> LayerNorm                              forward_features() -> (b, d, h, w)
      -> mean over positions, linear head                             (b, num_classes)

Two attentions alternate, IWSA first in every pair:

- IWSA (interactive window-based self-attention): attention inside non-overlapping
  ``k x k`` windows, as Twins' LSA, plus the local interactive module (LIM): a
  depthwise 3x3 convolution of the *values* over the whole map, added to the windows'
  output before the output projection. Windows are blind to each other; the LIM lets
  every token read its 3x3 neighbourhood, across window borders. A map the window
  does not divide is padded with zeros (bottom, right) as Twins' LSA is; the LIM runs
  on the real tokens only.
- SSA (scalable self-attention): every token is a query; keys and values come from a
  map scaled in space and in channels: a depthwise convolution of kernel = stride =
  ``sr_ratio`` (one vector per ``r x r`` cell), a 1x1 convolution to ``c_ratio * dim``
  channels, LayerNorm and GELU. Queries and keys are ``c_ratio * dim`` wide (the
  attention scale follows that width), values are ``dim`` wide, so the output has the
  block's width whatever ``c_ratio`` is. ``c_ratio`` < 1 makes attention cheaper,
  > 1 gives the similarity more dimensions: that freedom is the "scalable".

A PEG (a depthwise 3x3 convolution added to its input) runs after the first block of
every stage, as in the official code. Names follow the official code
(``Yangr116/ScalableViT``) where they do not clash with vitbook's shared layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import (
    Attention,
    pair,
    renamed,
    trunc_normal_init,
)
from .base import (
    PyramidClassifier,
    check_positive,
)
from .swin import check_whole, window_partition, window_reverse
from .twins import (
    Twins,
    TwinsBlock,
    _per_stage,
    check_stages,
    conv_init_,
    stage_resolutions,
)
from .twins import Stage as TwinsStage


def check_c_ratios(c_ratios, dims, heads) -> tuple:
    """``c_ratios`` as one value per stage of ``dims`` and ``heads``, each checked by
    :func:`check_c_ratio` (the error names the stage)."""
    c_ratios = _per_stage("c_ratios", c_ratios, len(dims))
    for i, c_ratio in enumerate(c_ratios):
        try:
            check_c_ratio(dims[i], heads[i], c_ratio)
        except ValueError as error:
            raise ValueError(f"c_ratios[{i}]: {error}") from None
    return c_ratios


def check_c_ratio(dim: int, heads: int, c_ratio: float) -> int:
    """The keys' width ``c_ratio * dim``, which must be a whole number that the heads
    divide (the official code splits it into ``heads`` equal parts)."""
    width = dim * c_ratio
    if not c_ratio > 0 or width != int(width) or int(width) % heads:
        raise ValueError(
            f"c_ratio={c_ratio} must be > 0 and make c_ratio * dim = {width:g} a whole "
            f"number divisible by heads {heads} (dim {dim})"
        )
    return int(width)


# --------------------------------------------------------------------------- layers
class OverlapPatchEmbed(nn.Module):
    """Overlapping patches: a convolution of kernel ``2p - 1``, stride ``p``, padding
    ``p - 1``, then a LayerNorm: ``(b, H, W, c) -> (b, ceil(H/p), ceil(W/p), dim)``.

    The official code's rule (kernel 7 padding 3 for the image's ``p = 4``, kernel 3
    padding 1 for every later ``p = 2``), written for any ``p``: neighbouring patches
    share ``p - 1`` rows and columns of input.
    """

    def __init__(self, patch_size, in_dim: int, dim: int):
        super().__init__()
        self.patch_size = pair(patch_size)
        (ph, pw) = self.patch_size
        self.proj = nn.Conv2d(
            in_dim, dim, (2 * ph - 1, 2 * pw - 1), (ph, pw), (ph - 1, pw - 1)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The map this embedding makes of a ``height x width`` one: ``ceil(H/p) x
        ceil(W/p)``."""
        ph, pw = self.patch_size
        return -(-height // ph), -(-width // pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(rearrange(x, "b h w c -> b c h w"))  # (b, dim, H/p, W/p)
        return self.norm(rearrange(x, "b d h w -> b h w d"))


class InteractiveWindowAttention(Attention):
    """IWSA: attention inside ``k x k`` windows plus the local interactive module.

    ``forward`` takes and returns a map ``(b, H, W, dim)``. The LIM (``lim``) is a
    depthwise 3x3 convolution of the values, over the whole map, added to the
    attention's output before the projection: ``proj(attn(q, k, v) + LIM(v))``.
    ``record_attention`` keeps ``(b * windows, heads, k*k, k*k)``.
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
        self.lim = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # depthwise

    def local_interaction(self, v: torch.Tensor) -> torch.Tensor:
        """The LIM on the values' map ``(b, H, W, dim)``: each channel convolved with
        its own 3x3 kernel (zero padding at the border)."""
        out = self.lim(rearrange(v, "b h w d -> b d h w"))
        return rearrange(out, "b d h w -> b h w d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, dim = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))  # (b, Hp, Wp, dim), zeros
        hp, wp = x.shape[1:3]
        qkv = self.qkv(x)  # (b, Hp, Wp, 3 dim)
        # 3 x (b * windows, heads, k*k, d)
        q, k, v = rearrange(
            window_partition(qkv, self.window_size),
            "n t (three h d) -> three n h t d",
            three=3,
            h=self.heads,
        )
        out = window_reverse(self.mix(q, k, v), self.window_size, hp, wp)
        out = out[:, :h, :w] + self.local_interaction(qkv[:, :h, :w, 2 * dim :])
        return self.proj_drop(self.proj(out))  # (b, H, W, dim)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}"


class ScalableAttention(Attention):
    """SSA: every token queries a map scaled in space (``sr_ratio``) and channels
    (``c_ratio``).

    With ``sr_ratio > 1``: keys and values come from ``spatial`` (depthwise conv,
    kernel = stride = r), ``channel`` (1x1 conv to ``c_ratio * dim``), ``norm``
    (LayerNorm), GELU; ``q``: dim -> c dim, ``k``: c dim -> c dim, ``v``: c dim -> dim.
    With ``sr_ratio = 1``, as in the official code, nothing is scaled: q, k, v are
    ``dim`` wide and read the map itself, and ``c_ratio`` only enters the attention
    scale ``(c_ratio * dim / heads) ** -0.5`` (so with ``c_ratio = 1`` it is full
    attention).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        sr_ratio: int = 1,
        c_ratio: float = 1.25,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(dim, heads, None, qkv_bias, attn_drop, proj_drop)
        check_whole(sr_ratio=sr_ratio)
        check_positive(sr_ratio=sr_ratio)
        self.sr_ratio, self.c_ratio = int(sr_ratio), float(c_ratio)
        width = check_c_ratio(dim, heads, c_ratio)
        self.scale = (width / heads) ** -0.5  # the official (head_dim * c_ratio)
        del self.qkv  # queries and keys/values read different maps
        if self.sr_ratio > 1:
            r = self.sr_ratio
            self.spatial = nn.Conv2d(dim, dim, r, stride=r, groups=dim)
            self.channel = nn.Conv2d(dim, width, 1)
            self.norm = nn.LayerNorm(width)  # PyTorch's eps 1e-5, as the official
            self.act = nn.GELU()
        else:
            self.spatial = self.channel = self.norm = self.act = None
            width = dim
        self.q = nn.Linear(dim, width, bias=qkv_bias)
        self.k = nn.Linear(width, width, bias=qkv_bias)
        self.v = nn.Linear(width, dim, bias=qkv_bias)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The keys' and values' source: ``(b, H, W, dim) -> (b, H/r * W/r, c dim)``
        (the map itself when ``sr_ratio = 1``)."""
        if self.spatial is not None:
            x = self.channel(self.spatial(rearrange(x, "b h w d -> b d h w")))
            x = self.act(self.norm(rearrange(x, "b d h w -> b h w d")))
        return rearrange(x, "b h w d -> b (h w) d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        source = self.reduce(x)  # (b, m, c dim)
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.heads)
            for t in (
                self.q(rearrange(x, "b h w d -> b (h w) d")),  # (b, H*W, c dim)
                self.k(source),  # (b, m, c dim)
                self.v(source),  # (b, m, dim)
            )
        )
        out = self.attend(q, k, v)  # (b, H*W, dim)
        return rearrange(out, "b (h w) d -> b h w d", h=h, w=w)

    def extra_repr(self) -> str:
        return f"sr_ratio={self.sr_ratio}, c_ratio={self.c_ratio}"


class ScalableViTBlock(TwinsBlock):
    """Twins-SVT's pre-norm block (chapter 3) with ScalableViT's attentions: IWSA
    (``window_size`` given) or SSA (``sr_ratio``, ``c_ratio``)."""

    kinds = ("IWSA", "SSA")

    def attention(
        self,
        dim,
        heads,
        window_size,
        sr_ratio,
        qkv_bias,
        attn_drop,
        dropout,
        c_ratio: float = 1.25,
    ) -> nn.Module:
        """IWSA inside ``window_size`` windows, or SSA when ``window_size`` is None."""
        if window_size is None:
            return ScalableAttention(
                dim, heads, sr_ratio, c_ratio, qkv_bias, attn_drop, dropout
            )
        return InteractiveWindowAttention(
            dim, heads, window_size, qkv_bias, attn_drop, dropout
        )


class Stage(TwinsStage):
    """Twins-SVT's stage (chapter 3) with ScalableViT's parts: the overlapping patch
    embedding, then blocks alternating IWSA and SSA (IWSA first), the PEG right after
    the first block; ``c_ratio`` reaches the SSA blocks with the other block
    arguments."""

    patch_embedding = OverlapPatchEmbed
    block = ScalableViTBlock


# --------------------------------------------------------------------------- the model
class ScalableViT(PyramidClassifier):
    """ScalableViT. Defaults are ScalableViT-S's (``dims=(64, 128, 256, 512)``,
    ``depths=(2, 2, 20, 2)``, ``heads=(2, 4, 8, 16)``, windows 7, ``sr_ratios=(8, 4, 2,
    1)``, ``c_ratios=(1.25, 1.25, 1.25, 1)``).

    ``dims``, ``depths``, ``heads``, ``sr_ratios`` have one entry per stage;
    ``window_sizes``, ``c_ratios`` and ``mlp_ratios`` may be one value for all.
    ``patch_size`` is the first stage's stride; every later stage embeds with stride 2.
    ``forward_features`` returns the last map normalized, channels-first ``(b, d, h,
    w)``; ``forward_intermediates`` every stage's map. The head is one linear layer
    on the mean-pooled features (the official code's ``plain_head``; its ImageNet
    models put a 4096-wide MLP there). ``image_size`` fixes the sizes the arguments are
    checked against; other sizes also run (IWSA pads), as long as every stage's map is
    at least its ``sr_ratio`` on each side (a smaller one is refused with the
    constructor's error). Plural names take one value per stage, as in
    :class:`~vitbook.models.Twins`; ``attn_drop`` is the dropout on the attention
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
        depths=(2, 2, 20, 2),
        heads=(2, 4, 8, 16),
        window_sizes=7,
        sr_ratios=(8, 4, 2, 1),
        c_ratios=(1.25, 1.25, 1.25, 1.0),
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
        c_ratios = check_c_ratios(c_ratios, args.dims, args.heads)
        # overlapping patch embeddings (kernel 3, stride 2, padding 1): ceil(h / 2)
        self.resolutions = stage_resolutions(
            args.grid, args.sr_ratios, "SSA", ceil=True
        )
        self.build_stages(
            Stage,
            args,
            drop_path,
            dict(c_ratio=c_ratios),
            qkv_bias=qkv_bias,
            dropout=dropout,
            attn_drop=attn_drop,
        )

    def reset_parameters(self):
        """The official init: Linear weights N(0, 0.02), zero biases, unit LayerNorms,
        and every convolution (patch embeddings, LIM, SSA's reductions, PEG) He-normal
        over its fan-out ``k*k*out/groups``, zero bias."""
        self.apply(trunc_normal_init)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kernel = math.prod(module.kernel_size)
                conv_init_(module, kernel, groups=module.groups)

    # the map of pixels (b, H, W, c): the first stage's overlapping patch embedding
    # reads it
    embed = Twins.embed


def attention_flops(
    height: int,
    width: int,
    dim: int,
    window: int | None = None,
    sr_ratio: int | None = None,
    c_ratio: float = 1.0,
) -> float:
    """Multiply-adds of one attention layer on an ``height x width`` map of width C.

    IWSA (k x k windows): 4 n C^2 + 2 k^2 n C + 9 n C (the LIM's 3x3 per channel).
    SSA with r > 1, keys C' = c_ratio C wide, m = (H/r)(W/r) keys: projections
    n C C' (q) + m C'^2 (k) + m C' C (v) + n C^2 (output), reductions n C (depthwise,
    r^2 C per cell) + m C C' (1x1), then n m C' (logits) + n m C (weighted values).
    With r = 1: full attention, 4 n C^2 + 2 n^2 C.
    """
    n = height * width
    if window is not None and sr_ratio is not None:
        raise ValueError("give window (IWSA) or sr_ratio (SSA), not both")
    if window is not None:
        return 4 * n * dim**2 + 2 * window**2 * n * dim + 9 * n * dim
    if sr_ratio is not None and sr_ratio > 1:
        c = dim * c_ratio
        m = (height // sr_ratio) * (width // sr_ratio)
        projections = n * dim * c + m * c * c + m * c * dim + n * dim**2
        reductions = n * dim + m * dim * c
        return projections + reductions + n * m * c + n * m * dim
    return 4 * n * dim**2 + 2 * n * n * dim


__all__ = [
    "ScalableViT",
    "ScalableViTBlock",
    "Stage",
    "OverlapPatchEmbed",
    "InteractiveWindowAttention",
    "ScalableAttention",
    "check_c_ratio",
    "check_c_ratios",
    "attention_flops",
]
