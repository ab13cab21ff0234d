"""NaViT's benchmark: variable-size images, packed (vitbook, first-fit decreasing or
greedy; vit-pytorch's NaViT), one per row (timm's NaFlexViT) or padded to the largest
(a plain ViT); and the share of real tokens each way of batching them keeps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PaddedViT(nn.Module):
    """A plain ViT on a list of images: every image zero-padded to the largest one's
    size (bottom and right), then one batch. What NaViT's packing replaces."""

    def __init__(self, vit: nn.Module, image_size: int):
        super().__init__()
        self.vit, self.image_size = vit, image_size

    def forward(self, images):
        s = self.image_size
        # (b, c, s, s)
        batch = torch.stack(
            [F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2])) for x in images]
        )
        return self.vit(batch)


class SeedNaViT(nn.Module):
    """vit-pytorch's NaViT with its own greedy grouping under the same token budget."""

    def __init__(self, navit: nn.Module, token_budget: int):
        super().__init__()
        self.navit, self.token_budget = navit, token_budget

    def forward(self, images):
        return self.navit(
            list(images), group_images=True, group_max_seq_len=self.token_budget
        )


class TimmNaFlex(nn.Module):
    """timm's NaFlexViT on a list of images: each image patchified on its own grid and
    padded to the longest one (its collator's layout: one image per row, a validity
    mask), with the patch coordinates its position embedding reads."""

    def __init__(self, model: nn.Module, patch_size: int):
        super().__init__()
        self.model, self.patch_size = model, patch_size

    def forward(self, images):
        from timm.models.naflexvit import batch_patchify

        p = self.patch_size
        # one (n_i, p * p * c) row of patches per image
        rows = [batch_patchify(x[None], (p, p))[0][0] for x in images]
        n = max(len(r) for r in rows)
        patches = torch.stack([F.pad(r, (0, 0, 0, n - len(r))) for r in rows])
        valid = torch.zeros(len(rows), n, dtype=torch.bool, device=patches.device)
        coord = torch.zeros(len(rows), n, 2, dtype=torch.long, device=patches.device)
        for i, x in enumerate(images):
            h, w = x.shape[-2] // p, x.shape[-1] // p
            valid[i, : h * w] = True
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            coord[i, : h * w] = torch.stack([ys.flatten(), xs.flatten()], -1)
        return self.model(patches, patch_coord=coord, patch_valid=valid)


def navit_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, num_classes=1000
) -> dict[str, nn.Module]:
    """Variable-resolution images up to ``image_size``: vitbook's NaViT (first-fit
    decreasing), the same NaViT with greedy packing, vit-pytorch's NaViT (greedy),
    timm's NaFlexViT (one image per row, padded; factorized positions, qk-norm and
    attention pooling as NaViT) and a ViT of the same width and depth on a batch
    padded to the largest image.
    The token budget is the largest image's token count."""
    import timm
    from vit_pytorch.na_vit import NaViT as SeedNaViTModel

    from ..models.navit import NaViT
    from ..models.vit import ViT

    side = image_size // patch_size
    budget = side**2
    shape = dict(
        patch_size=patch_size,
        num_classes=num_classes,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=4 * dim,
    )
    navit = dict(max_image_size=image_size, token_budget=budget, **shape)
    return {
        "vitbook": NaViT(packing="ffd", **navit),
        "vitbook greedy": NaViT(packing="greedy", **navit),
        "vit-pytorch": SeedNaViT(
            SeedNaViTModel(image_size=image_size, dim_head=dim // heads, **shape),
            budget,
        ),
        "timm NaFlex": TimmNaFlex(
            timm.models.naflexvit.NaFlexVit(
                patch_size=patch_size,
                embed_dim=dim,
                depth=depth,
                num_heads=heads,
                num_classes=num_classes,
                pos_embed="factorized",
                qk_norm=True,
                global_pool="map",
                pos_embed_grid_size=(side, side),
            ),
            patch_size,
        ),
        "padded ViT": PaddedViT(
            ViT(image_size=image_size, pool="mean", **shape), image_size
        ),
    }


def variable_images(batch_size, image_size, device, patch_size=16, seed=0):
    """``batch_size`` random images, sides random multiples of ``patch_size`` from a
    quarter of ``image_size`` up to ``image_size``."""
    generator = torch.Generator().manual_seed(seed)
    smallest = -(-max(patch_size, image_size // 4) // patch_size) * patch_size
    sides = list(range(smallest, image_size + 1, patch_size))  # multiples of the patch
    draw = torch.randint(len(sides), (batch_size, 2), generator=generator).tolist()
    return [
        torch.randn(3, sides[i], sides[j], generator=generator).to(device)
        for i, j in draw
    ]


def navit_utilization(batch_size: int, image_size: int, patch_size: int = 16) -> str:
    """Real tokens / all tokens of the benchmark's batch, per way of batching it."""
    from ..packing import pack, padding_utilization

    images = variable_images(batch_size, image_size, "cpu", patch_size)
    lengths = [(x.shape[1] // patch_size) * (x.shape[2] // patch_size) for x in images]
    budget = (image_size // patch_size) ** 2
    ffd, greedy = pack(lengths, budget, "ffd"), pack(lengths, budget, "greedy")
    return (
        f"token utilization (budget {budget}): first-fit decreasing "
        f"{ffd.utilization:.1%} ({ffd.num_sequences} sequences), greedy "
        f"{greedy.utilization:.1%} ({greedy.num_sequences}), padded to the largest "
        f"{padding_utilization(lengths):.1%} ({len(lengths)} images)"
    )
