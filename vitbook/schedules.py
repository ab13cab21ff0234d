"""Schedules shared by ``train.fit`` (learning rate, weight decay) and the
self-supervised methods (EMA momentum, teacher temperature): plain functions of the
step, so a resumed run needs nothing but the step count to find its place again; and
the :class:`Budget` that says how much of a ``fit`` run is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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


def warmup_cosine(fraction: float, warmup: float) -> float:
    """``fit``'s learning rate, as a multiple of the base one, once ``fraction`` of
    the run is done: from 0 up to 1 along :func:`linear_warmup` over the first
    ``warmup`` of the run, then down to 0 along :func:`cosine_schedule` over the rest.
    """
    if fraction < warmup:
        return linear_warmup(0.0, 1.0, fraction, warmup)
    # the cosine's own clock: 0 where the warm-up ends, 1 at the end of the run
    # (1e-8: warmup=1 leaves the cosine no time at all)
    t = (fraction - warmup) / max(1e-8, 1.0 - warmup)
    return cosine_schedule(1.0, 0.0, t, total_steps=1)


@dataclass
class Budget:
    """How long ``fit`` trains: until the first of ``epochs``, ``steps`` or ``seconds``
    runs out. ``batches``: the loader's batches per epoch (None without a length)."""

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    batches: int | None = None

    def __post_init__(self):
        if self.epochs is None and self.steps is None and self.seconds is None:
            raise ValueError("fit needs a budget: epochs=, steps= or seconds=")
        for name in ("epochs", "steps", "seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} must be positive")
        if self.epochs is not None and self.batches is None:
            raise ValueError(
                "epochs= needs a loader with a length; pass steps= or seconds= instead"
            )
        if self.batches == 0:
            raise ValueError(
                "the loader yields no batches (batch_size larger than the dataset with "
                "drop_last?)"
            )

    @property
    def total_steps(self) -> int | None:
        """The steps the run takes; None when only the clock ends it."""
        budgets = [] if self.steps is None else [self.steps]
        if self.epochs is not None:
            budgets.append(self.epochs * self.batches)
        return int(min(budgets)) if budgets else None

    def fraction(self, step: int, elapsed: float) -> float:
        """How much of the budget ``step`` steps and ``elapsed`` seconds have spent,
        from 0 to 1: the steps' share, or the clock's when it runs out first (the
        schedules follow it)."""
        total = self.total_steps
        fraction = step / total if total else 0.0
        if self.seconds is not None:
            fraction = max(fraction, elapsed / self.seconds)
        return min(fraction, 1.0)

    def spent(self, step: int, elapsed: float) -> bool:
        total = self.total_steps
        return (total is not None and step >= total) or (
            self.seconds is not None and elapsed >= self.seconds
        )


__all__ = ["cosine_schedule", "linear_warmup", "warmup_cosine", "Budget"]
