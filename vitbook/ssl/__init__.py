"""Self-supervised methods: each wraps a vitbook backbone, ``loss = method(images)``,
``method.backbone`` for evaluation."""

from .mae import (
    MAE,
    SnapshotLoss,
    normalized_pixels,
    patchify,
    random_masking,
    unpatchify,
)

__all__ = [
    "MAE",
    "SnapshotLoss",
    "normalized_pixels",
    "patchify",
    "random_masking",
    "unpatchify",
]
