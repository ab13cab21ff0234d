"""MP3, masked patch position prediction (Zhai et al. 2022, "Position Prediction as an
Effective Pretraining Strategy"). There is no official code; this follows the paper.

    image (b, c, H, W)
      -> patches, projected, NO position embedding          (b, n, dim)
      -> per image, a random subset of n_keep patches is the context: in every layer
         every token is a query, but only the context tokens of that layer's states
         serve as keys and values (the same context in every layer)
      -> final LayerNorm, a linear head over the n positions  (b, n, n)
      -> cross-entropy of each token's true position, over all tokens

The context tokens are gathered before the key/value projection, so a layer projects
keys and values for ``prefix + n_keep`` tokens only and its scores are ``(prefix + n)
x (prefix + n_keep)``: the paper's cost, fewer FLOPs than a plain ViT of the same size
(``python -m vitbook.bench mp3`` counts and times both). ``attention="mask"`` computes
the same thing the expensive way, keys and values for every token and the non-context
keys masked out of the full ``(prefix + n) x (prefix + n)`` scores: the reference the
tests hold the gathered path to.

Fine-tuning puts position embeddings back, initialized to zero
(:meth:`MP3.add_positions`): vitbook's choice, so that fine-tuning starts from the
pretrained "no positions" model (the paper's fine-tuning recipe was not checked here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import Block, check_image
from ..models.vit import ViT

ATTENTIONS = ("gather", "mask")


def context_mask(noise: torch.Tensor, n_keep: int, prefix: int = 0) -> torch.Tensor:
    """Boolean attention mask ``(b, 1, prefix + n, prefix + n)``: True where a query may
    attend to a key. Every query may attend to the prefix tokens and to the ``n_keep``
    patches with the smallest ``noise`` ``(b, n)`` (the context), to nothing else."""
    b, n = noise.shape
    keep = torch.zeros(b, n, dtype=torch.bool, device=noise.device)
    keep.scatter_(1, noise.argsort(dim=1)[:, :n_keep], True)  # (b, n)
    # (b, prefix + n)
    keys = torch.cat(
        (torch.ones(b, prefix, dtype=torch.bool, device=noise.device), keep), dim=1
    )
    return keys[:, None, None, :].expand(-1, 1, prefix + n, -1)


def context_index(noise: torch.Tensor, n_keep: int, prefix: int = 0) -> torch.Tensor:
    """Indices ``(b, prefix + n_keep)`` of the tokens that serve as keys and values: the
    prefix tokens and the ``n_keep`` patches with the smallest ``noise`` ``(b, n)``, in
    sequence order (the True keys of :func:`context_mask`, the same draw)."""
    b = noise.shape[0]
    # sorted, so that the keys come in the order the masked reference has them
    # (b, n_keep)
    patches = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    # (b, prefix)
    first = torch.arange(prefix, device=noise.device).expand(b, -1)
    return torch.cat((first, prefix + patches), dim=1)


def context_block(block: Block, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A vitbook ``Block`` in which every token of ``x`` ``(b, t, dim)`` is a query but
    only the tokens at ``index`` ``(b, m)`` give keys and values: the same weights and
    the same pre-norm residual steps as ``block(x, mask=...)``, but keys and values are
    projected for the ``m`` gathered tokens only and the scores are ``t x m``."""
    attn = block.attn
    inner = attn.heads * attn.dim_head
    # qkv's outputs are laid out (q, k, v): its first rows project queries, the rest
    # keys and values, so each part can run on its own tokens
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q_bias, kv_bias = (None, None) if bias is None else (bias[:inner], bias[inner:])
    # (b, t, dim)
    h = block.norm1(x)
    # LayerNorm is per token: gathering after it equals normalizing the gathered tokens
    # (b, m, dim)
    context = h.gather(1, index[..., None].expand(-1, -1, h.shape[-1]))
    # (b, heads, t, dim_head)
    q = F.linear(h, weight[:inner], q_bias)
    q = rearrange(q, "b t (h d) -> b h t d", h=attn.heads)
    kv = F.linear(context, weight[inner:], kv_bias)
    # 2 x (b, heads, m, dim_head)
    k, v = rearrange(kv, "b m (kv h d) -> kv b h m d", kv=2, h=attn.heads)
    x = x + block.drop_path(attn.attend(q, k, v))
    return x + block.drop_path(block.mlp(block.norm2(x)))


