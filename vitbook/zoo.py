"""The classifiers the chapters train on Fashion-MNIST, in one place, so the comparison
chapter races exactly the models the chapters built (chapters 1-4; NaViT,
chapter 5, reads lists of images of any size and is not raced here).

``CHAPTER_MODELS[name]`` is ``(chapter, class, small config, full config)``: the small
configuration is the one each chapter uses on a CPU, the full one on a GPU
(:func:`vitbook.at_scale`). ``tests/test_zoo.py`` reads the chapters' notebooks and
checks that these are still their configurations.
"""

from __future__ import annotations

from torch import nn

from .models import CNN, ScalableViT, Swin, Twins, ViT
from .train import at_scale

CHAPTER_MODELS: dict[str, tuple[int, type, dict, dict]] = {
    "CNN": (
        1,
        CNN,
        dict(widths=(8, 16, 32)),
        dict(widths=(32, 64, 128)),
    ),
    "ViT": (
        1,
        ViT,
        dict(patch_size=7, dim=64, depth=4, heads=4, mlp_dim=128),
        dict(patch_size=4, dim=192, depth=9, heads=3, mlp_dim=384, drop_path=0.1),
    ),
    "Swin": (
        2,
        Swin,
        dict(
            patch_size=7,
            dim=32,
            depths=(2, 2),
            heads=(2, 4),
            window_size=2,
            drop_path=0.0,
        ),
        dict(
            patch_size=2,
            dim=64,
            depths=(2, 2, 2),
            heads=(2, 4, 8),
            window_size=7,
            drop_path=0.1,
        ),
    ),  # fmt: skip
    "Twins-SVT": (
        3,
        Twins,
        dict(
            patch_size=7,
            dims=(32, 64),
            depths=(2, 2),
            heads=(2, 4),
            window_sizes=2,
            sr_ratios=(2, 1),
        ),
        dict(
            patch_size=2,
            dims=(64, 128, 256),
            depths=(2, 2, 2),
            heads=(2, 4, 8),
            window_sizes=7,
            sr_ratios=(4, 2, 1),
            drop_path=0.1,
        ),
    ),  # fmt: skip
    "ScalableViT": (
        4,
        ScalableViT,
        dict(
            patch_size=7,
            dims=(32, 64),
            depths=(2, 2),
            heads=(2, 4),
            window_sizes=2,
            sr_ratios=(2, 1),
            c_ratios=(1.25, 1),
        ),
        dict(
            patch_size=2,
            dims=(64, 128, 256),
            depths=(2, 2, 2),
            heads=(2, 4, 8),
            window_sizes=(7, 7, 4),
            sr_ratios=(4, 2, 1),
            c_ratios=(1.25, 1.25, 1),
            drop_path=0.1,
        ),
    ),  # fmt: skip
}


def chapter_model(name: str, num_classes: int = 10, channels: int = 1) -> nn.Module:
    """A fresh model of chapter ``CHAPTER_MODELS[name]``, at the current scale, for
    28x28 Fashion-MNIST images."""
    if name not in CHAPTER_MODELS:
        raise ValueError(f"name={name!r}: not a chapter model; there are "
                         f"{list(CHAPTER_MODELS)}")  # fmt: skip
    _, cls, small, full = CHAPTER_MODELS[name]
    config = at_scale(small=small, full=full)
    if cls is CNN:
        return CNN(num_classes=num_classes, channels=channels, **config)
    return cls(image_size=28, num_classes=num_classes, channels=channels, **config)


__all__ = ["CHAPTER_MODELS", "chapter_model"]
