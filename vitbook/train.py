"""Training and evaluation: one ``fit`` for every chapter, classifiers and
self-supervised methods alike. Judging the representations a run learned (k-NN, linear
probe) is :mod:`vitbook.probe`'s, whose names this module re-exports.

    history = fit(model, train.loader(256, shuffle=True), epochs=3,
    eval_loader=test.loader(1024)) history.plot()

``fit`` picks the device (cuda, then mps, then cpu), uses mixed precision on CUDA, shows
a ``tqdm.auto`` progress bar, stops at the first budget reached (``epochs``, ``steps``
or ``seconds``), and returns a :class:`History`. A seeded run on the CPU is
reproducible: the same seed gives the same history, number for number.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
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
from .schedules import cosine_schedule

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


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction, then cosine decay to zero."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (
        1.0
        + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup)))
    )


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


# ------------------------------------------------ the optimizer
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
        table = torch.stack(
            [  # (n, 1 + metrics): one read from the device for all
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
    :func:`self_supervised_loss` for methods whose forward returns their loss. AdamW
    (weight decay on weight matrices only, see :func:`param_groups`) with linear warm-up
    and cosine decay unless an ``optimizer`` is given. With ``weight_decay_end`` the
    weight decay of every param group that has some follows a cosine from
    ``weight_decay`` to ``weight_decay_end``, step by step (DINO: 0.04 to 0.4), and each
    row of ``history.steps`` records it as ``"wd"``. With only a ``seconds`` budget both
    schedules follow the clock, so such a run is not reproducible.

    Every step: backward; the gradients unscaled (float16 on CUDA) and clipped to
    ``grad_clip``, all together (``clip_mode="global"``, ``clip_grad_norm_``) or each
    tensor on its own (``"per_tensor"``, DINO's way: :func:`clip_per_tensor_`);
    ``model.after_backward()`` when the model has one (DINO sets its last layer's
    gradient to None in the first epoch, so the optimizer leaves it alone); the
    optimizer step; ``model.step_teacher()`` when the model has one (EMA teachers).

    ``checkpoint=path``: the whole training state (weights, EMA teachers, optimizer,
    scaler, schedule position, every RNG, the modules' own generators included, the
    history) is written every ``checkpoint_every`` steps and at the end, atomically
    (:mod:`vitbook.checkpoint`); calling ``fit`` again with the same arguments resumes
    where the last one stopped and ends exactly as an uninterrupted run would.

    Under ``torchrun`` the same call trains data-parallel (:mod:`vitbook.distributed`),
    and every rank draws its own dropout, masks and crops: torch is seeded with
    ``seed + rank`` and every module with a ``reseed`` method (``MultiCrop``) is
    reseeded with its own ``seed + rank``, as MAE's code seeds. A single process draws
    what it always drew: torch seeded with ``seed``, the modules' generators left where
    they are.

    ``eval_loader`` is evaluated after every epoch and, with ``eval_every=n``, also
    every ``n`` steps; each row of ``history.evals`` records the training seconds
    before it (evaluations excluded): accuracy against CPU time.
    """
    if epochs is None and steps is None and seconds is None:
        raise ValueError("fit needs a budget: epochs=, steps= or seconds=")
    for name, value in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
        if value is not None and value <= 0:
            raise ValueError(f"{name}={value} must be positive")
    if eval_every is not None and (eval_loader is None or eval_every < 1):
        raise ValueError(
            f"eval_every={eval_every} needs eval_loader= and must be >= 1 (steps)"
        )
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError(
            f"checkpoint_every={checkpoint_every} needs checkpoint=path and must be >= "
            "1"
        )
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode={clip_mode!r} must be one of {CLIP_MODES}")
    if weight_decay_end is not None and weight_decay_end < 0:
        raise ValueError(f"weight_decay_end={weight_decay_end} must be >= 0")
    if checkpoint is not None and seconds is not None:
        raise ValueError(
            "checkpoint= cannot resume a seconds= budget exactly (its schedule follows "
            "the clock): give steps= or epochs="
        )
    per_epoch = _batches_per_epoch(loader)
    if epochs is not None and per_epoch is None:
        raise ValueError(
            "epochs= needs a loader with a length; pass steps= or seconds= instead"
        )
    if per_epoch == 0:
        raise ValueError(
            "the loader yields no batches (batch_size larger than the dataset with "
            "drop_last?)"
        )
    budgets = [
        b
        for b in (steps, epochs * per_epoch if epochs is not None else None)
        if b is not None
    ]
    total_steps = int(min(budgets)) if budgets else None

    device = get_device() if device is None else torch.device(device)
    parallel = distributed.setup(device)
    device = distributed.local_device(device)
    if parallel and hasattr(loader, "shard"):  # each rank its part of every batch
        loader = loader.shard(distributed.rank(), distributed.world_size())
    model.to(device).train()
    # dropout, drop-path and masking draws: each rank its own (rank 0 or a single
    # process: seed itself)
    torch.manual_seed(seed + distributed.rank())
    if parallel:  # and its own crops: MultiCrop draws from a generator of its own
        for module in model.modules():
            if hasattr(module, "reseed"):
                module.reseed(module.seed + distributed.rank())
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    # the groups the weight decay schedule moves (DINO's param_groups[0])
    decayed = [g["weight_decay"] > 0 for g in optimizer.param_groups]
    if weight_decay_end is not None and not any(decayed):
        raise ValueError(
            f"weight_decay_end={weight_decay_end} schedules the param groups whose "
            "weight decay is > 0, and the optimizer has none (weight_decay=0?)"
        )
    clip = clip_per_tensor_ if clip_mode == "per_tensor" else nn.utils.clip_grad_norm_
    autocast, amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    after_backward = getattr(model, "after_backward", None)
    step_teacher = getattr(model, "step_teacher", None)
    trained = distributed.wrap(model, device)  # DDP under torchrun, else the model

    run = dict(
        epochs=epochs,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        seed=seed,
        grad_clip=grad_clip,
        batches=per_epoch,
        weight_decay_end=weight_decay_end,
        clip_mode=clip_mode,
    )
    history = History()
    # where the run stands: steps done, epoch, batches of it done, the loader's epoch
    at = {"step": 0, "epoch": 0, "batch": 0, "loader_epoch": None, "finished": False}
    if checkpoint is not None:
        state = ckpt.load_latest(checkpoint, model, optimizer)
        if state is not None:
            _check_same_run(state["run"], run, checkpoint)
            history, at = History(**state["history"]), state["at"]
            ckpt.set_rng_state(_own_rng_state(state["rng"], checkpoint), model)
            if scaler is not None and state["scaler"]:
                scaler.load_state_dict(state["scaler"])
            if at["finished"]:
                return history

    def save() -> None:
        rng = _rng_of_every_rank(model)  # every rank takes part in the gathering
        if distributed.is_main():
            ckpt.save_checkpoint(
                checkpoint,
                model,
                optimizer,
                run=run,
                at=dict(at),
                history=asdict(history),
                rng=rng,
                scaler=scaler.state_dict() if scaler is not None else {},
            )
        distributed.barrier()

    log = _StepLog(history, every=25 if parallel else None)
    main = distributed.is_main()
    bar = tqdm(
        total=total_steps,
        initial=at["step"],
        desc=desc,
        unit="step",
        disable=not (progress and main),
    )

    def show(row: dict | None, **extra) -> None:
        if row is not None:
            shown = {
                k: f"{v:.3f}"
                for k, v in row.items()
                if k not in ("step", "epoch", "lr", "wd")
            }
            bar.set_postfix({**shown, **extra}, refresh=False)

    def budget_spent() -> bool:
        return (total_steps is not None and at["step"] >= total_steps) or (
            seconds is not None and time.perf_counter() - start >= seconds
        )

    def evaluated_at(step: int) -> bool:
        return bool(history.evals) and history.evals[-1]["step"] == step

    def run_eval() -> None:
        trained_for = time.perf_counter() - start - history.eval_seconds
        began = time.perf_counter()
        result = evaluate(model, eval_loader, device=device, amp=amp)
        history.eval_seconds += time.perf_counter() - began
        history.evals.append(
            {
                "step": at["step"],
                "epoch": at["epoch"],
                "seconds": trained_for,  # of training so far
                **{f"test_{k}": v for k, v in result.items()},
            }
        )
        show(
            history.steps[-1] if history.steps else None,
            test_acc=f"{result['acc']:.3f}",
        )
        model.train()

    start = time.perf_counter() - history.seconds
    with bar:  # closed even when a non-finite loss stops the run
        # a run killed after its last step but before its last evaluation only evaluates
        done = at["batch"] > 0 and budget_spent()
        while True:
            if not done:
                if at["batch"] == 0:  # a new epoch (a resumed one keeps its place)
                    at["epoch"] += 1
                    at["loader_epoch"] = getattr(loader, "epoch", None)
                elif at["loader_epoch"] is not None:
                    loader.epoch = at["loader_epoch"]  # the same shuffle as before
                for i, batch in enumerate(loader):
                    if i < at["batch"]:
                        continue  # trained before the interruption
                    fraction = at["step"] / total_steps if total_steps else 0.0
                    if seconds is not None:  # the clock may run out first
                        elapsed = time.perf_counter() - start
                        fraction = max(fraction, elapsed / seconds)
                    progress = min(fraction, 1.0)
                    factor = _lr_factor(progress, warmup)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * factor
                    if weight_decay_end is not None:
                        # over the fraction of the run done, as the lr: the steps
                        # done, or the clock's share with seconds=
                        wd = cosine_schedule(
                            weight_decay, weight_decay_end, progress, total_steps=1
                        )
                        for group, scheduled in zip(optimizer.param_groups, decayed):
                            if scheduled:
                                group["weight_decay"] = wd

                    batch = _to(batch, device)
                    with autocast:
                        value, metrics = loss(trained, batch)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(value).backward()
                        scaler.unscale_(optimizer)
                    else:
                        value.backward()
                    if grad_clip is not None:
                        clip(model.parameters(), grad_clip)
                    if after_backward is not None:  # DINO's frozen last layer
                        after_backward()
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    if step_teacher is not None:
                        step_teacher()

                    at["step"] += 1
                    at["batch"] = i + 1
                    row = {"step": at["step"], "epoch": at["epoch"]}
                    row["lr"] = base_lrs[0] * factor
                    if weight_decay_end is not None:
                        row["wd"] = wd
                    log.add(row, value, metrics)
                    bar.update(1)
                    if log.due():  # the only place the device is waited for
                        show(log.flush(lr))
                    if (
                        eval_every
                        and at["step"] % eval_every == 0
                        and not budget_spent()  # the end-of-epoch evaluation follows
                    ):
                        show(log.flush(lr))
                        run_eval()
                    if checkpoint_every and at["step"] % checkpoint_every == 0:
                        log.flush(lr)
                        history.seconds = time.perf_counter() - start
                        save()
                    if budget_spent():
                        done = True
                        break
            show(log.flush(lr))
            if eval_loader is not None and not evaluated_at(at["step"]):
                run_eval()
            at["batch"] = 0
            if done:
                break
    history.seconds = time.perf_counter() - start
    if checkpoint is not None:
        at["finished"] = True
        save()
    return history


