"""Self-supervised methods: each wraps a vitbook backbone, ``loss = method(images)``,
``method.backbone`` for evaluation."""

from .mae import MAE, normalized_pixels, patchify, random_masking, unpatchify

__all__ = ["MAE", "normalized_pixels", "patchify", "random_masking", "unpatchify"]
