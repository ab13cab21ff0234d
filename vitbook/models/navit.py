"""NaViT (Dehghani et al. 2023, "Patch n' Pack: NaViT, a Vision Transformer for any
Aspect Ratio and Resolution").

A ViT that takes a list of images of any height and width (each a multiple of the
patch size) and never resizes or pads them to one shape:

    images [(c, H_i, W_i)]
      -> patches of each image, flattened and projected      (n_i, dim)
      -> token dropout: keep a random subset (training only)  (k_i, dim)
      -> + row embedding[row] + column embedding[column]      factorized positions
      -> packed into S sequences of at most `token_budget`    (S, L, dim)
      -> depth x Block, attention masked to each image        (S, L, dim)
      -> LayerNorm                                 forward_features() returns this
      -> attention pooling: one learned query per image       (B, dim)
      -> linear head                                          (B, num_classes)

The attention mask is what makes packing exact: a token attends only to tokens of its
own image, so an image's logits do not depend on what it was packed with
(``tests/test_navit.py`` proves it to 1e-5). The blocks use query-key normalization as
NaViT takes it from ViT-22B: a LayerNorm on each head's queries and keys, then the usual
``1/sqrt(d_head)`` scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from einops import rearrange
from torch import nn

from ..layers import (
    Attention,
    Block,
    FeedForward,
    check_image,
    merge_masks,
    mlp_width,
    patch_grid,
    renamed,
    trunc_normal_init,
)
from ..packing import STRATEGIES, Packing, pack
from .base import Classifier, check_num_classes, check_positive


class QKNormAttention(Attention):
    """Self-attention with a LayerNorm on every head's queries and keys (ViT-22B,
    Dehghani et al. 2023), which keeps the attention logits from growing without bound
    in large models. The scale stays ``1/sqrt(d_head)``."""

    def __init__(
        self,
        dim,
        heads,
        dim_head=None,
        qkv_bias=True,
        attn_drop=0.0,
        proj_drop=0.0,
        eps: float = 1e-6,
    ):
        super().__init__(dim, heads, dim_head, qkv_bias, attn_drop, proj_drop)
        self.q_norm = nn.LayerNorm(self.dim_head, eps=eps)
        self.k_norm = nn.LayerNorm(self.dim_head, eps=eps)

    def forward(self, x, mask=None, bias=None):
        # 3 x (b, h, n, d)
        q, k, v = rearrange(
            self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads
        )
        # over d, per token and head; on a strided view PyTorch's CPU LayerNorm is ~6x
        # slower than a copy followed by the norm
        q, k = self.q_norm(q.contiguous()), self.k_norm(k.contiguous())
        return self.attend(q, k, v, merge_masks(mask, bias, q.dtype))


class PoolAttention(Attention):
    """Cross-attention: queries from ``queries``, keys and values from ``context``."""

    def __init__(self, dim, heads, dim_head=None, qkv_bias=True):
        super().__init__(dim, heads, dim_head, qkv_bias)
        del self.qkv
        inner = self.heads * self.dim_head
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * inner, bias=qkv_bias)

    def forward(self, queries, context, mask=None):
        q = rearrange(self.q(queries), "b m (h d) -> b h m d", h=self.heads)
        # 2 x (b, h, n, d)
        k, v = rearrange(
            self.kv(context), "b n (kv h d) -> kv b h n d", kv=2, h=self.heads
        )
        return self.attend(q, k, v, merge_masks(mask, None, q.dtype))  # (b, m, dim)


@dataclass
class PackedTokens:
    """Tokens of a packed batch and the structure that says whose they are.

    ``tokens`` (S, L, dim); ``image_ids`` (S, L): the input index of each token's image,
    -1 on padding; ``positions`` (S, L, 2): (row, column) of the token's patch in its
    image (0 on padding); ``packing``: which image sits in which sequence, where.
    """

    tokens: torch.Tensor
    image_ids: torch.Tensor
    positions: torch.Tensor
    packing: Packing

    @property
    def num_images(self) -> int:
        return len(self.packing.placements)

    def attention_mask(self) -> torch.Tensor:
        """(S, 1, L, L), True where a query may attend: same image. Padding tokens
        attend to padding only, so no row is empty and none reaches a real token."""
        ids = self.image_ids
        return rearrange(ids, "s i -> s 1 i 1") == rearrange(ids, "s j -> s 1 1 j")

    def slots(self) -> torch.Tensor:
        """(S, Q): the image pooled by query q of sequence s, -1 where s has fewer
        than Q = the most images any sequence holds."""
        groups = self.packing.sequences()
        q = max(len(g) for g in groups)
        table = [g + [-1] * (q - len(g)) for g in groups]
        return torch.tensor(table, device=self.image_ids.device)

    def pooling_mask(self) -> torch.Tensor:
        """(S, 1, Q, L): query q of sequence s reads only its image's tokens. An
        empty slot reads everything (its output is discarded; an all-False row would
        give NaN)."""
        slots = self.slots()
        mask = rearrange(slots, "s q -> s q 1") == rearrange(
            self.image_ids, "s n -> s 1 n"
        )
        return rearrange(mask | (slots < 0)[..., None], "s q n -> s 1 q n")

    def of_image(self, i: int) -> torch.Tensor:
        """Image ``i``'s tokens ``(k_i, dim)``, in the order they were packed."""
        p = self.packing.placements[i]
        return self.tokens[p.sequence, p.offset : p.offset + p.length]


