"""EsViT (Li et al. 2022, "Efficient Self-supervised Vision Transformers for
Representation Learning"): DINO plus a region-level task.

    images (b, c, H, W)
      -> MultiCrop: 2 global views + N local views                (2 + N) x (b, c, ., .)
      -> backbone on every view: dense features, one per region   (b, n_v, d)
         and the pooled view feature                              (b, d)
      -> view head (DINOHead) on the view feature                 (b, K)
         region head (a second DINOHead) on every region          (b, n_v, K)
      -> teacher = EMA of the student, on the 2 global views only
      -> for every teacher view i and student view v != i:
           view loss:   DINO's cross-entropy H(teacher_i, student_v)
           region loss: each student region of v takes as target the teacher region of
                        i whose backbone feature has the highest cosine similarity
                        with its own; cross-entropy, mean over regions
           0.5 view + 0.5 region
      -> mean over the pairs

The regions are the last stage's map positions of a multi-stage backbone (Swin, as in
the paper; the view feature is their mean) or a ViT's patch tokens (the view feature is
its class token). The teacher's region outputs are centered with their own EMA center,
kept apart from the view center. This is the official ``DDINOLoss``
(microsoft/esvit, ``main_esvit.py``). ``match="dot"`` matches by raw dot product, as
vit-pytorch's ``es_vit.py`` (the seed) does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .augment import MultiCrop
from .diagnostics import distillation_metrics, effective_rank, embedding_std
from .dino import dino_loss, resolution_groups
from .heads import DINOHead
from .teacher import EMATeacher, SelfDistillation

MATCHES = ("cosine", "dot")

# the teacher temperature rises from 0.04 to 0.07 over the first 10% of training: the
# README's runs (--epochs 300 --teacher_temp 0.07 --warmup_teacher_temp_epochs 30)
WARMUP_TEACHER_TEMP_FRACTION = 0.1


# --------------------------------------------------------------------------- features
def view_and_regions(
    backbone: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(b, c, H, W)`` -> the view feature ``(b, d)`` and the region features
    ``(b, n, d)`` of any vitbook backbone.

    A map ``(b, d, h, w)`` from ``forward_features`` (Swin) gives its ``h * w``
    positions as regions; tokens ``(b, prefix + n, d)`` (ViT) give their patch tokens,
    the class token left out. The view feature is the backbone's own pooling
    (``forward_head(..., pre_logits=True)``): Swin's mean over the map, ViT's class
    token (or mean of tokens), what k-NN and the linear probe read.
    """
    features = backbone.forward_features(x)
    view = backbone.forward_head(features, pre_logits=True)  # (b, d)
    if features.ndim == 4:
        regions = rearrange(features, "b d h w -> b (h w) d")
    elif features.ndim == 3:
        regions = features[:, getattr(backbone, "num_prefix_tokens", 0) :]
    else:
        raise ValueError(
            "forward_features must return a map (b, d, h, w) or tokens (b, n, d), "
            f"got shape {tuple(features.shape)}"
        )
    return view, regions


class DenseProjected(nn.Module):
    """A backbone, a view head and a region head.

    Images ``(b, c, h, w)`` -> (view feature ``(b, d)``, view logits ``(b, K)``, region
    features ``(b, n, d)``, region logits ``(b, n, K)``). A list of views -> the same
    four as lists, one entry per view (the views may differ in size and so in their
    number of regions ``n_v``).

    As the official EsViT wrapper: the backbone runs once per group of views of one
    size, then the view head runs once on the view features of every view, and the
    region head once on the regions of every view, flattened into rows (``b * n_v``
    per view, however many regions each resolution has), so that a BatchNorm in the
    heads (``use_bn``) takes its statistics over all of them at once."""

    def __init__(self, backbone: nn.Module, head: nn.Module, region_head: nn.Module):
        super().__init__()
        self.backbone, self.head, self.region_head = backbone, head, region_head

    def forward(self, x):
        if isinstance(x, torch.Tensor):
            return tuple(out[0] for out in self([x]))
        views = list(x)
        sizes = [len(v) for v in views]
        embeddings, regions = [], []
        for start, end in resolution_groups(views):
            view, region = view_and_regions(self.backbone, torch.cat(views[start:end]))
            embeddings.append(view)
            regions.extend(region.split(sizes[start:end]))  # per view (b, n_v, d)
        # (N, d): N images over all views
        embedding = torch.cat(embeddings)
        # every region of every view is a row: (sum over views of b * n_v, d)
        rows = torch.cat([r.flatten(0, 1) for r in regions])
        counts = [r.shape[0] * r.shape[1] for r in regions]
        # per view (b, n_v, K)
        region_logits = [
            out.unflatten(0, r.shape[:2])
            for out, r in zip(self.region_head(rows).split(counts), regions)
        ]
        logits = self.head(embedding)
        return embedding.split(sizes), logits.split(sizes), regions, region_logits


