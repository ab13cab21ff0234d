"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent") and SimSiam (Chen & He 2021,
"Exploring Simple Siamese Representation Learning"): two views, no negatives.

    images (b, c, H, W)
      -> two augmented views v1, v2                              2 x (b, c, h, w)
      -> online: backbone -> projector z -> predictor p          (2b, P)
      -> target: EMA of backbone + projector (no gradient) z'    (2b, P)
      -> loss = (2 - 2 cos(p1, z'2)) + (2 - 2 cos(p2, z'1)), averaged over the batch

The online network predicts the target's projection of the *other* view. Nothing in
the loss forbids a constant output; what keeps BYOL away from it is the predictor and
the slowly moving target (the paper's section 3.2, table 5). ``mode="simsiam"``
drops the moving average: the target is the online projection itself with its gradient
stopped (SimSiam shows the stop-gradient, not the momentum, is what matters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import MultiCrop
from .diagnostics import effective_rank, embedding_std
from .heads import (
    byol_mlp,
    embed,
    maybe_sync_batchnorm,
    simsiam_predictor,
    simsiam_projector,
)
from .teacher import EMATeacher

MODES = {
    # the BYOL paper (section 3.3): projector and predictor 4096 -> 256, target
    # momentum 0.996 rising to 1 along a cosine
    "byol": dict(projection_dim=256, hidden_dim=4096, predictor_hidden_dim=4096),
    # SimSiam (section 4): projector 2048 -> 2048 -> 2048, predictor bottleneck 512
    "simsiam": dict(projection_dim=2048, hidden_dim=2048, predictor_hidden_dim=512),
}


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(prediction, target)`` per row ``(b,)``: the squared distance of the
    L2-normalized vectors. ``target`` is detached here, whatever the caller passed."""
    dtype = torch.promote_types(prediction.dtype, torch.float32)  # no half cosines
    p = F.normalize(prediction.to(dtype), dim=-1)
    z = F.normalize(target.detach().to(dtype), dim=-1)
    return 2 - 2 * (p * z).sum(dim=-1)


class Online(nn.Module):
    """A backbone and a projector: images -> (representation ``(b, d)``, projection
    ``(b, P)``). The target network is an EMA copy of this module."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        representation = embed(self.backbone, x)  # (b, d)
        return representation, self.projector(representation)


class BYOL(nn.Module):
    """``loss = byol(images)``; ``byol.step_teacher()`` after each optimizer step
    (``fit`` does it); ``byol.backbone`` is the online backbone, for evaluation.

    ``backbone``: a vitbook model (``num_classes=0``) or any network mapping images to
    ``(b, feature_dim)`` vectors (a torchvision ResNet with ``fc = nn.Identity()``: then
    pass ``feature_dim``). ``total_steps``: the length of training, over which the
    target's momentum rises from ``momentum`` to ``final_momentum`` along a cosine.
    ``mode="simsiam"`` has no target copy: the target is the online projection with its
    gradient stopped, and SimSiam's heads. Head sizes left at None take the mode's
    (:data:`MODES`). ``predictor=False`` removes the predictor (the collapse
    experiment). The two views come from ``multicrop`` or a :class:`MultiCrop` with
    two global crops of ``image_size`` and no local one (``crop_kwargs`` go to it; its
    default blur probabilities 1.0 and 0.1 are BYOL's asymmetric ones).

    ``sync_batchnorm``: turn the heads' BatchNorm into ``SyncBatchNorm`` (``None``:
    when a process group that can run it is initialized, see
    :func:`~vitbook.ssl.heads.use_sync_batchnorm`). ``vitbook.train.fit`` converts
    every BatchNorm on GPUs under ``torchrun`` as well.

    After each training forward ``byol.metrics`` holds the collapse diagnostics of the
    online projections of the first view: ``std`` (per-dimension std of the normalized
    vectors, ``1/sqrt(P)`` when spread, 0 when collapsed) and ``erank`` (effective
    rank), and the same two of the backbone's representation (``rep_std``,
    ``rep_erank``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        total_steps: int,
        image_size=None,
        mode: str = "byol",
        feature_dim: int | None = None,
        projection_dim: int | None = None,
        hidden_dim: int | None = None,
        predictor_hidden_dim: int | None = None,
        predictor: bool = True,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        multicrop: MultiCrop | None = None,
        sync_batchnorm: bool | None = None,
        seed: int = 0,
        **crop_kwargs,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {tuple(MODES)}")
        if multicrop is None and image_size is None:
            raise ValueError("image_size=None: give the views' size, or a multicrop=")
        feature_dim = feature_dim or getattr(backbone, "num_features", None)
        if not feature_dim:
            raise ValueError(
                f"feature_dim=None and the {type(backbone).__name__} backbone has no "
                "num_features: pass feature_dim= (512 for a torchvision resnet18)"
            )
        given = dict(
            projection_dim=projection_dim,
            hidden_dim=hidden_dim,
            predictor_hidden_dim=predictor_hidden_dim,
        )
        cfg = {k: MODES[mode][k] if v is None else v for k, v in given.items()}
        self.mode, self.feature_dim = mode, feature_dim
        self.multicrop = multicrop or MultiCrop(
            image_size, image_size, 0, seed=seed, **crop_kwargs
        )
        if mode == "byol":
            projector = byol_mlp(feature_dim, cfg["projection_dim"], cfg["hidden_dim"])
            head = byol_mlp(
                cfg["projection_dim"],
                cfg["projection_dim"],
                cfg["predictor_hidden_dim"],
            )
        else:
            projector = simsiam_projector(
                feature_dim, cfg["projection_dim"], cfg["hidden_dim"]
            )
            head = simsiam_predictor(cfg["projection_dim"], cfg["predictor_hidden_dim"])
        self.online = Online(backbone, maybe_sync_batchnorm(projector, sync_batchnorm))
        self.predictor = (
            maybe_sync_batchnorm(head, sync_batchnorm) if predictor else nn.Identity()
        )
        # the target: a moving average of backbone + projector (the predictor is the
        # online network's alone); SimSiam has none, its target is the online network
        self.target = (
            EMATeacher(
                self.online,
                base=momentum,
                final=final_momentum,
                total_steps=total_steps,
            )
            if mode == "byol"
            else None
        )
        self.metrics: dict[str, torch.Tensor] = {}

    @property
    def backbone(self) -> nn.Module:
        return self.online.backbone

    def step_teacher(self) -> None:
        if self.target is not None:
            self.target.update(self.online)

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The two augmented views of every image."""
        return self.multicrop(images)[:2]

    def outputs(
        self, v1: torch.Tensor, v2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Online predictions, target projections and online projections ``(2, b,
        P)`` of two views, and the online representations ``(2, b, d)``. Both views
        share one pass, so the heads' BatchNorm sees the ``2b`` vectors together, as in
        byol-pytorch."""
        x = torch.cat((v1, v2))  # (2b, c, h, w)
        representation, projection = self.online(x)  # (2b, d), (2b, P)
        prediction = self.predictor(projection)  # (2b, P)
        if self.target is not None:
            _, target = self.target(x)  # no gradient: (2b, P)
        else:  # SimSiam: the online projection, gradient stopped
            target = projection.detach()
        b = len(v1)
        outs = prediction, target, projection, representation
        return tuple(t.unflatten(0, (2, b)) for t in outs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.views(images)
        prediction, target, projection, representation = self.outputs(v1, v2)
        # each view's prediction against the other view's target, symmetrized
        loss = byol_loss(prediction[0], target[1]) + byol_loss(prediction[1], target[0])
        loss = loss.mean()
        if self.training:
            self._diagnose(projection[0], representation[0])
        return loss

    @torch.no_grad()
    def _diagnose(self, projection, representation) -> None:
        self.metrics = {
            "std": embedding_std(projection),
            "erank": effective_rank(projection),
            "rep_std": embedding_std(representation),
            "rep_erank": effective_rank(representation),
        }


__all__ = ["BYOL", "MODES", "Online", "byol_loss"]
