"""Swin Transformer (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted
Windows").

The whole model, top to bottom (feature maps are kept channels-last, ``(b, h, w, d)``,
because every layer but the merging acts on the channel vector of one position):

    image (b, c, H, W)
      -> patch partition + linear embedding + LayerNorm   (b, h, w, C)        h = H/p, w
      = W/p
      -> stage 1: depths[0] Swin blocks                    (b, h, w, C)
      -> stage 2: patch merging, then depths[1] blocks     (b, h/2, w/2, 2C)
      -> ...      (every further stage halves h, w and doubles the channels)
      -> LayerNorm                                         forward_features() -> (b, d,
      h', w')
      -> mean over positions, linear head                  (b, num_classes)

A Swin block is a pre-norm transformer block whose attention only looks inside M x M
windows (W-MSA). Every second block shifts the windows by M/2 (SW-MSA): the map is
rolled cyclically, cut into the same regular windows, and a mask keeps tokens that only
met because of the roll from attending to each other. Attention adds a learned bias that
depends on the relative position of query and key inside the window.

Where the map is not a multiple of the window, it is padded with zeros (bottom, right)
before the shift, as the official detection code does; where the window is larger than
the map the model was built for, the window shrinks to the map and the shift is dropped
(the official classification code and timm do so). Layer names follow timm's, so its
weights convert one to one (``vitbook.reference.swin_from_timm``).
"""

from __future__ import annotations

import math
import numbers

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

# the official code's "minus infinity": exp(-100) is ~4e-44, finite in fp16 sums
MASK_FILL = -100.0


def check_whole(**values) -> None:
    """Raise for the first argument that is not a whole number (or a pair of them):
    ``pair`` and ``int`` would truncate a window of 2.5 to 2 without a word. A
    TypeError for what is not a number, a ValueError for a fraction."""
    for name, value in values.items():
        several = isinstance(value, (tuple, list))
        rule = "must be whole numbers" if several else "must be a whole number"
        for v in value if several else (value,):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name}={value!r} {rule}, not {type(v).__name__}")
            if not math.isfinite(v) or v != int(v):
                raise ValueError(f"{name}={value!r} {rule}")


# --------------------------------------------------------------------------- windows
def window_partition(x: torch.Tensor, window) -> torch.Tensor:
    """``(b, H, W, c)`` -> ``(b * windows, wh * ww, c)``: one row of tokens per window,
    windows row-major. The map must be a whole number of windows (pad it first)."""
    wh, ww = pair(window)
    if wh < 1 or ww < 1:
        raise ValueError(f"window {(wh, ww)} must be positive")
    if x.shape[1] % wh or x.shape[2] % ww:
        raise ValueError(
            f"window_partition: a {x.shape[1]}x{x.shape[2]} map is not divisible "
            f"by the window {wh}x{ww}; pad it to a multiple of the window first"
        )
    return rearrange(x, "b (y wh) (x ww) c -> (b y x) (wh ww) c", wh=wh, ww=ww)


def window_reverse(
    windows: torch.Tensor, window, height: int, width: int
) -> torch.Tensor:
    """The inverse of :func:`window_partition`: ``(b * windows, wh * ww, c)`` -> ``(b,
    H, W, c)``."""
    wh, ww = pair(window)
    return rearrange(
        windows,
        "(b y x) (wh ww) c -> b (y wh) (x ww) c",
        y=height // wh,
        x=width // ww,
        wh=wh,
        ww=ww,
    )


def relative_position_index(window) -> torch.Tensor:
    """``(N, N)`` with N = wh*ww: for query i and key j, the row of the bias table for
    their offset.

    The offset ``(dy, dx)`` of two positions in a window lies in ``[-(wh-1), wh-1] x
    [-(ww-1), ww-1]``, so ``(2wh-1)(2ww-1)`` learned values per head cover every pair;
    the index is the row-major position of ``(dy + wh - 1, dx + ww - 1)`` in that grid.
    """
    wh, ww = pair(window)
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack((ys.flatten(), xs.flatten()))  # (2, N)
    # (2, N, N): position of query minus position of key
    offset = coords[:, :, None] - coords[:, None, :]
    return (offset[0] + wh - 1) * (2 * ww - 1) + (offset[1] + ww - 1)  # (N, N)


