"""The building blocks every model in the book shares.

Attention always runs through ``F.scaled_dot_product_attention`` (SDPA). Only while a
``record_attention`` context is active does it take the explicit softmax path, so the
weights can be kept for figures; ``tests/test_layers.py`` proves both paths agree.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def pair(x) -> tuple[int, int]:
    """``7 -> (7, 7)``; a ``(height, width)`` pair is returned as is."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a (height, width) pair, got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def renamed(**old_names: str):
    """Let a constructor still take a keyword under the name it had before a rename:
    ``@renamed(attn_dropout="attn_drop")`` passes ``attn_dropout=0.1`` on as
    ``attn_drop=0.1``, with a DeprecationWarning that names the new keyword. Both
    names at once are a TypeError."""

    def decorate(init):
        owner = init.__qualname__.removesuffix(".__init__")

        @functools.wraps(init)
        def wrapper(*args, **kwargs):
            for old, new in old_names.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{owner}() got {old}= and {new}=: {old} is the old name of "
                        f"{new}; pass {new}= only"
                    )
                warnings.warn(
                    f"{owner}(): {old}= is the old name of {new}=; pass {new}=",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return init(*args, **kwargs)

        return wrapper

    return decorate


def merge_masks(
    mask: torch.Tensor | None, bias: torch.Tensor | None, dtype
) -> torch.Tensor | None:
    """One additive float mask from a boolean ``mask`` (True = may attend) and a float
    ``bias``."""
    if mask is None:
        return bias
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}"
        )
    blocked = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, float("-inf")
    )
    return blocked if bias is None else blocked + bias


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017), as ViT uses it.

    ``qkv`` and ``proj`` carry timm's names so weights convert one to one. ``forward(x,
    mask=None, bias=None)``: ``mask`` is boolean, True where a query may attend to a
    key; ``bias`` is added to the logits (Swin's relative position bias and shift mask).
    Both broadcast to ``(b, heads, n, n)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(
                    f"dim {dim} is not divisible by heads {heads}; pass dim_head to "
                    "decouple them"
                )
            dim_head = dim // heads
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.recorded: list[torch.Tensor] | None = None  # set by record_attention()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # 3 x (b, h, n, d)
        q, k, v = rearrange(
            self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads
        )
        return self.attend(q, k, v, merge_masks(mask, bias, q.dtype))

    def attend(self, q, k, v, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``softmax(q k^T * scale + attn_mask) v`` for heads ``(b, h, n, d)`` (``k``
        and ``v`` may have another length ``m``), then the output projection: the
        step every subclass shares, whatever its queries, keys and values are."""
        return self.proj_drop(self.proj(self.mix(q, k, v, attn_mask)))

    def mix(self, q, k, v, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`attend` without the output projection: the heads' weighted values,
        concatenated, ``(b, n, h * d_v)`` (``v`` may be wider or narrower than ``q``
        and ``k``), for a subclass that adds something before projecting."""
        drop = self.attn_drop if self.training else 0.0
        if self.recorded is None and not sdpa_falls_back(q, attn_mask):
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=drop, scale=self.scale
            )
        else:
            weights = attention_weights(q, k, attn_mask, self.scale)  # (b, h, n, m)
            if self.recorded is not None:
                self.recorded.append(weights.detach())
            out = F.dropout(weights, drop, self.training) @ v
        return rearrange(out, "b h n d -> b n (h d)")


def sdpa_falls_back(q: torch.Tensor, attn_mask: torch.Tensor | None) -> bool:
    """True where SDPA has no fused kernel and the explicit path is faster: on the CPU,
    for a mask that needs a gradient (Swin's learned relative position bias). SDPA then
    runs its math fallback, which adds a safe softmax (``isneginf``, ``all``,
    ``where``) and scaled copies of ``q`` and ``k``; written out, a Swin-T training
    step is about 10% faster (``python -m vitbook.bench swin``). Both give the same
    result as long as every query may attend to at least one key."""
    return (
        attn_mask is not None
        and attn_mask.requires_grad
        and torch.is_grad_enabled()
        and q.device.type == "cpu"
    )


def attention_weights(q, k, attn_mask=None, scale=None) -> torch.Tensor:
    """softmax(q k^T * scale + mask): the explicit path SDPA fuses away."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(dim=-1)


@contextmanager
def record_attention(model: nn.Module):
    """Record the attention weights of every ``Attention`` inside ``model``.

    >>> with record_attention(model) as maps:
    ...     model(images)
    >>> maps["blocks.0.attn"][0]   # (b, heads, n, n) for the first call of that layer

    ``maps`` maps each attention layer's qualified name to the list of weights it
    produced, one entry per call (Swin calls a layer once; a windowed layer records
    ``(b*windows, h, n, n)``).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Attention)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no vitbook.layers.Attention to record"
        )
    maps: dict[str, list[torch.Tensor]] = {}
    for name, layer in layers.items():
        layer.recorded = maps.setdefault(name, [])
    try:
        yield maps
    finally:
        for layer in layers.values():
            layer.recorded = None


