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

``method_loss``, what ``vitbook.train.fit`` calls with a method, is
``vitbook.train.self_supervised_loss`` under the name the chapters use.
"""

from __future__ import annotations

from ..train import method_loss  # noqa: F401 (re-exported: one function with fit's)
from . import augment, heads, teacher
from .augment import *  # noqa: F403
from .diagnostics import effective_rank, embedding_std
from .heads import *  # noqa: F403
from .teacher import *  # noqa: F403


__all__ = [
    *teacher.__all__,
    *augment.__all__,
    *heads.__all__,
    "effective_rank",
    "embedding_std",
    "method_loss",
]