def shift_regions(height: int, width: int, shift) -> torch.Tensor:
    """``(H, W)`` labels of the map after the cyclic shift: which tokens wrapped around
    an edge.

    After ``torch.roll`` by ``-shift``, the last ``shift`` rows (columns) came from the
    top (left). A token may attend to a key of its window only if both wrapped, or both
    did not, in each direction. Two labels per axis are enough; the official code uses
    three slices per axis, but its first two never share a window (the border between
    them is a window border), so they give the same mask.
    """
    sh, sw = pair(shift)
    rows = (
        (torch.arange(height) >= height - sh).long()
        if sh
        else torch.zeros(height, dtype=torch.long)
    )
    cols = (
        (torch.arange(width) >= width - sw).long()
        if sw
        else torch.zeros(width, dtype=torch.long)
    )
    return 2 * rows[:, None] + cols[None, :]  # (H, W) in {0, 1, 2, 3}


def shift_mask(height: int, width: int, window, shift, device=None) -> torch.Tensor:
    """The SW-MSA mask ``(windows, N, N)``: 0 where query and key share a region,
    ``MASK_FILL`` elsewhere."""
    wh, ww = pair(window)
    if height % wh or width % ww:
        raise ValueError(
            f"shift_mask needs a map divisible by the window: {height}x{width} vs "
            f"window {wh}x{ww}"
        )
    regions = shift_regions(height, width, shift).to(device)
    # (windows, N)
    regions = window_partition(regions[None, :, :, None], (wh, ww))[..., 0]
    different = regions[:, :, None] != regions[:, None, :]  # (windows, N, N)
    return torch.zeros(different.shape, device=device).masked_fill(different, MASK_FILL)


# --------------------------------------------------------------------------- layers
class WindowAttention(Attention):
    """Multi-head attention inside a window, plus a learned relative position bias
    (paper eq. 4).

    ``softmax(q k^T / sqrt(d) + B) v`` where ``B[i, j] = table[index[i, j]]`` depends
    only on the offset between tokens i and j. The table is ``((2wh-1)(2ww-1), heads)``.
    Being an ``Attention``, it runs through SDPA (training on a CPU, through the
    explicit path, which is faster there for a learned bias: see
    :func:`vitbook.layers.sdpa_falls_back`) and its weights are recorded by
    ``record_attention``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(dim, heads, None, qkv_bias, attn_drop, proj_drop)
        self.window_size = pair(window)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), heads)
        )
        self.register_buffer(
            "relative_position_index",
            relative_position_index(self.window_size),
            persistent=False,
        )
        # timm's init of the table: N(0, 0.02), truncated at +-2
        nn.init.trunc_normal_(
            self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0
        )

    def relative_position_bias(self) -> torch.Tensor:
        """``(heads, N, N)``: the bias each head adds to query i attending to key j."""
        # (N, N, heads)
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, mask_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x``: ``(b * windows, N, dim)``; ``mask_bias``: the additive shift mask
        ``(windows, N, N)`` or None."""
        bias = self.relative_position_bias()[None]  # (1, heads, N, N)
        if mask_bias is not None:
            windows, n = mask_bias.shape[0], x.shape[1]
            # (1, windows, heads, N, N)
            bias = mask_bias[None, :, None].to(bias.dtype) + bias[:, None]
            # (b*windows, ...)
            bias = bias.expand(x.shape[0] // windows, -1, -1, -1, -1).reshape(
                -1, self.heads, n, n
            )
        return super().forward(x, bias=bias)