def check_mlp_ratio(mlp_ratio: float) -> float:
    if not mlp_ratio > 0:
        raise ValueError(
            f"mlp_ratio={mlp_ratio} must be > 0 (hidden width = mlp_ratio * dim)"
        )
    return float(mlp_ratio)


def mlp_width(dim: int, mlp_ratio: float = 4.0, mlp_dim: int | None = None) -> int:
    """The MLP's hidden width: ``mlp_dim`` itself when given (the ViT paper's "MLP
    size"), else ``int(mlp_ratio * dim)`` (timm's ``mlp_ratio``); either way the
    ratio to ``dim`` must be > 0."""
    if mlp_dim is not None:
        check_mlp_ratio(mlp_dim / dim)
        return mlp_dim
    return int(dim * check_mlp_ratio(mlp_ratio))


class FeedForward(nn.Module):
    """The transformer's MLP: Linear -> GELU -> Linear (timm names ``fc1``/``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch for a whole
    sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability p={p} must be in [0, 1)")
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one coin per sample
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self):
        return f"p={self.p}"


class Block(nn.Module):
    """A pre-norm transformer encoder block: x + Attn(LN(x)), then x + MLP(LN(x)).

    The MLP is ``mlp_ratio * dim`` wide (timm's name, the one every block and model of
    vitbook takes), or ``mlp_dim`` wide when that is given (the ViT paper's "MLP
    size"). ``dropout`` acts on the outputs of the attention's projection and of the
    MLP's layers, ``attn_drop`` on the attention weights (``attn_dropout``, its old
    name, still works, with a DeprecationWarning). ``eps=1e-6`` is the LayerNorm
    epsilon of the original ViT code (PyTorch's default is 1e-5).
    """

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int | None = None,
        dim_head: int | None = None,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        *,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dim_head, qkv_bias, attn_drop, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, mlp_width(dim, mlp_ratio, mlp_dim), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, mask=None, bias=None):
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask, bias=bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Cut an image into patches, flatten each, project it linearly (ViT eq. 1).

    A linear map of the flattened patch is what the paper writes; it equals a
    convolution with kernel = stride = patch size, which is how timm stores it
    (``reference.py`` converts).
    """

    def __init__(
        self, image_size, patch_size, channels: int, dim: int, dynamic: bool = False
    ):
        super().__init__()
        # any size divisible by the patch (timm's dynamic_img_size)
        self.dynamic = dynamic
        self.patch_size, self.channels = pair(patch_size), channels
        self.set_image_size(image_size)
        ph, pw = self.patch_size
        self.proj = nn.Linear(channels * ph * pw, dim)

    def set_image_size(self, image_size) -> None:
        """Take images of ``image_size``: the patch grid follows (the patch must divide
        it)."""
        self.grid = patch_grid(image_size, self.patch_size)
        self.image_size = pair(image_size)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            check_image(img, self.channels, multiple_of=self.patch_size)
        else:
            check_image(img, self.channels, self.image_size)
        ph, pw = self.patch_size
        # (b, n, p*p*c)
        patches = rearrange(img, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw)
        return self.proj(patches)  # (b, n, dim)


def check_image(
    img: torch.Tensor, channels: int, image_size=None, multiple_of=None
) -> None:
    """Raise a ValueError that names the rule when ``img`` is not a ``(b, c, h, w)``
    batch the model takes."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(
            f"expected a torch.Tensor of shape (batch, channels, height, width), "
            f"got {type(img).__name__}"
        )
    if not img.is_floating_point():
        raise ValueError(
            f"images have dtype {img.dtype}; the model takes normalized float images: "
            f"use dataset.normalize(images) (a uint8 batch from vitbook.data) first"
        )
    if img.ndim != 4:
        raise ValueError(
            "expected images of shape (batch, channels, height, width), got shape "
            f"{tuple(img.shape)}"
        )
    if img.shape[1] != channels:
        raise ValueError(
            f"image has {img.shape[1]} channels, the model was built with "
            f"channels={channels}"
        )
    h, w = img.shape[-2:]
    if image_size is not None and (h, w) != tuple(image_size):
        raise ValueError(
            f"image size {h}x{w} does not match the model's image_size "
            f"{image_size[0]}x{image_size[1]}"
        )
    if multiple_of is not None:
        patch_grid((h, w), multiple_of)


def patch_grid(image_size, patch_size, name: str = "image") -> tuple[int, int]:
    """The grid ``(h, w)`` of ``patch_size`` patches that tiles ``image_size`` exactly.

    The one check of the rule every patch embedding lives by: each side of the image
    (``name`` in the error: ``max_image_size`` for NaViT) must be a whole, positive
    number of patches."""
    (h, w), (ph, pw) = pair(image_size), pair(patch_size)
    for side, size, p in (("height", h, ph), ("width", w, pw)):
        if p < 1:
            raise ValueError(f"patch_size {p} must be >= 1")
        if size % p:
            raise ValueError(f"{name} {side} {size} is not divisible by patch_size {p}")
        if size < p:
            raise ValueError(f"{name} {side} {size} is smaller than patch_size {p}")
    return h // ph, w // pw


SINCOS_ORDERS = ("yx", "xy")


def posemb_sincos_2d(
    h: int, w: int, dim: int, temperature: float = 10_000.0, order: str = "yx"
) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, ``(h*w, dim)``, patches row by row.

    A quarter of the channels each for sin and cos of the row coordinate y and of the
    column coordinate x, at geometric frequencies ``temperature ** (-i / (dim/4))``.
    The two papers that use it lay the quarters out differently, and a model trained
    with one layout must be run with the same one:

    - ``order="yx"`` (the default): ``[sin y, cos y, sin x, cos x]``, MoCo v3's
      layout (row coordinate first), what chapter 1's ``ViT(pos_embed="sincos")`` uses;
    - ``order="xy"``: ``[sin x, cos x, sin y, cos y]``, MAE's official layout (its
      ``get_2d_sincos_pos_embed`` meshes ``(w, h)``, so the column coordinate comes
      first); ``vitbook.ssl.MAE`` uses it, and its parity test against Hugging Face's
      ``ViTMAE`` proves it.
    """
    if dim % 4:
        raise ValueError(
            f"dim {dim} must be divisible by 4 for the 2D sin-cos position embedding"
        )
    if order not in SINCOS_ORDERS:
        raise ValueError(f"order={order!r} is not one of {SINCOS_ORDERS}")
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64),
        torch.arange(w, dtype=torch.float64),
        indexing="ij",
    )
    # (dim/4,)
    omega = 1.0 / temperature ** (
        torch.arange(dim // 4, dtype=torch.float64) / (dim // 4)
    )
    y = y.flatten()[:, None] * omega[None, :]  # (h*w, dim/4)
    x = x.flatten()[:, None] * omega[None, :]
    first, second = (y, x) if order == "yx" else (x, y)
    table = torch.cat((first.sin(), first.cos(), second.sin(), second.cos()), dim=1)
    return table.float()  # (h*w, dim)


def resample_pos_embed(
    pos_embed: torch.Tensor, grid, old_grid, num_prefix_tokens: int = 0
) -> torch.Tensor:
    """A learned position embedding ``(1, prefix + h * w, dim)`` of the patch grid
    ``old_grid`` resampled to the patch grid ``grid``, as timm's
    ``resample_abs_pos_embed`` does it.

    The patch rows are a ``(dim, h, w)`` image, resized bicubically with
    antialiasing: when the grid shrinks, every old position contributes through a
    widened kernel, not only the 4x4 nearest ones. The ``num_prefix_tokens`` rows in
    front (the class token's) have no place in the grid and are kept. At
    ``old_grid`` itself the table is returned untouched, bit for bit. Half
    precisions are resampled in float32 (as timm does: interpolate has no
    antialiased bicubic for them); float64 stays float64, where timm rounds it
    through float32.
    """
    (h, w), (old_h, old_w) = pair(grid), pair(old_grid)
    if (h, w) == (old_h, old_w):
        return pos_embed
    if pos_embed.shape[1] != num_prefix_tokens + old_h * old_w:
        raise ValueError(
            f"pos_embed has {pos_embed.shape[1]} rows, but num_prefix_tokens="
            f"{num_prefix_tokens} plus an old_grid of {old_h}x{old_w} needs "
            f"{num_prefix_tokens + old_h * old_w}"
        )
    prefix, table = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dtype = torch.float64 if pos_embed.dtype == torch.float64 else torch.float32
    table = rearrange(table.to(dtype), "1 (h w) d -> 1 d h w", h=old_h)
    # (1, dim, h, w)
    table = F.interpolate(
        table, size=(h, w), mode="bicubic", align_corners=False, antialias=True
    )
    table = rearrange(table, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)
    return torch.cat((prefix, table), dim=1)  # (1, prefix + h * w, dim)


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """timm's ViT initialization of one module: Linear weights from N(0, std) truncated
    at +-2 in absolute value (timm's ``trunc_normal_(w, std=.02)``: at std 0.02 nothing
    is cut, the effective std is 0.02), zero biases, unit LayerNorms. Apply it with
    ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = [
    "pair",
    "renamed",
    "check_mlp_ratio",
    "mlp_width",
    "Attention",
    "attention_weights",
    "record_attention",
    "FeedForward",
    "DropPath",
    "Block",
    "PatchEmbed",
    "check_image",
    "patch_grid",
    "posemb_sincos_2d",
    "resample_pos_embed",
    "trunc_normal_init",
]
