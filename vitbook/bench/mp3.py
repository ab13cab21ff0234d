"""MP3's benchmark: its gathered context (keys and values for the context tokens only)
against the same model attending through a mask, and against a plain ViT; and the
FLOPs and time the gathered context saves."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .harness import Results
from .methods import LossOf
from .tables import report_block


def mp3_contenders(
    image_size=224,
    patch_size=16,
    dim=192,
    depth=12,
    heads=3,
    mask_ratio=0.75,
    num_classes=None,
) -> dict[str, nn.Module]:
    """MP3's training step on a ViT-Ti/16 (class token, 75% masked), three ways with
    the same weights: vitbook's ``MP3``, which projects keys and values for the context
    tokens only (scores ``(1 + n) x (1 + n_keep)``, the paper's cost); the same model
    with ``attention="mask"`` (keys and values for every token, the ``(1 + n) x (1 +
    n)`` scores masked: what vitbook's MP3 did before); and a plain ViT of the same
    size, every token a key and value, with the same position head and loss. There is
    no official code to compare with."""
    from ..models.vit import ViT
    from ..ssl.mp3 import MP3

    backbone = ViT(
        image_size=image_size,
        patch_size=patch_size,
        num_classes=0,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=4 * dim,
    )
    gathered = MP3(backbone, mask_ratio=mask_ratio)
    masked = copy.deepcopy(gathered)
    masked.attention = "mask"

    def plain(mp3, images):
        # (b, n, dim): the plain ViT's patch tokens (its position table is zero)
        tokens = mp3.backbone.forward_features(images)[:, mp3.prefix :]
        # (b, n, n)
        logits = mp3.position_head(tokens)
        target = torch.arange(mp3.num_patches, device=logits.device)
        target = target.expand(len(images), -1)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    return {
        "vitbook": LossOf(gathered),
        "masked": LossOf(masked),
        "plain ViT": LossOf(copy.deepcopy(gathered), plain),
    }


def mp3_costs(results: Results) -> str:
    """The FLOPs of each MP3 contender's forward and training step (counted by
    ``FlopCounterMode``) against the gathered context's, and what the gathered context
    gains in time over the masked one and over the plain ViT (medians, interleaved)."""
    flops = {
        k: {f"{task} GFLOP": v / 1e9 for task, v in tasks.items()}
        for k, tasks in results.flops.items()
    }
    lines = ["FLOPs counted by FlopCounterMode (fewer is cheaper):"]
    lines += report_block(flops, list(next(iter(flops.values()))), "vitbook")
    for task in ("forward", "train step"):
        # the gathered context's time over each one's: their img/s over its img/s
        time = {
            k: r[f"{task} img/s"] / results["vitbook"][f"{task} img/s"]
            for k, r in results.items()
        }
        lines.append(
            f"{task}: the gathered context, {time['masked']:.2f}x the masked one's "
            f"time, {time['plain ViT']:.2f}x the plain ViT's"
        )
    return "\n".join(lines)
