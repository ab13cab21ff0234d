"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"): self-distillation with no labels.

    images (b, c, H, W)
      -> MultiCrop: 2 global views + N local views                (2 + N) x (b, c, ., .)
      -> student = backbone + DINOHead on every view              (2 + N) x (b, K)
      -> teacher = EMA of the student, on the 2 global views only 2 x (b, K)
      -> teacher: subtract the EMA center, softmax at temperature tau_t (sharp)
         student: softmax at temperature tau_s
      -> cross-entropy H(teacher_i, student_v) for every pair with v != i, averaged

Centering alone drives every output to uniform; sharpening alone drives it to one
class: together they balance, and the model does not collapse (paper section 5.3).
``variant="seed"`` is vit-pytorch's simplified ``Dino``: the student sees only 2 local
crops, the teacher 2 global ones, constant momentum 0.9, student temperature 0.9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import MultiCrop
from .diagnostics import distillation_metrics, effective_rank, embedding_std
from .heads import DINOHead, embed
from .teacher import EMATeacher, SelfDistillation

VARIANTS = {
    # the paper and facebookresearch/dino. The teacher temperature rises linearly from
    # 0.04 to 0.07 over the first 10% of training: the paper's 30 of its 300 epochs,
    # and the README's recommended run (--epochs 300 --teacher_temp 0.07
    # --warmup_teacher_temp_epochs 30); the official code warms up because a high
    # temperature is unstable at the start. main_dino.py's own defaults are 0.04
    # throughout, no warm-up, over 100 epochs. 8 local crops: main_dino.py's default,
    # which the README's runs keep
    "official": dict(
        num_local=8,
        student_temp=0.1,
        teacher_temp=0.07,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_fraction=0.1,
        momentum=0.996,
        final_momentum=1.0,
    ),
    # vit-pytorch's Dino: 2 local crops for the student, constant temperatures/momentum
    "seed": dict(
        num_local=2,
        student_temp=0.9,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_fraction=0.0,
        momentum=0.9,
        final_momentum=0.9,
    ),
}