class SwinBlock(nn.Module):
    """x + (S)W-MSA(LN(x)), then x + MLP(LN(x)), on a channels-last map ``(b, H, W,
    dim)``.

    ``shift_size=0`` is W-MSA, ``shift_size > 0`` SW-MSA. The shift mask depends only on
    the padded map size, so it is built the first time a size is seen and cached per
    device. ``attn_drop`` was ``attn_dropout`` (still taken, with a
    DeprecationWarning).
    """

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        dim: int,
        heads: int,
        window_size,
        shift_size=0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        check_mlp_ratio(mlp_ratio)
        check_whole(window_size=window_size, shift_size=shift_size)
        self.window_size, self.shift_size = pair(window_size), pair(shift_size)
        for w, s in zip(self.window_size, self.shift_size):
            if w < 1:
                raise ValueError(f"window_size {self.window_size} must be positive")
            if not 0 <= s < w:
                raise ValueError(
                    f"shift_size {self.shift_size} must be in [0, window_size) = [0, "
                    f"{w})"
                )
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, heads, self.window_size, qkv_bias, attn_drop, dropout
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), dropout)
        # (Hp, Wp, device) -> (windows, N, N)
        self._masks: dict[tuple, torch.Tensor] = {}

    @property
    def shifted(self) -> bool:
        return any(self.shift_size)

    def attn_mask(self, height: int, width: int, device) -> torch.Tensor | None:
        """The cached shift mask for a padded map of ``height x width``; None for an
        unshifted block."""
        if not self.shifted:
            return None
        key = (height, width, torch.device(device))
        if key not in self._masks:
            self._masks[key] = shift_mask(
                height, width, self.window_size, self.shift_size, device
            )
        return self._masks[key]

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """(S)W-MSA on ``(b, H, W, dim)``: pad, shift, cut into windows, attend, undo
        all three."""
        _, h, w, _ = x.shape
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        pad_h, pad_w = -h % wh, -w % ww
        if pad_h or pad_w:
            # (b, Hp, Wp, dim), zeros at the bottom and right
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if self.shifted:
            # cyclic: the same windows, no extra padding
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        windows = window_partition(x, self.window_size)  # (b * windows, N, dim)
        windows = self.attn(windows, mask_bias=self.attn_mask(hp, wp, x.device))
        x = window_reverse(windows, self.window_size, hp, wp)  # (b, Hp, Wp, dim)
        if self.shifted:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :h, :w]  # (b, H, W, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}"


class PatchMerging(nn.Module):
    """Halve the resolution, double the channels: each 2x2 neighbourhood's four vectors
    are concatenated (4C), normalized and mapped linearly to 2C. Odd sizes are padded
    with zeros.

    The concatenation order, ``(dw dh c)``, is the official code's ``cat([x00, x10, x01,
    x11])`` (top-left, bottom-left, top-right, bottom-right); any order trains as well,
    this one loads the official weights.
    """

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # (b, H/2, W/2, 4c)
        x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)
        return self.reduction(self.norm(x))  # (b, H/2, W/2, 2c)


