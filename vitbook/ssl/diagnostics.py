"""Collapse diagnostics: numbers that tell a self-supervised run that still tells
images apart from one whose outputs all became the same.

    effective_rank(z)  # (n, d) -> 1 when collapsed, up to d when spread out
    embedding_std(z)   # (n, d) -> 0 when collapsed, about 1/sqrt(d) when spread out
    p_t, metrics = distillation_metrics(loss, teacher_out, center, teacher_temp)

``distillation_metrics`` is what DINO and EsViT log: the teacher's entropy and the KL
that their cross-entropy loss splits into.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy (in nats) of each distribution ``probs`` ``(..., K)``, the last
    dimension summing to 1 -> ``(...)``. A zero probability adds nothing (its log is
    clamped, not -inf)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


@torch.no_grad()
def effective_rank(embeddings: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank of a ``(n, d)`` matrix: ``exp`` of the entropy
    of its normalized singular values; 1 when every row points the same way, ``d`` when
    all directions are used equally."""
    s = torch.linalg.svdvals(embeddings.float())
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(entropy(p))


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std of the L2-normalized embeddings (SimSiam's
    collapse check): about ``1/sqrt(d)`` when spread out, 0 when collapsed."""
    return F.normalize(embeddings.float(), dim=-1).std(dim=0).mean()


@torch.no_grad()
def distillation_metrics(
    loss: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    teacher_temp: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The teacher's distributions ``p_t = softmax((teacher_out - center) /
    teacher_temp)`` ``(..., K)`` (centered and sharpened, as the loss takes them) and
    the two parts of the distillation ``loss``: ``entropy``, the teacher's mean entropy,
    and ``kl``, the rest. Every teacher view meets the same number of student views, so
    the mean cross-entropy is the mean teacher entropy plus the mean KL(teacher ||
    student). A collapse shows in both: a uniform teacher has the largest entropy, a
    one-hot teacher none, and a student that matches a collapsed teacher has KL 0."""
    p_t = F.softmax((teacher_out - center) / teacher_temp, dim=-1)
    mean_entropy = entropy(p_t).mean()
    return p_t, {"entropy": mean_entropy, "kl": loss.detach() - mean_entropy}


__all__ = ["distillation_metrics", "effective_rank", "embedding_std", "entropy"]
