"""Training: one ``fit`` for every chapter, classifiers and self-supervised methods
alike.

    history = fit(model, train.loader(256, shuffle=True), epochs=3,
                  eval_loader=test.loader(1024))
    history.plot()

``fit`` picks the device (cuda, then mps, then cpu), uses mixed precision on CUDA, shows
a progress bar (:mod:`vitbook.progress`: text on the page, no widget), stops at the
first budget reached (``epochs``, ``steps`` or ``seconds``), and returns a
:class:`History`. A seeded run on the CPU is
reproducible: the same seed gives the same history, number for number, on the same
number of threads (on a busy machine ``fit`` trains on fewer: :mod:`vitbook.threads`).
Judging the representations a run learned (k-NN, linear probe) is
:mod:`vitbook.probe`'s, whose names this module re-exports.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (public here too)
from .probe import (  # noqa: F401 (their home was here: train.NAME keeps working)
    RepresentationReport,
    extract_features,
    knn_accuracy,
    linear_probe,
    load_reports,
    representation_report,
    results_dir,
)

# History, StepLog, param_groups, clip_per_tensor_ were defined here: train.NAME works
from .history import History, StepLog, Tracker  # noqa: F401
from .optim import CLIP_MODES, Schedules, clip_per_tensor_, param_groups  # noqa: F401
from .schedules import Budget
from .threads import ThreadPlan

# get_device, scale, at_scale, seed_everything were defined here: train.NAME works
from .runtime import SCALES, at_scale, get_device, scale, seed_everything  # noqa: F401


# --------------------------------------------------------------------------- losses
def classification_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of ``model(images)`` against labels; reports accuracy too.

    Metrics may be tensors on the device: ``fit`` reads them only when it refreshes the
    progress bar, so a GPU is not made to wait on every step.
    """
    images, labels = batch
    logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    return loss, {"acc": (logits.argmax(-1) == labels).float().mean().detach()}


