"""Models that several test files build, written once.

``tests/`` is on ``sys.path`` (pytest puts the rootdir conftest's folder there), so a
test imports them as a module of its own: ``from factories import tiny_vit``. Every
factory takes keyword overrides of its configuration.
"""

import torch

from vitbook import ScalableViT, Twins, ViT

# the ViT the self-supervised tests train: 4x4 patches of 16x16 grey images, one block;
# any size the patch divides is taken (DINO's and EsViT's local crops)
TINY_VIT = dict(
    image_size=16,
    patch_size=4,
    num_classes=0,
    dim=16,
    depth=1,
    heads=2,
    mlp_dim=32,
    channels=1,
    dynamic_img_size=True,
)


def tiny_vit(**overrides) -> ViT:
    return ViT(**{**TINY_VIT, **overrides})


# the small pyramid chapters 3 and 4 are tested on, the same for Twins-SVT and
# ScalableViT so that the two compare: 16x16 grey images in 2x2 patches, 8x8 then 4x4
# maps, windows 4, the sub-sampled attention on 2x2 cells then full (sr_ratio 1)
PYRAMID = dict(
    image_size=16,
    patch_size=2,
    num_classes=10,
    dims=(16, 32),
    depths=(4, 2),
    heads=(2, 4),
    window_sizes=4,
    sr_ratios=(2, 1),
    channels=1,
)


def small_twins(**overrides) -> Twins:
    return Twins(**{**PYRAMID, **overrides})


def small_scalable_vit(**overrides) -> ScalableViT:
    return ScalableViT(**{**PYRAMID, "c_ratios": (1.25, 1), **overrides})


# timm's Twins-SVT arguments of the two-stage parity configuration (test_twins.py,
# test_converters.py): 8x8 then 4x4 tokens, windows 4 divide both maps, GSA
# sub-samples 2x2 patches in stage 1 and is full attention (sr 1) in stage 2
TIMM_TWINS = dict(
    img_size=32,
    embed_dims=[16, 32],
    num_heads=[1, 2],
    mlp_ratios=[4, 4],
    depths=[2, 2],
    wss=[4, 4],
    sr_ratios=[2, 1],
    num_classes=10,
)


def randomize_(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Every parameter drawn at random: references zero-initialize some (class token, positions,
    biases), and a zero weight would hide a conversion that puts it in the wrong place."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module
