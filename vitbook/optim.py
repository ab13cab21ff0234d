"""The optimizer as the papers train: AdamW groups that decay the weight matrices only,
DINO's per-tensor gradient clipping, and the schedules of the learning rate (warm-up,
then cosine) and of the weight decay (cosine, DINO's 0.04 -> 0.4)."""

from __future__ import annotations

import torch
from torch import nn

from .schedules import cosine_schedule, warmup_cosine


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the papers train: decay the weight matrices only.

    Not decayed: every 1-D parameter (LayerNorm gains and shifts, biases) and every name
    a module's ``no_weight_decay()`` returns (position embeddings, class tokens, Swin's
    bias tables), found on the model and on every sub-module (a self-supervised method's
    backbone), so a method that wraps a backbone inherits its rules.
    """
    skip = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            skip |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


CLIP_MODES = ("global", "per_tensor")


@torch.no_grad()
def clip_per_tensor_(parameters, max_norm: float) -> torch.Tensor:
    """Clip every parameter's gradient to the L2 norm ``max_norm`` on its own, as
    DINO's ``clip_gradients``: a gradient of norm ``n`` is multiplied by ``max_norm /
    (n + 1e-6)`` when that is below 1 and left as it is otherwise. Unlike
    ``clip_grad_norm_`` (one norm over all gradients), a large gradient in one tensor
    does not shrink the others. Returns the norms before clipping, one per parameter
    that has a gradient ``(k,)``."""
    if max_norm <= 0:
        raise ValueError(f"max_norm={max_norm} must be positive")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    norms = []
    for p in parameters:
        if p.grad is None:
            continue
        norm = torch.linalg.vector_norm(p.grad)
        # min(coef, 1) for DINO's `if coef < 1`: the same numbers (x * 1.0 is x),
        # without reading the norm on the host, which would wait for the GPU
        p.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        norms.append(norm)
    return torch.stack(norms) if norms else torch.zeros(0)


class Schedules:
    """Sets the learning rate of every param group, and with ``weight_decay_end`` the
    weight decay of the groups that have some (DINO's ``param_groups[0]``), for the
    fraction of the run done."""

    def __init__(self, optimizer, warmup: float, weight_decay: float, weight_decay_end):
        self.optimizer, self.warmup = optimizer, warmup
        self.weight_decay, self.weight_decay_end = weight_decay, weight_decay_end
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.decayed = [g["weight_decay"] > 0 for g in optimizer.param_groups]
        if weight_decay_end is not None and not any(self.decayed):
            raise ValueError(
                f"weight_decay_end={weight_decay_end} schedules the param groups whose "
                "weight decay is > 0, and the optimizer has none (weight_decay=0?)"
            )

    def set(self, fraction: float) -> dict:
        """Set them for ``fraction`` of the run; the values for the step's row."""
        factor = warmup_cosine(fraction, self.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        row = {"lr": self.base_lrs[0] * factor}
        if self.weight_decay_end is not None:
            # over the same fraction: the steps done, or the clock's share (seconds=)
            wd = cosine_schedule(
                self.weight_decay, self.weight_decay_end, fraction, total_steps=1
            )
            for group, scheduled in zip(self.optimizer.param_groups, self.decayed):
                if scheduled:
                    group["weight_decay"] = wd
            row["wd"] = wd
        return row


__all__ = ["param_groups", "clip_per_tensor_", "Schedules"]