# --------------------------------------------------------------------------- matching
def match_regions(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    match: str = "cosine",
) -> torch.Tensor:
    """For every student region, the index of its most similar teacher region.

    ``student_features`` ``(b, n_s, d)``, ``teacher_features`` ``(b, n_t, d)`` ->
    ``(b, n_s)`` indices into the teacher's regions of the same image. ``"cosine"``
    (the official code) L2-normalizes each feature vector before the dot product, so
    only directions count; ``"dot"`` (the seed) uses the raw dot product, where a
    teacher region with a long feature vector wins for many student regions.
    """
    if match not in MATCHES:
        raise ValueError(f"match={match!r} is not one of {MATCHES}")
    dtype = torch.promote_types(student_features.dtype, torch.float32)
    student_features, teacher_features = (
        f.to(dtype) for f in (student_features, teacher_features)
    )
    if match == "cosine":
        student_features = F.normalize(student_features, dim=-1)
        teacher_features = F.normalize(teacher_features, dim=-1)
    sim = student_features @ teacher_features.transpose(1, 2)  # (b, n_s, n_t)
    return sim.argmax(dim=-1)


def region_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    student_temp: float,
    match: str = "cosine",
) -> torch.Tensor:
    """Region-level cross-entropy for one (teacher view, student view) pair.

    ``student_logits`` ``(b, n_s, K)``; ``teacher_probs`` ``(b, n_t, K)``, already
    centered and sharpened; the features ``(b, n_s, d)`` and ``(b, n_t, d)`` decide
    which teacher region each student region learns from (:func:`match_regions`).
    Returns the cross-entropy summed over ``K``, averaged over regions and images.
    """
    index = match_regions(student_features, teacher_features, match)  # (b, n_s)
    k = teacher_probs.shape[-1]
    target = teacher_probs.gather(1, index[..., None].expand(-1, -1, k))  # (b, n_s, K)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # no half softmax
    log_p_s = F.log_softmax(student_logits.to(dtype) / student_temp, dim=-1)
    return -(target.detach().to(dtype) * log_p_s).sum(dim=-1).mean()


