"""Collapse diagnostics: numbers that tell a self-supervised run that still tells
images apart from one whose outputs all became the same.

    effective_rank(z)  # (n, d) -> 1 when collapsed, up to d when spread out
    embedding_std(z)   # (n, d) -> 0 when collapsed, about 1/sqrt(d) when spread out
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def effective_rank(embeddings: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank of a ``(n, d)`` matrix: ``exp`` of the entropy
    of its normalized singular values; 1 when every row points the same way, ``d`` when
    all directions are used equally."""
    s = torch.linalg.svdvals(embeddings.float())
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std of the L2-normalized embeddings (SimSiam's
    collapse check): about ``1/sqrt(d)`` when spread out, 0 when collapsed."""
    return F.normalize(embeddings.float(), dim=-1).std(dim=0).mean()


__all__ = ["effective_rank", "embedding_std"]
