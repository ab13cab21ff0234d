"""Self-supervised methods: each wraps a backbone, ``loss = method(images)``,
``method.step_teacher()`` where there is a teacher, ``method.backbone`` to evaluate."""

from .byol import BYOL, byol_loss
from .augment import MultiCrop, apply_to, contrast_brightness
from .common import method_loss
from .diagnostics import effective_rank, embedding_std
from .heads import (
    DINOHead,
    bn_mlp,
    byol_mlp,
    embed,
    maybe_sync_batchnorm,
    simsiam_predictor,
    simsiam_projector,
    use_sync_batchnorm,
)
from .teacher import (
    EMATeacher,
    SelfDistillation,
    cosine_schedule,
    ema_update_,
    linear_warmup,
)
from .dino import DINO, dino_loss
from .mae import (
    MAE,
    SnapshotLoss,
    normalized_pixels,
    patchify,
    random_masking,
    unpatchify,
)
from .esvit import EsViT, esvit_loss, match_regions, region_loss
from .mp3 import MP3, context_mask

__all__ = [
    "BYOL",
    "byol_loss",
    "bn_mlp",
    "byol_mlp",
    "embed",
    "maybe_sync_batchnorm",
    "simsiam_predictor",
    "simsiam_projector",
    "use_sync_batchnorm",
    "DINO",
    "dino_loss",
    "EsViT",
    "esvit_loss",
    "match_regions",
    "region_loss",
    "DINOHead",
    "EMATeacher",
    "SelfDistillation",
    "MultiCrop",
    "apply_to",
    "contrast_brightness",
    "cosine_schedule",
    "effective_rank",
    "ema_update_",
    "embedding_std",
    "linear_warmup",
    "method_loss",
    "MAE",
    "SnapshotLoss",
    "normalized_pixels",
    "patchify",
    "random_masking",
    "unpatchify",
    "MP3",
    "context_mask",
]