# arguments fit gained after checkpoints were written: a checkpoint without one ran
# with this value
_LATER_ARGUMENTS = {"weight_decay_end": None, "clip_mode": "global"}


def _check_same_run(saved: dict, now: dict, path) -> None:
    """A checkpoint resumes only the run that wrote it."""
    saved = {**_LATER_ARGUMENTS, **saved}
    changed = [
        f"{k}={saved.get(k)!r} then, {v!r} now"
        for k, v in now.items()
        if saved.get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{path} was written by a different run ({'; '.join(changed)}): pass the "
            f"same arguments to resume it, or delete it to start afresh"
        )


def _rng_of_every_rank(model: nn.Module) -> dict | list[dict]:
    """This process's RNG states (:func:`checkpoint.rng_state`); under torchrun every
    rank's, a list by rank, since each draws its own."""
    state = ckpt.rng_state(model)
    if not distributed.active():
        return state
    states = [None] * distributed.world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def _own_rng_state(saved: dict | list[dict], path) -> dict:
    """This rank's RNG states from a checkpoint's (one dict: a single process wrote it,
    or a version that saved rank 0's only)."""
    if isinstance(saved, dict):
        return saved
    if len(saved) != distributed.world_size():
        raise ValueError(
            f"{path} was written by {len(saved)} data-parallel processes and "
            f"{distributed.world_size()} resume it: resume with {len(saved)}, each "
            "rank's random draws go on from its own"
        )
    return saved[distributed.rank()]


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
        loss_sum += F.cross_entropy(
            logits, labels, reduction="sum"
        )  # stays on the device
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