def esvit_loss(
    student_view: torch.Tensor,
    teacher_view: torch.Tensor,
    student_regions: list[torch.Tensor],
    teacher_regions: list[torch.Tensor],
    student_features: list[torch.Tensor],
    teacher_features: list[torch.Tensor],
    center: torch.Tensor,
    region_center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
    match: str = "cosine",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EsViT's loss: ``0.5 * view + 0.5 * region``, each averaged over the pairs
    (teacher view ``i``, student view ``v != i``). Returns ``(loss, view, region)``.

    View level: ``student_view`` ``(n_s, b, K)`` and ``teacher_view`` ``(n_t, b, K)``
    logits, as :func:`vitbook.ssl.dino.dino_loss` takes them (global views first).
    Region level: per view a ``(b, n_v, K)`` logits tensor and a ``(b, n_v, d)``
    features tensor (the number of regions ``n_v`` may differ between global and
    local views); the teacher's region logits are centered with ``region_center``
    and sharpened at ``teacher_temp``.
    """
    view = dino_loss(student_view, teacher_view, center, student_temp, teacher_temp)
    dtype = torch.promote_types(student_view.dtype, torch.float32)
    total, pairs = student_view.new_zeros((), dtype=dtype), 0
    for i, (t_logits, t_feat) in enumerate(zip(teacher_regions, teacher_features)):
        t_logits = t_logits.to(dtype) - region_center
        t_probs = F.softmax(t_logits / teacher_temp, dim=-1)
        for v, (s_logits, s_feat) in enumerate(zip(student_regions, student_features)):
            if v == i:  # the same crop: nothing to learn from matching it
                continue
            total = total + region_loss(
                s_logits, t_probs, s_feat, t_feat, student_temp, match
            )
            pairs += 1
    region = total / pairs
    return 0.5 * view + 0.5 * region, view, region


# --------------------------------------------------------------------------- method
class EsViT(SelfDistillation):
    """``loss = esvit(images)``; ``esvit.step_teacher()`` after each optimizer step
    (``fit`` does it); ``esvit.backbone`` and ``esvit.teacher_backbone`` are the
    student's and the EMA teacher's backbones, for evaluation.

    The official recipe (microsoft/esvit): the teacher sees the 2 global crops, the
    student every crop; student temperature 0.1, teacher temperature warmed up from
    ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_steps``
    (None: the first 10% of ``total_steps``, as the README's runs); the heads' last
    layers frozen for the first ``freeze_last_layer_steps`` optimizer steps (``fit``
    calls :meth:`after_backward`; the official code freezes them for one epoch);
    teacher momentum from ``momentum`` to ``final_momentum`` along a cosine over
    ``total_steps``; view and region centers, each an EMA (``center_momentum``) of
    the teacher's mean output. ``region_weight=0`` leaves only the view task (DINO on
    the same backbone, pooled as the backbone pools); ``match="dot"`` matches regions
    the seed's way. ``use_bn`` puts BatchNorm in the hidden layers of both heads (the
    official ``--use_bn_in_head``); each head runs once per forward over every crop it
    sees (the student's all crops, the teacher's the 2 global ones; the region head
    over every region of those crops), so BatchNorm takes its statistics over all of
    them. The centers are averaged over every rank's batch under ``torchrun``. After
    each training forward ``esvit.metrics`` holds the collapse diagnostics (as
    :class:`vitbook.ssl.DINO`'s) and the two halves of the loss.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        total_steps: int,
        global_size,
        local_size,
        num_local: int = 8,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = False,
        use_bn: bool = False,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int | None = None,
        freeze_last_layer_steps: int = 0,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        center_momentum: float = 0.9,
        region_weight: float = 0.5,
        match: str = "cosine",
        multicrop: MultiCrop | None = None,
        seed: int = 0,
        **crop_kwargs,
    ):
        # checks and keeps the temperatures, the step counts and the center momentum
        super().__init__(
            total_steps=total_steps,
            student_temp=student_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp,
            warmup_teacher_temp_steps=warmup_teacher_temp_steps,
            warmup_teacher_temp_fraction=WARMUP_TEACHER_TEMP_FRACTION,
            freeze_last_layer_steps=freeze_last_layer_steps,
            center_momentum=center_momentum,
        )
        if not 0.0 <= region_weight <= 1.0:
            raise ValueError(f"region_weight={region_weight} must be in [0, 1]")
        if match not in MATCHES:
            raise ValueError(f"match={match!r} is not one of {MATCHES}")
        self.region_weight, self.match = region_weight, match
        self.multicrop = multicrop or MultiCrop(
            global_size, local_size, num_local, seed=seed, **crop_kwargs
        )
        heads = [
            DINOHead(
                backbone.num_features,
                out_dim,
                hidden_dim=hidden_dim,
                bottleneck_dim=bottleneck_dim,
                nlayers=nlayers,
                norm_last_layer=norm_last_layer,
                use_bn=use_bn,
            )
            for _ in ("view", "region")
        ]
        self.student = DenseProjected(backbone, *heads)
        self.teacher = EMATeacher(
            self.student, base=momentum, final=final_momentum, total_steps=total_steps
        )
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("region_center", torch.zeros(1, out_dim))
        self.metrics: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = self.multicrop(images)  # [global 1, global 2, local 1, ...]
        # per view: view feature, view logits, region features, region logits
        t_emb, t_view, t_feat, t_regions = self.teacher(views[:2])
        s_emb, s_view, s_feat, s_regions = self.student(views)
        t_temp = self.current_teacher_temp
        t_view = torch.stack(t_view).float()  # (2, b, K)
        loss, view, region = esvit_loss(
            torch.stack(s_view),
            t_view,
            s_regions,
            t_regions,
            s_feat,
            t_feat,
            self.center,
            self.region_center,
            self.student_temp,
            t_temp,
            self.match,
        )
        if self.region_weight != 0.5:  # 0.5 / 0.5 is the official loss itself
            loss = (1 - self.region_weight) * view + self.region_weight * region
        if self.training:
            self._diagnose(view, region, t_view, t_temp, torch.cat(s_emb[:2]))
            self.update_centers(t_view, torch.cat(t_regions, dim=1))
        return loss

    @torch.no_grad()
    def update_centers(
        self, teacher_view: torch.Tensor, teacher_regions: torch.Tensor
    ) -> None:
        """EMA of the teacher's mean view output ``(..., K)`` (over images and both
        views) and, separately, of its mean region output ``(..., K)`` (over images,
        views and regions), each over the batch of every rank
        (:meth:`ema_center_`)."""
        self.ema_center_(self.center, teacher_view)
        self.ema_center_(self.region_center, teacher_regions)

    @torch.no_grad()
    def _diagnose(self, view, region, teacher_view, t_temp, student_emb) -> None:
        # the view loss's teacher entropy and KL, as DINO's
        _, metrics = distillation_metrics(view, teacher_view, self.center, t_temp)
        self.metrics = {
            **metrics,
            "std": embedding_std(student_emb),
            "erank": effective_rank(student_emb),
            "view": view.detach(),
            "region": region.detach(),
        }

    @torch.no_grad()
    def correspondences(self, view_a: torch.Tensor, view_b: torch.Tensor):
        """The region matching the loss uses, between two batches of views: for every
        region of ``view_a``, the region of ``view_b`` whose teacher backbone feature
        is most similar (``match``), as the loss picks its targets. Returns ``(index
        (b, n_a), cosine (b, n_a) of each matched pair, grid_a, grid_b)``, the grids
        ``(h, w)`` of regions in each view, row-major as the indices count them."""
        backbone = self.teacher.module.backbone
        was = backbone.training
        backbone.eval()
        feats, grids = [], []
        for v in (view_a, view_b):
            feats.append(view_and_regions(backbone, v)[1])
            grids.append(region_grid(backbone, v))
        backbone.train(was)
        index = match_regions(feats[0], feats[1], self.match)
        a, b = (F.normalize(f.float(), dim=-1) for f in feats)
        cosine = (a @ b.transpose(1, 2)).gather(2, index[..., None])[..., 0]
        return index, cosine, grids[0], grids[1]


