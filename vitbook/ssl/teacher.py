"""The EMA teacher: a copy of the student that follows it as a moving average.

    teacher = EMATeacher(student, base=0.996, final=1.0, total_steps=1000)
    loss = method(images)  # the teacher's outputs are the targets
    ...                    # backward, optimizer step
    teacher.update(student)

BYOL's target network is one; DINO and EsViT add the rest of self-distillation around
it (:class:`SelfDistillation`): the teacher temperature and its warm-up, the frozen
last layer and the EMA center. The momentum and warm-up schedules are
:mod:`vitbook.schedules`' (re-exported here).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import distributed
from ..schedules import cosine_schedule, linear_warmup


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameter by
    parameter; buffers (BatchNorm statistics) are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum={momentum} must be in [0, 1]")
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


class EMATeacher(nn.Module):
    """A copy of ``student`` that follows it as an exponential moving average and never
    receives gradients (its parameters have ``requires_grad=False``, so ``fit``'s
    optimizer does not see them).

    The momentum follows :func:`cosine_schedule` from ``base`` to ``final`` over
    ``total_steps`` updates (DINO, BYOL: 0.996 -> 1); ``final=base`` keeps it constant
    (the seed: 0.9). The step count is a buffer, so it travels with a checkpoint.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        base: float = 0.996,
        final: float = 1.0,
        total_steps: int = 1000,
    ):
        super().__init__()
        for name, value in (("base", base), ("final", final)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} momentum {value} must be in [0, 1]")
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be >= 1")
        self.base, self.final, self.total_steps = base, final, total_steps
        self.module = copy.deepcopy(student).requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` uses."""
        return cosine_schedule(self.base, self.final, int(self.step), self.total_steps)

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """One EMA step toward ``student``; returns the momentum used."""
        m = self.momentum
        ema_update_(self.module, student, m)
        self.step += 1
        return m

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)


class SelfDistillation(nn.Module):
    """What DINO and EsViT share around their EMA teacher: ``backbone`` (the
    student's) and ``teacher_backbone`` (the EMA teacher's), for evaluation;
    ``step_teacher()`` (``fit`` calls it after each optimizer step);
    ``after_backward()`` (``fit`` calls it between the backward pass and the optimizer
    step), which keeps the heads' last layer frozen for the first
    ``freeze_last_layer_steps`` steps; the teacher temperature, warmed up linearly
    from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_steps`` (None: ``warmup_teacher_temp_fraction`` of
    ``total_steps``); and the EMA of a center over every rank's batch.

    The constructor checks and keeps the temperatures, step counts and center
    momentum; a subclass then sets ``student`` (with a ``backbone``) and ``teacher``
    (an :class:`EMATeacher` of it).

    Every step count is the teacher's (``teacher.step``, one per optimizer step), a
    buffer: a checkpoint carries it, so a resumed run keeps its temperature and its
    frozen layer where they were."""

    student: nn.Module
    teacher: EMATeacher

    def __init__(
        self,
        *,
        total_steps: int,
        student_temp: float,
        teacher_temp: float,
        warmup_teacher_temp: float,
        warmup_teacher_temp_steps: int | None,
        warmup_teacher_temp_fraction: float,
        freeze_last_layer_steps: int,
        center_momentum: float,
    ):
        super().__init__()
        for name, value in (
            ("student_temp", student_temp),
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
        ):
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum={center_momentum} must be in [0, 1]")
        if warmup_teacher_temp_steps is None:
            share = warmup_teacher_temp_fraction
            warmup_teacher_temp_steps = round(share * total_steps)
        for name, value in (
            ("warmup_teacher_temp_steps", warmup_teacher_temp_steps),
            ("freeze_last_layer_steps", freeze_last_layer_steps),
        ):
            if value < 0:
                raise ValueError(f"{name}={value} must be >= 0")
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_steps = warmup_teacher_temp_steps
        self.freeze_last_layer_steps = freeze_last_layer_steps
        self.center_momentum = center_momentum

    @property
    def backbone(self) -> nn.Module:
        return self.student.backbone

    @property
    def teacher_backbone(self) -> nn.Module:
        """The EMA teacher's backbone: the official k-NN evaluation reads the teacher
        (``eval_knn.py --checkpoint_key teacher``)."""
        return self.teacher.module.backbone

    @property
    def current_teacher_temp(self) -> float:
        return linear_warmup(
            self.warmup_teacher_temp,
            self.teacher_temp,
            int(self.teacher.step),
            self.warmup_teacher_temp_steps,
        )

    def step_teacher(self) -> None:
        self.teacher.update(self.student)

    def after_backward(self) -> None:
        """Drop the gradients of the heads' last layer (every student parameter with
        ``last_layer`` in its name) while fewer than ``freeze_last_layer_steps``
        optimizer steps have been taken: the optimizer then leaves that layer as it
        is, weight decay included. The official ``cancel_gradients_last_layer`` does
        this during the first epoch, when a moving output layer makes training
        unstable."""
        if int(self.teacher.step) >= self.freeze_last_layer_steps:
            return
        for name, p in self.student.named_parameters():
            if "last_layer" in name:
                p.grad = None

    @torch.no_grad()
    def ema_center_(self, center: torch.Tensor, outputs: torch.Tensor) -> None:
        """``center <- m * center + (1 - m) * mean``, the mean of ``outputs`` ``(...,
        K)`` over every leading dimension and over every rank's batch (the official
        ``update_center``: a sum all-reduced, divided by the rows on all ranks), so
        that the center is the same on every rank."""
        rows = outputs.float().flatten(0, -2)  # (n, K)
        total = distributed.sum_over_ranks(rows.sum(dim=0, keepdim=True))  # (1, K)
        batch_center = total / (len(rows) * distributed.world_size())
        m = self.center_momentum
        center.mul_(m).add_(batch_center, alpha=1 - m)


__all__ = [
    "cosine_schedule",
    "linear_warmup",
    "ema_update_",
    "EMATeacher",
    "SelfDistillation",
]
