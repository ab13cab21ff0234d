"""The classifiers' benchmarks: vitbook's ViT, Swin and Twins against timm's (the
official code's ports) and vit-pytorch's ViT (the seed), at the papers' small sizes."""

from __future__ import annotations

from torch import nn


def vit_contenders(
    image_size=224, patch_size=16, dim=192, depth=12, heads=3, num_classes=1000
) -> dict[str, nn.Module]:
    """ViT-Ti/16 (DeiT-Tiny's shape) by default: vitbook, timm, and vit-pytorch (the
    seed)."""
    import timm
    from vit_pytorch import ViT as SeedViT

    from ..models.vit import ViT

    shape = dict(
        image_size=image_size,
        patch_size=patch_size,
        num_classes=num_classes,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=4 * dim,
    )
    return {
        "vitbook": ViT(**shape),
        "timm": timm.models.vision_transformer.VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            num_classes=num_classes,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=4.0,
        ),
        "vit-pytorch": SeedViT(dim_head=dim // heads, **shape),
    }


def swin_contenders(
    image_size=224, depth=None, num_classes=1000, drop_path=0.1
) -> dict[str, nn.Module]:
    """Swin-T (``dim=96, depths=(2, 2, 6, 2)``, window 7): vitbook and timm (the
    official code's port), with the same stochastic depth (Swin-T's 0.1) on both sides.

    ``depth`` sets the third stage's depth (Swin-T: 6), for a quicker run."""
    import timm

    from ..models.swin import Swin

    depths = (2, 2, 6 if depth is None else depth, 2)
    return {
        "vitbook": Swin(
            image_size=image_size,
            num_classes=num_classes,
            depths=depths,
            drop_path=drop_path,
        ),
        "timm": timm.models.swin_transformer.SwinTransformer(
            img_size=image_size,
            num_classes=num_classes,
            depths=depths,
            embed_dim=96,
            num_heads=(3, 6, 12, 24),
            window_size=7,
            drop_path_rate=drop_path,
        ),
    }


def twins_contenders(
    image_size=224, depth=None, num_classes=1000
) -> dict[str, nn.Module]:
    """Twins-SVT-S (``dims=(64, 128, 256, 512)``, ``depths=(2, 2, 10, 4)``, windows 7,
    ``sr_ratios=(8, 4, 2, 1)``): vitbook and timm (the official code's port).

    ``depth`` sets the third stage's depth (Twins-SVT-S: 10), for a quicker run."""
    import timm

    from ..models.twins import Twins

    depths = (2, 2, 10 if depth is None else depth, 4)
    return {
        "vitbook": Twins(image_size=image_size, num_classes=num_classes, depths=depths),
        "timm": timm.models.twins.Twins(
            img_size=image_size,
            num_classes=num_classes,
            embed_dims=(64, 128, 256, 512),
            num_heads=(2, 4, 8, 16),
            mlp_ratios=(4, 4, 4, 4),
            depths=depths,
            wss=(7, 7, 7, 7),
            sr_ratios=(8, 4, 2, 1),
        ),
    }