def true_correspondence(boxes_a, boxes_b, grid_a, grid_b):
    """Where each region of view A really is in view B: for the ``(h_a, w_a)`` regions
    of crops ``boxes_a`` ``(b, 4)`` (``x1, y1, x2, y2`` in the image's pixels, as
    :class:`MultiCrop` records them in ``last_boxes``), the index of the region of
    ``boxes_b``'s ``(h_b, w_b)`` grid that contains the same image point (the
    region's centre), and whether that point lies inside crop B at all. Returns
    ``(index (b, n_a), inside (b, n_a))``; valid for crops without a flip."""
    (ha, wa), (hb, wb) = grid_a, grid_b
    # (b, n_a): each region's centre in the image, regions row-major
    u = ((torch.arange(wa) + 0.5) / wa).repeat(ha)
    v = ((torch.arange(ha) + 0.5) / ha).repeat_interleave(wa)
    ax1, ay1, ax2, ay2 = (t[:, None] for t in boxes_a.float().unbind(1))
    x, y = ax1 + u * (ax2 - ax1), ay1 + v * (ay2 - ay1)
    # the same points as fractions of crop B
    bx1, by1, bx2, by2 = (t[:, None] for t in boxes_b.float().unbind(1))
    fx, fy = (x - bx1) / (bx2 - bx1), (y - by1) / (by2 - by1)
    inside = (fx >= 0) & (fx < 1) & (fy >= 0) & (fy < 1)
    col = (fx * wb).floor().clamp(0, wb - 1).long()
    row = (fy * hb).floor().clamp(0, hb - 1).long()
    return row * wb + col, inside


def region_grid(backbone: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The ``(h, w)`` grid of regions :func:`view_and_regions` gives for images ``x``
    (the last stage's map of a Swin, the patch grid of a ViT)."""
    if hasattr(backbone, "stages"):  # Swin: every merge halves the map, rounding up
        h, w = (s // p for s, p in zip(x.shape[-2:], backbone.patch_embed.patch_size))
        for _ in range(len(backbone.stages) - 1):
            h, w = -(-h // 2), -(-w // 2)
        return h, w
    patch = backbone.patch_embed.patch_size
    return tuple(s // p for s, p in zip(x.shape[-2:], patch))


__all__ = [
    "EsViT",
    "DenseProjected",
    "esvit_loss",
    "match_regions",
    "region_grid",
    "region_loss",
    "true_correspondence",
    "view_and_regions",
]
