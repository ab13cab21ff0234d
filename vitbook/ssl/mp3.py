"""MP3, masked patch position prediction (Zhai et al. 2022, "Position Prediction as an
Effective Pretraining Strategy"). There is no official code; this follows the paper.

    image (b, c, H, W)
      -> patches, projected, NO position embedding          (b, n, dim)
      -> per image, a random subset of n_keep patches is the context: in every layer
         every token is a query, but only the context tokens of that layer's states
         serve as keys and values (an attention mask, the same in every layer)
      -> final LayerNorm, a linear head over the n positions  (b, n, n)
      -> cross-entropy of each token's true position, over all tokens

Fine-tuning puts position embeddings back, initialized to zero
(:meth:`MP3.add_positions`): vitbook's choice, so that fine-tuning starts from the
pretrained "no positions" model (the paper's fine-tuning recipe was not checked here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import check_image
from ..models.vit import ViT


def context_mask(noise: torch.Tensor, n_keep: int, prefix: int = 0) -> torch.Tensor:
    """Boolean attention mask ``(b, 1, prefix + n, prefix + n)``: True where a query may
    attend to a key. Every query may attend to the prefix tokens and to the ``n_keep``
    patches with the smallest ``noise`` ``(b, n)`` (the context), to nothing else."""
    b, n = noise.shape
    keep = torch.zeros(b, n, dtype=torch.bool, device=noise.device)
    keep.scatter_(1, noise.argsort(dim=1)[:, :n_keep], True)  # (b, n)
    keys = torch.cat(
        (torch.ones(b, prefix, dtype=torch.bool, device=noise.device), keep), dim=1
    )  # (b, prefix + n)
    return keys[:, None, None, :].expand(-1, 1, prefix + n, -1)


class MP3(nn.Module):
    """Masked position prediction around a vitbook ``ViT`` (``pos_embed="learned"``;
    the table is zeroed and not used while pretraining).

    ``loss = mp3(images)``; ``mp3.last_accuracy`` is the position accuracy of the last
    batch; ``mp3.backbone`` is the encoder for evaluation (call :meth:`add_positions`
    before fine-tuning, or rely on the zero table: the same thing).
    """

    def __init__(self, backbone: ViT, *, mask_ratio: float = 0.75):
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
        self.backbone, self.mask_ratio = backbone, mask_ratio
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
        mask = context_mask(noise, int(n * (1 - self.mask_ratio)), self.prefix)
        x = vit.pos_drop(x)
        for block in vit.blocks:
            x = block(x, mask=mask)  # keys/values: this layer's states, context only
        return self.position_head(vit.norm(x)[:, self.prefix :])  # (b, n, n)

    def forward(self, images: torch.Tensor, noise=None) -> torch.Tensor:
        logits = self.forward_logits(images, noise)  # (b, n, n)
        target = torch.arange(self.num_patches, device=logits.device)
        target = target.expand(logits.shape[0], -1)  # token i sits at position i
        self.last_accuracy = (logits.argmax(-1) == target).float().mean().detach()
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())


__all__ = ["MP3", "context_mask"]
