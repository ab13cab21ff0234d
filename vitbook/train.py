"""Training: one ``fit`` for every chapter, classifiers and self-supervised methods
alike.

    history = fit(model, train.loader(256, shuffle=True), epochs=3,
                  eval_loader=test.loader(1024))
    history.plot()

``fit`` picks the device (cuda, then mps, then cpu), uses mixed precision on CUDA, shows
a ``tqdm.auto`` progress bar, stops at the first budget reached (``epochs``, ``steps``
or ``seconds``), and returns a :class:`History`. A seeded run on the CPU is
reproducible: the same seed gives the same history, number for number. Judging the
representations a run learned (k-NN, linear probe) is :mod:`vitbook.probe`'s, whose
names this module re-exports.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

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
from .schedules import Budget, cosine_schedule, warmup_cosine

SCALES = ("small", "full")


# ------------------------------------------------ where and how big
def get_device(prefer: str | None = None) -> torch.device:
    """``cuda`` if there is a GPU, else Apple's ``mps``, else ``cpu`` (``prefer``
    overrides)."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def scale() -> str:
    """``"full"`` on a GPU, ``"small"`` elsewhere, unless ``$VITBOOK_SCALE`` names one.

    Every chapter sizes its models and budgets from this one switch; both scales run the
    same code, the full one is only bigger and longer.
    """
    forced = os.environ.get("VITBOOK_SCALE")
    if forced:
        if forced not in SCALES:
            raise ValueError(f"VITBOOK_SCALE={forced!r} is not one of {SCALES}")
        return forced
    return "full" if torch.cuda.is_available() else "small"


def at_scale(small, full):
    """The value for the current :func:`scale`: ``at_scale(small=3, full=30)``."""
    return full if scale() == "full" else small


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (every device) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


