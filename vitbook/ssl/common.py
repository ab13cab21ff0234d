"""The old home of the pieces every self-supervised method shares, now each in a file
of its own; the names still import from here:

- :mod:`.teacher`: the EMA teacher (``ema_update_``, ``EMATeacher``) and what DINO and
  EsViT build around it (``SelfDistillation``), with the momentum and warm-up
  schedules;
- :mod:`.augment`: multi-crop views (``MultiCrop``, ``apply_to``,
  ``contrast_brightness``);
- :mod:`.heads`: projection heads (``DINOHead``, ``bn_mlp``, BYOL's and SimSiam's),
  ``embed`` and the ``SyncBatchNorm`` switch;
- :mod:`.diagnostics`: the collapse diagnostics (``effective_rank``,
  ``embedding_std``).

``method_loss`` is what ``vitbook.train.fit`` calls with a method.
"""

from __future__ import annotations

import torch
from torch import nn

from . import augment, heads, teacher
from .augment import *  # noqa: F403
from .diagnostics import effective_rank, embedding_std
from .heads import *  # noqa: F403
from .teacher import *  # noqa: F403


def method_loss(method: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """``fit(..., loss=method_loss)``: the method's loss plus the diagnostics it left
    in ``method.metrics`` (tensors; ``fit`` reads them only when it logs). Under
    ``torchrun`` ``fit`` passes the method wrapped in DDP: the metrics are read from the
    wrapped module."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    loss = method(images)
    if isinstance(method, nn.parallel.DistributedDataParallel):
        method = method.module
    return loss, dict(getattr(method, "metrics", {}))


__all__ = [
    *teacher.__all__,
    *augment.__all__,
    *heads.__all__,
    "effective_rank",
    "embedding_std",
    "method_loss",
]