def resolution_groups(views: list[torch.Tensor]) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of consecutive views of one shape: the views that
    can share a backbone pass (the 2 global views, then the local views)."""
    groups, start = [], 0
    for end in range(1, len(views) + 1):
        if end == len(views) or views[end].shape != views[start].shape:
            groups.append((start, end))
            start = end
    return groups


def dino_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Mean cross-entropy between each teacher view ``i`` and each student view ``v !=
    i``.

    ``student_out``: ``(n_s, b, K)`` logits, the global views first (index 0 and 1 are
    the same crops the teacher saw). ``teacher_out``: ``(n_t, b, K)``. The teacher's
    distribution is centered, sharpened and carries no gradient.
    """
    dtype = torch.promote_types(student_out.dtype, torch.float32)  # no half softmax
    log_p_s = F.log_softmax(student_out.to(dtype) / student_temp, dim=-1)  # (n_s, b, K)
    p_t = F.softmax((teacher_out.to(dtype) - center) / teacher_temp, dim=-1).detach()
    total, pairs = student_out.new_zeros((), dtype=dtype), 0
    for i in range(len(p_t)):
        for v in range(len(log_p_s)):
            if v == i:  # the same crop: nothing to learn from matching it
                continue
            total = total - (p_t[i] * log_p_s[v]).sum(dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs at least one teacher/student pair")
    return total / pairs


class Projected(nn.Module):
    """A backbone and a projection head: images ``(b, c, h, w)``, or a list of views of
    them, -> (embedding ``(N, d)``, logits ``(N, K)``), the views' rows one after the
    other (``N`` images in all).

    As the official ``MultiCropWrapper``: the backbone runs once per group of views of
    one size (it needs one resolution per pass), then the head runs once on the
    embeddings of every view, so that a BatchNorm in the head (``use_bn``) takes its
    statistics over all of them, not over each resolution apart."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        views = [x] if isinstance(x, torch.Tensor) else list(x)
        embeddings = []
        for start, end in resolution_groups(views):
            embeddings.append(embed(self.backbone, torch.cat(views[start:end])))
        # (N, d)
        embedding = torch.cat(embeddings)
        return embedding, self.head(embedding)


class DINO(SelfDistillation):
    """``loss = dino(images)``; ``dino.step_teacher()`` after each optimizer step
    (``fit`` does it); ``dino.backbone`` and ``dino.teacher_backbone`` are the
    student's and the EMA teacher's backbones, for evaluation.

    ``total_steps``: the length of training, over which the teacher's momentum rises
    from ``momentum`` to ``final_momentum`` along a cosine. Parameters left at None take
    the ``variant``'s value (:data:`VARIANTS`); ``warmup_teacher_temp_steps=None``
    takes the variant's share of ``total_steps`` (the official: the first 10%).
    ``freeze_last_layer_steps``: the heads' last layer gets no update during the first
    that many optimizer steps (``fit`` calls :meth:`after_backward`; the official code
    freezes it for the first epoch). ``centering=False`` keeps the center at
    zero (with ``teacher_temp == student_temp``: no sharpening either, the collapse
    experiment). ``multicrop`` replaces the default :class:`MultiCrop` built from
    ``global_size``, ``local_size`` and ``num_local``. After each training forward,
    ``dino.metrics`` holds the collapse diagnostics: teacher entropy, KL(teacher ||
    student), per-dimension std and effective rank of the teacher's distributions
    across the batch. The student's head runs once on every crop, the teacher's once
    on both global crops (``use_bn``: BatchNorm statistics over all of them), and the
    center is averaged over every rank's batch under ``torchrun``, as the official
    code.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        total_steps: int,
        global_size,
        local_size,
        variant: str = "official",
        num_local: int | None = None,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
        student_temp: float | None = None,
        teacher_temp: float | None = None,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_steps: int | None = None,
        freeze_last_layer_steps: int = 0,
        momentum: float | None = None,
        final_momentum: float | None = None,
        center_momentum: float = 0.9,
        centering: bool = True,
        multicrop: MultiCrop | None = None,
        seed: int = 0,
        **crop_kwargs,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is not one of {tuple(VARIANTS)}")
        given = dict(
            num_local=num_local,
            student_temp=student_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp,
            momentum=momentum,
            final_momentum=final_momentum,
        )
        cfg = {k: VARIANTS[variant][k] if v is None else v for k, v in given.items()}
        share = VARIANTS[variant]["warmup_teacher_temp_fraction"]
        # checks and keeps the temperatures, the step counts and the center momentum
        super().__init__(
            total_steps=total_steps,
            student_temp=cfg["student_temp"],
            teacher_temp=cfg["teacher_temp"],
            warmup_teacher_temp=cfg["warmup_teacher_temp"],
            warmup_teacher_temp_steps=warmup_teacher_temp_steps,
            warmup_teacher_temp_fraction=share,
            freeze_last_layer_steps=freeze_last_layer_steps,
            center_momentum=center_momentum,
        )
        if variant == "seed" and cfg["num_local"] < 2:
            raise ValueError(
                f"num_local={cfg['num_local']}: the seed variant's student needs 2 "
                "local crops"
            )
        self.variant, self.centering = variant, centering

        self.multicrop = multicrop or MultiCrop(
            global_size, local_size, cfg["num_local"], seed=seed, **crop_kwargs
        )
        head = DINOHead(
            backbone.num_features,
            out_dim,
            hidden_dim=hidden_dim,
            bottleneck_dim=bottleneck_dim,
            nlayers=nlayers,
            norm_last_layer=norm_last_layer,
            use_bn=use_bn,
        )
        self.student = Projected(backbone, head)
        self.teacher = EMATeacher(
            self.student,
            base=cfg["momentum"],
            final=cfg["final_momentum"],
            total_steps=total_steps,
        )
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.metrics: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = self.multicrop(images)  # [global 1, global 2, local 1, ...]
        b = len(images)
        # (2b, K)
        _, teacher_out = self.teacher(views[:2])
        # the seed's student sees two local crops only, the official one every crop:
        # ((2 + N) b, K), the head run once on all of them
        _, student_out = self.student(views[2:4] if self.variant == "seed" else views)
        t_temp = self.current_teacher_temp
        teacher_out = teacher_out.float().unflatten(0, (2, b))  # (2, b, K)
        student_out = student_out.unflatten(0, (-1, b))  # (n_s, b, K)
        center = self.center if self.centering else torch.zeros_like(self.center)
        loss = dino_loss(student_out, teacher_out, center, self.student_temp, t_temp)
        if self.training:
            self._diagnose(loss, teacher_out, center, t_temp)
            if self.centering:
                self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the teacher's mean output ``teacher_out`` ``(2, b, K)`` over both
        views and the batch of every rank (:meth:`ema_center_`)."""
        self.ema_center_(self.center, teacher_out)

    @torch.no_grad()
    def _diagnose(self, loss, teacher_out, center, t_temp) -> None:
        # (2, b, K): the teacher's distributions, as the loss takes them
        p_t, metrics = distillation_metrics(loss, teacher_out, center, t_temp)
        # the std and the rank are taken of the teacher's distributions over the batch
        # (first view): a collapsed teacher, uniform or one-hot, gives every image the
        # same one: std 0 and rank 1 (the raw logits share a large common part in a
        # healthy run too: centering is what removes it)
        self.metrics = {
            **metrics,
            "std": embedding_std(p_t[0]),
            "erank": effective_rank(p_t[0]),
        }


__all__ = ["DINO", "VARIANTS", "dino_loss", "Projected", "resolution_groups"]