# --------------------------------------------------------------------------- history
@dataclass
class History:
    """What ``fit`` saw: one row per optimizer step, one per evaluation."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run, evaluations included
    eval_seconds: float = 0.0  # of which evaluating

    @property
    def train_seconds(self) -> float:
        """Wall time spent training, evaluations excluded (each evaluation row's
        ``seconds`` is this clock when it was taken: the time-to-accuracy curve)."""
        return self.seconds - self.eval_seconds

    def last(self, key: str, default=None):
        for row in reversed(self.evals + self.steps):
            if key in row:
                return row[key]
        return default

    def accuracy_at(self, seconds: float) -> float | None:
        """The test accuracy of the last evaluation taken within ``seconds`` of
        training (None if there was none yet): one point of the time-to-accuracy
        curve."""
        reached = [r["test_acc"] for r in self.evals if r.get("seconds", 0) <= seconds]
        return reached[-1] if reached else None

    def plot(self, smooth: int = 20, title: str | None = None):
        """Loss per step (smoothed) and accuracy, train and test, side by side."""
        from . import viz

        return viz.plot_history(self, smooth=smooth, title=title)


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


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


# ------------------------------------------------ the optimizer and one step of it
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


class _Schedules:
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


# ------------------------------------------------ what the run saw
class _StepLog:
    """Per-step losses and metrics kept on the device, read in one transfer when
    flushed.

    Reading a CUDA tensor's value waits for the GPU; ``fit`` flushes only at the
    progress bar's refresh interval, at evaluations and at the end, and checks then that
    every loss since the last flush was finite. On the CPU the history is the same,
    number for number.
    """

    def __init__(self, history: "History", interval: float = 0.5, every=None):
        # every: flush every n steps instead of by the clock (data-parallel ranks must
        # flush at the same steps, since the flush averages over them)
        self.history, self.interval, self.every = history, interval, every
        self.pending: list[tuple[dict, torch.Tensor, dict]] = []
        self.last_flush = time.perf_counter()

    def add(self, row: dict, loss: torch.Tensor, metrics: dict) -> None:
        self.pending.append((row, loss.detach(), metrics))

    def due(self) -> bool:
        if self.every is not None:
            return len(self.pending) >= self.every
        return time.perf_counter() - self.last_flush >= self.interval

    def flush(self, lr: float) -> dict | None:
        """Move the pending rows into the history (losses and metrics averaged over
        data-parallel ranks); the newest row, or None if none waited."""
        if not self.pending:
            return None
        keys = list(self.pending[0][2])
        # (n, 1 + metrics): one read from the device for all
        table = torch.stack(
            [
                torch.stack(
                    [loss.float()]
                    + [
                        torch.as_tensor(m[k], dtype=torch.float32, device=loss.device)
                        for k in keys
                    ]
                )
                for _, loss, m in self.pending
            ]
        )
        table = distributed.mean_over_ranks(table).tolist()
        for (row, _, _), values in zip(self.pending, table):
            if not math.isfinite(values[0]):
                self.pending.clear()
                raise FloatingPointError(
                    f"loss became {values[0]} at step {row['step']}; lower lr (now "
                    f"{lr}) or check the data"
                )
            self.history.steps.append(
                {**row, "loss": values[0], **dict(zip(keys, values[1:]))}
            )
        self.pending.clear()
        self.last_flush = time.perf_counter()
        return self.history.steps[-1]


class _Tracker:
    """What a run saw and how far along it is: its history (the steps, logged by
    :class:`_StepLog`; the evaluations, taken by ``judge()`` and timed), its clock
    (going on from a resumed run's seconds), the share of its ``budget`` spent, and a
    progress bar that shows the newest of it (on rank 0, when ``show``)."""

    def __init__(self, history, budget, state, lr, judge=None, desc="", show=True):
        self.history, self.budget, self.lr, self.judge = history, budget, lr, judge
        # data-parallel ranks flush at the same steps, since a flush averages them
        every = 25 if distributed.active() else None
        self.log = _StepLog(history, every=every)
        self.bar = tqdm(
            total=budget.total_steps,
            initial=state.step,
            desc=desc,
            unit="step",
            disable=not (show and distributed.is_main()),
        )
        self.start = time.perf_counter() - history.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self, state: RunState) -> float:
        return self.budget.fraction(state.step, self.elapsed())

    def spent(self, state: RunState) -> bool:
        return self.budget.spent(state.step, self.elapsed())

    def add(self, row: dict, loss: torch.Tensor, metrics: dict) -> None:
        self.log.add(row, loss, metrics)
        self.bar.update(1)
        # the only place the device is waited for
        if self.log.due():
            self.flush()

    def flush(self) -> None:
        self._show(self.log.flush(self.lr))

    def evaluate(self, state: RunState) -> None:
        """Evaluate, and record it with the training seconds before it."""
        self.flush()
        trained_for = self.elapsed() - self.history.eval_seconds
        began = time.perf_counter()
        result = self.judge()
        self.history.eval_seconds += time.perf_counter() - began
        self.history.evals.append(
            {
                "step": state.step,
                "epoch": state.epoch,
                "seconds": trained_for,
                **{f"test_{k}": v for k, v in result.items()},
            }
        )
        newest = self.history.steps[-1] if self.history.steps else None
        self._show(newest, test_acc=f"{result['acc']:.3f}")

    def end_epoch(self, state: RunState) -> None:
        """Flush, and evaluate unless this step was just evaluated."""
        self.flush()
        evals = self.history.evals
        if self.judge is not None and not (evals and evals[-1]["step"] == state.step):
            self.evaluate(state)

    def _show(self, row: dict | None, **extra) -> None:
        if row is not None:
            shown = {
                k: f"{v:.3f}"
                for k, v in row.items()
                if k not in ("step", "epoch", "lr", "wd")
            }
            self.bar.set_postfix({**shown, **extra}, refresh=False)


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
    an ``optimizer`` is given, AdamW (weight decay on weight matrices only,
    :func:`param_groups`), its learning rate warmed up over the first ``warmup`` of the
    run, then decayed to zero along a cosine. With ``weight_decay_end`` the weight decay
    of every param group that has some follows a cosine from ``weight_decay`` to
    ``weight_decay_end`` (DINO: 0.04 to 0.4), recorded as ``"wd"`` in each row of
    ``history.steps``. With only a ``seconds`` budget both schedules follow the clock,
    so such a run is not reproducible. Each step is one :func:`train_step`.

    ``checkpoint=path``: the whole training state (weights, EMA teachers, optimizer,
    scaler, schedule position, every RNG, the modules' own generators included, the
    history) is written every ``checkpoint_every`` steps and at the end, atomically
    (:mod:`vitbook.checkpoint`); calling ``fit`` again with the same arguments resumes
    where the last one stopped and ends exactly as an uninterrupted run would.

    Under ``torchrun`` the same call trains data-parallel (:mod:`vitbook.distributed`),
    every rank drawing its own random numbers (:func:`_place`).

    ``eval_loader`` is evaluated after every epoch and, with ``eval_every=n``, also
    every ``n`` steps; each row of ``history.evals`` records the training seconds
    before it (evaluations excluded): accuracy against CPU time.
    """
    budget = Budget(epochs, steps, seconds, batches=_batches_per_epoch(loader))
    _check_options(eval_loader, eval_every, checkpoint, checkpoint_every, seconds)
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode={clip_mode!r} must be one of {CLIP_MODES}")
    if weight_decay_end is not None and weight_decay_end < 0:
        raise ValueError(f"weight_decay_end={weight_decay_end} must be >= 0")
    device, loader = _place(model, loader, device, seed)
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedules = _Schedules(optimizer, warmup, weight_decay, weight_decay_end)
    autocast, amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    # DDP under torchrun, else the model itself
    trained = distributed.wrap(model, device)
    run = dict(
        epochs=epochs,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        seed=seed,
        grad_clip=grad_clip,
        batches=budget.batches,
        weight_decay_end=weight_decay_end,
        clip_mode=clip_mode,
    )
    history, state = _resume(checkpoint, model, optimizer, scaler, run)
    if state.finished:
        return history
    save = partial(_save, checkpoint, model, optimizer, scaler, run)
    judge = None
    if eval_loader is not None:
        judge = partial(evaluate, model, eval_loader, device=device, amp=amp)
    tracker = _Tracker(history, budget, state, lr, judge, desc, show=progress)

    # a run killed after its last step but before its last evaluation only evaluates
    done = state.batch > 0 and tracker.spent(state)
    # the bar is closed even when a non-finite loss stops the run
    with tracker.bar:
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
                tracker.flush()
                history.seconds = tracker.elapsed()
                save(state, history)
            if tracker.spent(state):
                break
        tracker.end_epoch(state)
    history.seconds = tracker.elapsed()
    if checkpoint is not None:
        # the last epoch is over, and with it the run
        state.batch, state.finished = 0, True
        save(state, history)
    return history


def _check_options(eval_loader, eval_every, checkpoint, checkpoint_every, seconds):
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


def _save(checkpoint, model, optimizer, scaler, run, state, history) -> None:
    scaler_state = scaler.state_dict() if scaler is not None else {}
    ckpt.save_run(
        checkpoint,
        model,
        optimizer,
        run=run,
        at=asdict(state),
        history=asdict(history),
        scaler=scaler_state,
    )


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