class PatchPartition(nn.Module):
    """Cut the image into p x p patches, embed each linearly, normalize: ``(b, c, H, W)
    -> (b, H/p, W/p, dim)``.

    The linear map of a flattened patch equals timm's stride-p convolution
    (``reference.py`` converts).
    """

    def __init__(self, patch_size, channels: int, dim: int):
        super().__init__()
        self.patch_size, self.channels = pair(patch_size), channels
        ph, pw = self.patch_size
        self.proj = nn.Linear(channels * ph * pw, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(img, self.channels, multiple_of=self.patch_size)
        ph, pw = self.patch_size
        # (b, h, w, p*p*c)
        patches = rearrange(img, "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=ph, p2=pw)
        return self.norm(self.proj(patches))  # (b, h, w, dim)


class Stage(nn.Module):
    """Patch merging (every stage but the first), then ``depth`` blocks, W-MSA and
    SW-MSA alternating."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        heads: int,
        resolution,
        window_size,
        merge: bool,
        drop_paths,
        **block_kw,
    ):
        super().__init__()
        self.merge = PatchMerging(dim, out_dim) if merge else nn.Identity()
        self.resolution = (
            tuple((r + 1) // 2 for r in resolution) if merge else tuple(resolution)
        )
        # a window that covers the whole map (on an axis) shrinks to it, and shifting it
        # would be pointless
        self.window_size = tuple(
            min(w, r) for w, r in zip(pair(window_size), self.resolution)
        )
        shift = tuple(
            0 if r <= w else w // 2 for w, r in zip(self.window_size, self.resolution)
        )
        self.blocks = nn.ModuleList(
            [
                SwinBlock(
                    out_dim,
                    heads,
                    self.window_size,
                    shift if i % 2 else 0,
                    drop_path=rate,
                    **block_kw,
                )
                for i, rate in enumerate(drop_paths)
            ]
        )

    def forward(self, x):
        x = self.merge(x)
        for block in self.blocks:
            x = block(x)
        return x


# --------------------------------------------------------------------------- the model
class Swin(PyramidClassifier):
    """Swin Transformer. Defaults are Swin-T's (``dim=96, depths=(2, 2, 6, 2), heads=(3,
    6, 12, 24)``).

    ``forward_features`` returns the last stage's map channels-first, ``(b, d, h, w)``,
    the layout of a CNN backbone and of timm's ``forward_intermediates``; timm's own
    ``forward_features`` returns NHWC. ``forward_intermediates`` gives every stage's
    map.

    ``image_size`` is the size the windows are fitted to (window clamping); other sizes
    that the patch size divides are accepted and padded to whole windows.
    ``window_size`` is M, the same for every stage; the shift is M // 2 as in the paper.
    ``attn_drop`` is the dropout on the attention weights (``attn_dropout``, its old
    name, still works, with a DeprecationWarning).
    """

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        *,
        image_size,
        num_classes: int,
        patch_size=4,
        dim: int = 96,
        depths=(2, 2, 6, 2),
        heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio: float = 4.0,
        channels: int = 3,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.1,
    ):
        super().__init__()
        depths, heads = tuple(depths), tuple(heads)
        if len(depths) != len(heads) or not depths:
            raise ValueError(
                f"depths {depths} and heads {heads} must name the same number (>= 1) "
                "of stages"
            )
        check_num_classes(num_classes)
        check_positive(dim=dim, channels=channels)
        check_mlp_ratio(mlp_ratio)
        if any(d < 1 for d in depths) or any(h < 1 for h in heads):
            raise ValueError(
                f"every stage needs depth >= 1 and heads >= 1, got depths={depths}, "
                f"heads={heads}"
            )
        check_whole(window_size=window_size, patch_size=patch_size)
        if min(pair(window_size)) < 1:
            raise ValueError(f"window_size={window_size} must be positive")
        resolution = patch_grid(image_size, patch_size)
        dims = [dim * 2**i for i in range(len(depths))]
        for i, (d, h) in enumerate(zip(dims, heads)):
            if d % h:
                raise ValueError(
                    f"stage {i + 1} has dim {d} (= dim * 2^{i}), not divisible by "
                    f"heads {h}"
                )
        self.image_size, self.dim = pair(image_size), dim
        self.num_features = dims[-1]

        self.patch_embed = PatchPartition(patch_size, channels, dim)
        # stochastic depth grows with depth
        rates = torch.linspace(0, drop_path, sum(depths)).split(list(depths))
        self.stages = nn.ModuleList()
        for i, (depth, h) in enumerate(zip(depths, heads)):
            stage = Stage(
                dims[max(i - 1, 0)],
                dims[i],
                depth,
                h,
                resolution,
                window_size,
                merge=i > 0,
                drop_paths=rates[i].tolist(),
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                dropout=dropout,
                attn_drop=attn_drop,
            )
            self.stages.append(stage)
            resolution = stage.resolution
        self.norm = nn.LayerNorm(self.num_features)
        self.reset_classifier(num_classes, init=False)
        self.reset_parameters()

    no_weight_decay_keys = ("relative_position_bias_table",)

    def reset_parameters(self):
        """timm's Swin initialization: Linear weights N(0, 0.02), zero biases, unit
        LayerNorms; the patch projection keeps PyTorch's default (timm's Conv2d is
        skipped by its init), the bias tables their own N(0, 0.02) (set in
        ``WindowAttention``)."""
        self.apply(trunc_normal_init)
        self.patch_embed.proj.reset_parameters()

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """The feature map size of every stage for an ``image_size`` input."""
        return [stage.resolution for stage in self.stages]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> patch embeddings ``(b, h, w, dim)``."""
        return self.patch_embed(x)


def attention_flops(tokens: int, dim: int, window: int | None = None) -> float:
    """Multiply-adds of one attention layer over ``tokens`` tokens (paper eq. 1 and 2).

    Global (``window=None``): 4 n C^2 + 2 n^2 C. Windowed: 4 n C^2 + 2 M^2 n C.
    """
    quadratic = tokens if window is None else window * window
    return 4 * tokens * dim**2 + 2 * quadratic * tokens * dim


__all__ = [
    "Swin",
    "SwinBlock",
    "WindowAttention",
    "PatchMerging",
    "PatchPartition",
    "Stage",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shift_regions",
    "shift_mask",
    "attention_flops",
    "check_whole",
    "MASK_FILL",
]