class MP3(nn.Module):
    """Masked position prediction around a vitbook ``ViT`` (``pos_embed="learned"``;
    the table is zeroed and not used while pretraining).

    ``loss = mp3(images)``; ``mp3.last_accuracy`` is the position accuracy of the last
    batch; ``mp3.backbone`` is the encoder for evaluation (call :meth:`add_positions`
    before fine-tuning, or rely on the zero table: the same thing).

    ``attention="gather"`` (the default) projects keys and values for the context tokens
    only; ``attention="mask"`` projects them for every token and masks the non-context
    keys out: the same result at the cost of a full ViT, kept as the reference.
    """

    def __init__(
        self, backbone: ViT, *, mask_ratio: float = 0.75, attention: str = "gather"
    ):
        super().__init__()
        if not isinstance(backbone, ViT):
            raise TypeError(
                f"backbone must be a vitbook ViT, got {type(backbone).__name__}"
            )
        if not isinstance(backbone.pos_embed, nn.Parameter):
            raise ValueError(
                "MP3 adds position embeddings back, zero-initialized, for fine-tuning: "
                "build the ViT with pos_embed='learned'"
            )
        n = backbone.patch_embed.num_patches
        if not 0.0 <= mask_ratio < 1.0 or int(n * (1 - mask_ratio)) < 1:
            raise ValueError(
                f"mask_ratio={mask_ratio} must be in [0, 1) and keep at least one of "
                f"the {n} patches"
            )
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r} is not one of {ATTENTIONS}")
        self.backbone, self.mask_ratio = backbone, mask_ratio
        self.attention = attention
        self.num_patches, self.prefix = n, backbone.num_prefix_tokens
        self.position_head = nn.Linear(backbone.dim, n)  # one class per grid position
        nn.init.trunc_normal_(self.position_head.weight, std=0.02)
        nn.init.zeros_(self.position_head.bias)
        self.add_positions()
        self.last_accuracy: float | None = None

    @torch.no_grad()
    def add_positions(self) -> None:
        """Zero the backbone's position table: fine-tuning starts from "no positions"
        and learns them."""
        self.backbone.pos_embed.zero_()

    def forward_logits(self, images: torch.Tensor, noise=None) -> torch.Tensor:
        """Images -> position logits ``(b, n, n)``, every patch a query in every layer,
        only the context patches of the current layer's states as keys and values."""
        vit = self.backbone
        check_image(images, vit.patch_embed.channels, vit.patch_embed.image_size)
        x = vit.patch_embed(images)  # (b, n, dim): no position embedding
        b, n, _ = x.shape
        if vit.cls_token is not None:
            x = torch.cat((vit.cls_token.expand(b, -1, -1), x), dim=1)
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        n_keep = int(n * (1 - self.mask_ratio))
        x = vit.pos_drop(x)
        if self.attention == "gather":
            # (b, prefix + n_keep)
            index = context_index(noise, n_keep, self.prefix)
            for block in vit.blocks:
                x = context_block(block, x, index)  # keys/values: this layer's context
        else:
            # the same attention, from all (prefix + n)^2 scores with most masked out
            mask = context_mask(noise, n_keep, self.prefix)
            for block in vit.blocks:
                x = block(x, mask=mask)
        return self.position_head(vit.norm(x)[:, self.prefix :])  # (b, n, n)

    def forward(self, images: torch.Tensor, noise=None) -> torch.Tensor:
        logits = self.forward_logits(images, noise)  # (b, n, n)
        target = torch.arange(self.num_patches, device=logits.device)
        target = target.expand(logits.shape[0], -1)  # token i sits at position i
        self.last_accuracy = (logits.argmax(-1) == target).float().mean().detach()
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())


__all__ = ["MP3", "context_block", "context_index", "context_mask"]