def self_supervised_loss(method: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """For methods whose forward returns their loss: ``loss = method(images)`` (labels
    unused), with the diagnostics the method left in ``method.metrics`` (tensors;
    ``fit`` reads them only when it logs). Under ``torchrun`` ``fit`` passes the method
    wrapped in DDP: the metrics are read from the wrapped module. Also importable as
    ``vitbook.ssl.method_loss``."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    loss = method(images)
    if isinstance(method, nn.parallel.DistributedDataParallel):
        method = method.module
    return loss, dict(getattr(method, "metrics", {}))


# the self-supervised chapters' name for it
method_loss = self_supervised_loss


def _batches_per_epoch(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return nullcontext(), None


def _precision(device: torch.device, amp: bool):
    """The forward's autocast and, for float16, the gradient scaler (else None)."""
    autocast, dtype = _autocast(device, amp)
    return autocast, torch.amp.GradScaler("cuda") if dtype == torch.float16 else None


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


# ------------------------------------------------ one step of the optimizer
def train_step(
    model: nn.Module,
    batch,
    loss: Callable,
    optimizer: torch.optim.Optimizer,
    autocast=None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    clip_mode: str = "global",
) -> tuple[torch.Tensor, dict]:
    """One optimizer step on ``batch``; returns what ``loss(model, batch)`` returned.

    The forward under ``autocast`` (mixed precision on CUDA); backward, through the
    ``scaler`` with float16; the gradients clipped to ``grad_clip``, all together
    (``clip_mode="global"``, ``clip_grad_norm_``) or each tensor on its own
    (``"per_tensor"``, DINO's way: :func:`clip_per_tensor_`); ``after_backward()`` when
    the model has one (DINO sets its last layer's gradient to None in the first epoch,
    so the optimizer leaves it alone); the optimizer step; ``step_teacher()`` when the
    model has one (EMA teachers). ``model`` may be wrapped in DDP: the hooks are the
    wrapped module's.
    """
    with autocast or nullcontext():
        value, metrics = loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(value).backward()
        # clipping and the hooks see the true gradients
        scaler.unscale_(optimizer)
    else:
        value.backward()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if grad_clip is not None and clip_mode == "per_tensor":
        clip_per_tensor_(model.parameters(), grad_clip)
    elif grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if hasattr(model, "after_backward"):
        model.after_backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if hasattr(model, "step_teacher"):
        model.step_teacher()
    return value, metrics


# ------------------------------------------------ where a run stands
@dataclass
class RunState:
    """Where a run stands: ``step`` optimizer steps done, in epoch ``epoch`` (from 1)
    of which ``batch`` batches are taken, the loader at its epoch ``loader_epoch``
    (its shuffle) when this one began; ``finished`` once the budget is spent. A
    checkpoint saves it and a resumed run goes on from it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    loader_epoch: int | None = None
    finished: bool = False


def batches_left(loader, state: RunState):
    """The batches a run has still to train on, epoch after epoch without end, and
    None after each epoch's last; ``state``'s epoch and batch move along with them.

    A resumed run goes on in the epoch it stopped in: the loader set back to that
    epoch's shuffle, the batches trained on before skipped.
    """
    while True:
        if state.batch == 0:
            state.epoch += 1
            state.loader_epoch = getattr(loader, "epoch", None)
        elif state.loader_epoch is not None:
            loader.epoch = state.loader_epoch
        taken = state.batch
        for i, batch in enumerate(loader):
            if i >= taken:
                state.batch = i + 1
                yield batch
        yield None
        state.batch = 0


# --------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    loader,
    *,
    epochs: float | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    weight_decay_end: float | None = None,
    warmup: float = 0.1,
    loss: Callable = classification_loss,
    optimizer: torch.optim.Optimizer | None = None,
    eval_loader=None,
    device: torch.device | str | None = None,
    amp: bool = True,
    grad_clip: float | None = 1.0,
    clip_mode: str = "global",
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    checkpoint=None,
    checkpoint_every: int | None = None,
    eval_every: int | None = None,
) -> History:
    """Train ``model`` until the first of ``epochs``, ``steps`` or ``seconds`` runs out.

    ``loss(model, batch) -> (loss, metrics)``: :func:`classification_loss` by default,
    :func:`self_supervised_loss` for methods whose forward returns their loss. Unless
    an ``optimizer`` is given, AdamW (:func:`param_groups`), the learning rate warmed up
    over the first ``warmup`` of the run, then a cosine to zero; with
    ``weight_decay_end`` the weight decay follows a cosine to it (DINO: 0.04 to 0.4).
    Only a ``seconds`` budget makes both follow the clock (not reproducible). Each step
    is one :func:`train_step`.

    ``checkpoint=path``: the whole training state is written every ``checkpoint_every``
    steps and at the end (:mod:`vitbook.checkpoint`); the same call again resumes and
    ends exactly as an uninterrupted run would. Under ``torchrun`` the same call trains
    data-parallel (:mod:`vitbook.distributed`), each rank with its own random draws.
    ``eval_loader`` is evaluated after every epoch and, with ``eval_every=n``, every
    ``n`` steps; ``history.evals`` records the training seconds before each.
    """
    budget = Budget(epochs, steps, seconds, batches=_batches_per_epoch(loader))
    _check_options(eval_every, eval_loader, checkpoint_every, checkpoint, seconds)
    _check_optimizer(clip_mode, weight_decay_end)
    device, loader = _place(model, loader, device, seed)
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedules = Schedules(optimizer, warmup, weight_decay, weight_decay_end)
    autocast, scaler = _precision(device, amp)
    # DDP under torchrun, else the model itself
    trained = distributed.wrap(model, device)
    # what a checkpoint must have been written by to be resumed by this call
    run = dict(epochs=epochs, steps=steps, lr=lr, weight_decay=weight_decay, seed=seed)
    run |= dict(warmup=warmup, grad_clip=grad_clip, batches=budget.batches)
    run |= dict(weight_decay_end=weight_decay_end, clip_mode=clip_mode)
    history, state = _resume(checkpoint, model, optimizer, scaler, run)
    if state.finished:
        return history
    save = partial(ckpt.save_run, checkpoint, model, optimizer, run=run, scaler=scaler)
    judge = None
    if eval_loader is not None:
        judge = partial(evaluate, model, eval_loader, device=device, amp=amp)
    # on the CPU, the threads the other processes leave free (vitbook.threads)
    threads = ThreadPlan(device).start()
    tracker = Tracker(history, budget, state, lr, judge, desc, progress, threads)

    # a run killed after its last step but before its last evaluation only evaluates
    done = state.batch > 0 and tracker.spent(state)
    # the bar is closed and the threads set back even when a non-finite loss stops it
    with tracker:
        for batch in () if done else batches_left(loader, state):
            if batch is None:  # an epoch ended
                tracker.end_epoch(state)
                continue
            scheduled = schedules.set(tracker.fraction(state))
            batch = _to(batch, device)
            value, metrics = train_step(
                trained, batch, loss, optimizer, autocast, scaler, grad_clip, clip_mode
            )
            state.step += 1
            row = {"step": state.step, "epoch": state.epoch, **scheduled}
            tracker.add(row, value, metrics)
            # (not when the budget is spent: the last evaluation follows)
            if eval_every and state.step % eval_every == 0 and not tracker.spent(state):
                tracker.evaluate(state)
            if checkpoint_every and state.step % checkpoint_every == 0:
                save(at=state, history=tracker.snapshot())
            if tracker.spent(state):
                break
        tracker.end_epoch(state)
    history.seconds = tracker.elapsed()
    if checkpoint is not None:
        # the last epoch is over, and with it the run
        state.batch, state.finished = 0, True
        save(at=state, history=history)
    return history


def _check_options(eval_every, eval_loader, checkpoint_every, checkpoint, seconds):
    if eval_every is not None and (eval_loader is None or eval_every < 1):
        raise ValueError(
            f"eval_every={eval_every} needs eval_loader= and must be >= 1 (steps)"
        )
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError(
            f"checkpoint_every={checkpoint_every} needs checkpoint=path and must be >= "
            "1"
        )
    if checkpoint is not None and seconds is not None:
        raise ValueError(
            "checkpoint= cannot resume a seconds= budget exactly (its schedule follows "
            "the clock): give steps= or epochs="
        )


def _check_optimizer(clip_mode: str, weight_decay_end: float | None) -> None:
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode={clip_mode!r} must be one of {CLIP_MODES}")
    if weight_decay_end is not None and weight_decay_end < 0:
        raise ValueError(f"weight_decay_end={weight_decay_end} must be >= 0")


def _place(model: nn.Module, loader, device, seed: int):
    """Put ``model`` on its device in training mode and seed its random draws; under
    ``torchrun`` also join the process group and give this rank its shard of the
    loader's batches. Returns the device and the loader.

    Under ``torchrun`` every rank draws its own dropout, masks and crops: torch is
    seeded with ``seed + rank`` and every module with a ``reseed`` method
    (``MultiCrop``) is reseeded with its own ``seed + rank``, as MAE's code seeds. A
    single process draws what it always drew: torch seeded with ``seed``, the modules'
    generators left where they are.
    """
    device = get_device() if device is None else torch.device(device)
    parallel = distributed.setup(device)
    device = distributed.local_device(device)
    if parallel and hasattr(loader, "shard"):
        loader = loader.shard(distributed.rank(), distributed.world_size())
    model.to(device).train()
    torch.manual_seed(seed + distributed.rank())
    if parallel:
        for module in model.modules():
            if hasattr(module, "reseed"):
                module.reseed(module.seed + distributed.rank())
    return device, loader


def _resume(checkpoint, model, optimizer, scaler, run) -> tuple[History, RunState]:
    """The history and state a checkpoint at ``checkpoint`` left, loaded with its
    weights, optimizer, scaler and random generators; a fresh start when there is
    none."""
    saved = (
        None
        if checkpoint is None
        else ckpt.resume_run(checkpoint, model, optimizer, run)
    )
    if saved is None:
        return History(), RunState()
    if scaler is not None and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    return History(**saved["history"]), RunState(**saved["at"])


# --------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, amp: bool = True) -> dict:
    """Mean cross-entropy and accuracy of a classifier over a loader: ``{"loss": ...,
    "acc": ...}``."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    autocast, _ = _autocast(device, amp)
    total, loss_sum, correct = 0, torch.zeros((), device=device, dtype=torch.float64), 0
    for images, labels in loader:
        images, labels = _to(images, device), _to(labels, device)
        with autocast:
            logits = model(images).float()
        # summed on the device: read once, at the end
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(-1) == labels).sum()
        total += len(labels)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss_sum.item() / total, "acc": int(correct) / total}


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Logits for a tensor of (normalized) images, in batches, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat(
        [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )
    model.train(was_training)
    return out
