"""Schedules shared by ``train.fit`` (weight decay) and the self-supervised methods
(EMA momentum, teacher temperature): plain functions of the step, so a resumed run
needs nothing but the step count to find its place again."""

from __future__ import annotations

import math


def cosine_schedule(base: float, final: float, step: int, total_steps: int) -> float:
    """``base`` at step 0, ``final`` at ``total_steps`` (and after), half a cosine
    between: DINO's momentum ``1 - (1 - base) (cos(pi t / T) + 1) / 2`` when
    ``final=1``."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    t = min(step, total_steps) / total_steps
    return final + (base - final) * (1 + math.cos(math.pi * t)) / 2


def linear_warmup(start: float, end: float, step: int, warmup_steps: int) -> float:
    """``start`` rising linearly to ``end`` over ``warmup_steps``, then ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


__all__ = ["cosine_schedule", "linear_warmup"]