class AttentionPool(nn.Module):
    """big_vision's MAP head (Lee et al. 2019's pooling by multihead attention): one
    learned query per image attends to that image's tokens, then a residual MLP."""

    def __init__(self, dim, heads, mlp_dim, dim_head=None, qkv_bias=True):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(dim))
        self.attn = PoolAttention(dim, heads, dim_head, qkv_bias)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim)

    def forward(self, features: PackedTokens) -> torch.Tensor:
        """-> one vector per image, input order ``(B, dim)``."""
        tokens = features.tokens  # (S, L, dim)
        slots = features.slots()  # (S, Q)
        queries = self.probe.expand(*slots.shape, -1)  # (S, Q, dim)
        x = self.attn(queries, tokens, features.pooling_mask())  # (S, Q, dim)
        x = x + self.mlp(self.norm(x))
        where = [(p.sequence, p.image) for p in features.packing.placements]
        seq = torch.tensor([s for s, _ in where], device=tokens.device)
        slot = slots[seq] == torch.arange(len(where), device=tokens.device)[:, None]
        return x[seq, slot.int().argmax(1)]  # (B, dim)


TokenDropout = float | Callable[[int, int], float]


class NaViT(Classifier):
    """NaViT: ``forward(images)`` takes a list of ``(c, h, w)`` tensors (or a batch
    ``(b, c, h, w)``, read as b images) and returns ``(len(images), num_classes)``
    logits in input order. ``forward_features`` returns :class:`PackedTokens`;
    ``forward_intermediates`` the packed tokens ``(S, L, dim)`` after each block (the
    structure is the same as ``forward_features``' for the same input).

    The MLPs are ``mlp_ratio * dim`` wide, or ``mlp_dim`` wide when that is given (as
    for :class:`~vitbook.models.ViT`); ``attn_drop`` is the dropout on the attention
    weights (``attn_dropout``, its old name, still works, with a
    DeprecationWarning)."""

    no_weight_decay_keys = ("pos_embed_row", "pos_embed_col", "probe")

    @renamed(attn_dropout="attn_drop")
    def __init__(
        self,
        *,
        max_image_size,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        token_budget: int,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        channels: int = 3,
        dim_head: int | None = None,
        packing: str = "ffd",
        token_dropout: TokenDropout = 0.0,
        qk_norm: bool = True,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_positive(
            patch_size=patch_size,
            dim=dim,
            depth=depth,
            heads=heads,
            channels=channels,
            token_budget=token_budget,
        )
        mlp_dim = mlp_width(dim, mlp_ratio, mlp_dim)
        if packing not in STRATEGIES:
            raise ValueError(f"packing={packing!r} is not one of {tuple(STRATEGIES)}")
        if not callable(token_dropout):
            check_rate(token_dropout)
        self.max_grid = patch_grid(max_image_size, patch_size, name="max_image_size")
        self.num_features, self.dim = dim, dim
        self.patch_size, self.channels = patch_size, channels
        self.token_budget, self.packing, self.token_dropout = (
            token_budget,
            packing,
            token_dropout,
        )

        self.patch_embed = nn.Linear(channels * patch_size**2, dim)
        self.pos_embed_row = nn.Parameter(torch.zeros(self.max_grid[0], dim))
        self.pos_embed_col = nn.Parameter(torch.zeros(self.max_grid[1], dim))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList()
        for rate in rates:
            block = Block(
                dim, heads, mlp_dim, dim_head, qkv_bias, dropout, attn_drop, rate
            )
            # the same block with ViT-22B's attention in place
            if qk_norm:
                block.attn = QKNormAttention(
                    dim, heads, dim_head, qkv_bias, attn_drop, dropout
                )
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pool = AttentionPool(dim, heads, mlp_dim, dim_head, qkv_bias)
        self.reset_classifier(num_classes, init=False)
        self.reset_parameters()

    def reset_parameters(self):
        """timm's ViT init (Linear N(0, 0.02), zero biases, unit norms), the patch
        projection at PyTorch's default, position tables and the pooling query
        N(0, 0.02)."""
        self.apply(trunc_normal_init)
        self.patch_embed.reset_parameters()
        for p in (self.pos_embed_row, self.pos_embed_col, self.pool.probe):
            nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)

    # ----------------------------------------------------------------- tokens
    def dropout_rate(self, height: int, width: int) -> float:
        """The fraction of an image's tokens dropped while training."""
        rate = self.token_dropout
        return check_rate(rate(height, width) if callable(rate) else rate)

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens an image of this size keeps (in training; all of them in eval)."""
        n = (height // self.patch_size) * (width // self.patch_size)
        if not self.training:
            return n
        return max(1, round(n * (1.0 - self.dropout_rate(height, width))))

    def patchify(self, images: torch.Tensor, first: int = 0):
        """Images of one size ``(k, c, h, w)`` -> patches ``(k, m, p*p*c)`` and their
        ``(row, column)`` ``(k, m, 2)``: all ``m = n`` patches in eval, a fresh random
        subset of ``m`` per image in training (kept in reading order). ``first`` is
        the input index of the first image, for error messages."""
        k, _, h, w = images.shape
        rows, cols = h // self.patch_size, w // self.patch_size
        if rows > self.max_grid[0] or cols > self.max_grid[1]:
            mh, mw = (g * self.patch_size for g in self.max_grid)
            raise ValueError(
                f"image {first} of size {h}x{w} is larger than max_image_size "
                f"{mh}x{mw}: the position tables have no row {rows - 1} or column "
                f"{cols - 1}"
            )
        p, device = self.patch_size, images.device
        # (k, n, p*p*c)
        patches = rearrange(
            images, "k c (h p1) (w p2) -> k (h w) (p1 p2 c)", p1=p, p2=p
        )
        grid = torch.stack(
            torch.meshgrid(
                torch.arange(rows, device=device),
                torch.arange(cols, device=device),
                indexing="ij",
            ),
            -1,
        )
        positions = rearrange(grid, "h w two -> (h w) two").expand(k, -1, -1)
        keep = self.num_tokens(h, w)
        if keep < rows * cols:  # token dropout: one random subset per image
            chosen = torch.rand(k, rows * cols, device=device).argsort(1)[:, :keep]
            chosen = chosen.sort(1).values  # (k, m)
            patches = patches.gather(
                1, chosen[..., None].expand(-1, -1, p * p * images.shape[1])
            )
            positions = positions.gather(1, chosen[..., None].expand(-1, -1, 2))
        return patches, positions

    def position_embedding(self, positions: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` (row, column) -> ``(..., dim)``: the sum of a row and a column
        embedding, so a token's position embedding depends on its row and column only,
        and any aspect ratio up to ``max_image_size`` has one."""
        return (
            self.pos_embed_row[positions[..., 0]]
            + self.pos_embed_col[positions[..., 1]]
        )

    def embed(self, images) -> PackedTokens:
        """Images -> the packed tokens the first block reads (before any block)."""
        images = self.check_images(images)
        sizes = [tuple(img.shape[-2:]) for img in images]
        by_size: dict[tuple, list[int]] = {}
        for i, size in enumerate(sizes):
            by_size.setdefault(size, []).append(i)
        cut: list = [None] * len(images)  # (patches, positions) of each image
        for group in by_size.values():  # one patchify per size, not per image
            stacked = torch.stack([images[i] for i in group])  # (k, c, h, w)
            patches, positions = self.patchify(stacked, group[0])
            for i, pa, po in zip(group, patches, positions):
                cut[i] = (pa, po)
        lengths = [len(pa) for pa, _ in cut]
        packing = pack(lengths, self.token_budget, self.packing, sizes)

        patches = torch.cat([pa for pa, _ in cut])  # (N, p*p*c), image after image
        positions = torch.cat([po for _, po in cut])  # (N, 2)
        tokens = self.patch_embed(patches) + self.position_embedding(positions)

        # where token t of image i goes: sequence s_i, slot offset_i + t
        device = patches.device
        counts = torch.tensor(lengths, device=device)
        # (B, 2)
        place = torch.tensor(
            [(p.sequence, p.offset) for p in packing.placements], device=device
        )
        owner = torch.repeat_interleave(
            torch.arange(len(images), device=device), counts
        )
        start = torch.cumsum(counts, 0) - counts  # first token of each image
        seq = place[owner, 0]
        slot = place[owner, 1] + torch.arange(len(owner), device=device) - start[owner]

        shape = (packing.num_sequences, max(packing.lengths))  # (S, L)
        x = tokens.new_zeros(*shape, self.dim)
        x[seq, slot] = tokens
        image_ids = torch.full(shape, -1, device=device, dtype=torch.long)
        image_ids[seq, slot] = owner
        packed_positions = torch.zeros(*shape, 2, device=device, dtype=torch.long)
        packed_positions[seq, slot] = positions
        return PackedTokens(x, image_ids, packed_positions, packing)

    def check_images(self, images) -> list[torch.Tensor]:
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError(
                "NaViT takes a non-empty list of (channels, height, width) tensors, "
                f"got {type(images).__name__}"
            )
        for i, img in enumerate(images):
            try:
                check_image(
                    img[None] if isinstance(img, torch.Tensor) else img,
                    self.channels,
                    multiple_of=self.patch_size,
                )
            except (ValueError, TypeError) as error:
                raise type(error)(f"image {i}: {error}") from None
        return list(images)

    # ----------------------------------------------------------------- forward
    def _blocks(self, features: PackedTokens):
        # (S, 1, L, L), True within an image; made additive once for every block
        mask = merge_masks(features.attention_mask(), None, features.tokens.dtype)
        x = features.tokens
        for block in self.blocks:
            x = block(x, bias=mask)
            yield x

    def intermediate_layers(self, images):
        """Yield the packed tokens ``(S, L, dim)`` after each block."""
        yield from self._blocks(self.embed(images))

    def forward_features(self, images) -> PackedTokens:
        """Images -> normalized packed tokens, with the structure of the packing."""
        features = self.embed(images)
        *_, last = self._blocks(features)
        features.tokens = self.norm(last)
        return features

    def forward_head(self, features: PackedTokens, pre_logits: bool = False):
        x = self.pool(features)  # (B, dim), input order
        return x if pre_logits else self.head(x)


def check_rate(rate) -> float:
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not (0.0 <= rate < 1.0)
    ):
        raise ValueError(f"token dropout rate {rate!r} must be a number in [0, 1)")
    return float(rate)


__all__ = [
    "NaViT",
    "PackedTokens",
    "QKNormAttention",
    "PoolAttention",
    "AttentionPool",
    "check_rate",
]
