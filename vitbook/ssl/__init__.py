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
from .mp3 import MP3, context_mask

__all__ = [
    "MAE",
    "SnapshotLoss",
    "normalized_pixels",
    "patchify",
    "random_masking",
    "unpatchify",
    "MP3",
    "context_mask",
]
