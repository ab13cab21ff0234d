"""Training and evaluation: one ``fit`` for every chapter, classifiers and
self-supervised methods alike.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

SCALES = ("small", "full")


# --------------------------------------------------------------------------- where and
# how big
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
    unused)."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return method(images), {}


# --------------------------------------------------------------------------- history
@dataclass
class History:
    """What ``fit`` saw: one row per optimizer step, one per evaluation."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def last(self, key: str, default=None):
        for row in reversed(self.evals + self.steps):
            if key in row:
                return row[key]
        return default

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


# --------------------------------------------------------------------------- the
# optimizer
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


class _StepLog:
    """Per-step losses and metrics kept on the device, read in one transfer when
    flushed.

    Reading a CUDA tensor's value waits for the GPU; ``fit`` flushes only at the
    progress bar's refresh interval, at evaluations and at the end, and checks then that
    every loss since the last flush was finite. On the CPU the history is the same,
    number for number.
    """

    def __init__(self, history: "History", interval: float = 0.5):
        self.history, self.interval = history, interval
        self.pending: list[tuple[dict, torch.Tensor, dict]] = []
        self.last_flush = time.perf_counter()

    def add(self, row: dict, loss: torch.Tensor, metrics: dict) -> None:
        self.pending.append((row, loss.detach(), metrics))

    def due(self) -> bool:
        return time.perf_counter() - self.last_flush >= self.interval

    def flush(self, lr: float) -> dict | None:
        """Move the pending rows into the history; the newest row, or None if none
        waited."""
        if not self.pending:
            return None
        losses = torch.stack([loss.float() for _, loss, _ in self.pending]).tolist()
        for (row, _, metrics), value in zip(self.pending, losses):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss became {value} at step {row['step']}; lower lr (now {lr}) "
                    "or check "
                    f"the data"
                )
            values = {k: float(v) for k, v in metrics.items()}  # one read per metric
            self.history.steps.append({**row, "loss": value, **values})
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
    warmup: float = 0.1,
    loss: Callable = classification_loss,
    optimizer: torch.optim.Optimizer | None = None,
    eval_loader=None,
    device: torch.device | str | None = None,
    amp: bool = True,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train ``model`` until the first of ``epochs``, ``steps`` or ``seconds`` runs out.

    ``loss(model, batch) -> (loss, metrics)``: :func:`classification_loss` by default,
    :func:`self_supervised_loss` for methods whose forward returns their loss. After
    every optimizer step ``model.step_teacher()`` is called when the model has one (EMA
    teachers). AdamW with linear warm-up and cosine decay unless an ``optimizer`` is
    given. With only a ``seconds`` budget the schedule follows the clock, so such a run
    is not reproducible.
    """
    if epochs is None and steps is None and seconds is None:
        raise ValueError("fit needs a budget: epochs=, steps= or seconds=")
    for name, value in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
        if value is not None and value <= 0:
            raise ValueError(f"{name}={value} must be positive")
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
    model.to(device).train()
    torch.manual_seed(seed)  # dropout, drop-path and masking draws
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    autocast, amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    step_teacher = getattr(model, "step_teacher", None)

    history = History()
    log = _StepLog(history)
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, unit="step")

    def show(row: dict | None, **extra) -> None:
        if row is not None:
            shown = {
                k: f"{v:.3f}"
                for k, v in row.items()
                if k not in ("step", "epoch", "lr")
            }
            bar.set_postfix({**shown, **extra}, refresh=False)

    start, step, epoch = time.perf_counter(), 0, 0
    done = False
    with bar:  # closed even when a non-finite loss stops the run
        while not done:
            epoch += 1
            for batch in loader:
                fraction = step / total_steps if total_steps else 0.0
                if seconds is not None:  # the clock may run out first
                    fraction = max(fraction, (time.perf_counter() - start) / seconds)
                factor = _lr_factor(min(fraction, 1.0), warmup)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor

                batch = _to(batch, device)
                with autocast:
                    value, metrics = loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(value).backward()
                    scaler.unscale_(optimizer)
                else:
                    value.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if step_teacher is not None:
                    step_teacher()

                step += 1
                log.add(
                    {"step": step, "epoch": epoch, "lr": base_lrs[0] * factor},
                    value,
                    metrics,
                )
                bar.update(1)
                if log.due():  # the only place the device is waited for while training
                    show(log.flush(lr))
                if (total_steps is not None and step >= total_steps) or (
                    seconds is not None and time.perf_counter() - start >= seconds
                ):
                    done = True
                    break
            show(log.flush(lr))
            if eval_loader is not None:
                result = evaluate(model, eval_loader, device=device, amp=amp)
                history.evals.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        **{f"test_{k}": v for k, v in result.items()},
                    }
                )
                show(
                    history.steps[-1] if history.steps else None,
                    test_acc=f"{result['acc']:.3f}",
                )
                model.train()
    history.seconds = time.perf_counter() - start
    return history


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


# --------------------------------------------------------------------------- evaluating
# representations
@torch.no_grad()
def extract_features(
    backbone: nn.Module, loader, device=None, pool: Callable | None = None
):
    """Frozen features ``(n, d)`` and labels ``(n,)``. ``pool`` turns
    ``forward_features`` output into one vector per image; by default the model's own
    ``forward_head(..., pre_logits=True)``."""
    device = (
        next(backbone.parameters()).device if device is None else torch.device(device)
    )
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in loader:
        tokens = backbone.forward_features(images.to(device))
        f = (
            pool(tokens)
            if pool is not None
            else backbone.forward_head(tokens, pre_logits=True)
        )
        feats.append(f.float().cpu())
        labels.append(y.cpu())
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Weighted k-NN on cosine similarity, as DINO evaluates frozen features (Wu et al.
    2018)."""
    if k < 1 or k > len(train_features):
        raise ValueError(
            f"k={k} must be between 1 and the number of training features "
            f"{len(train_features)}"
        )
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    train_f = F.normalize(train_features.float(), dim=1)
    test_f = F.normalize(test_features.float(), dim=1)
    correct = 0
    for i in range(0, len(test_f), 1024):
        sim, idx = (test_f[i : i + 1024] @ train_f.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(
            1, train_labels[idx], (sim / temperature).exp()
        )
        correct += (votes.argmax(1) == test_labels[i : i + 1024]).sum().item()
    return correct / len(test_f)


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Accuracy of a linear classifier trained on frozen features (full-batch AdamW,
    standardized inputs)."""
    torch.manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(xtr), train_labels).backward()
        opt.step()
    with torch.no_grad():
        return (head(xte).argmax(1) == test_labels).float().mean().item()


@dataclass
class RepresentationReport:
    """k-NN and linear-probe test accuracy of several frozen feature extractors.

    ``rows`` maps a row's name to ``{"knn": acc, "linear": acc, "note": str}``; printing
    the report gives the table every self-supervised chapter shows.
    """

    rows: dict[str, dict]
    k: int
    n_train: int
    n_test: int

    def margin(
        self, row: str = "pretrained", over: str = "random init"
    ) -> dict[str, float]:
        """Accuracy points of ``row`` above ``over``, per protocol: ``{"knn": ..,
        "linear": ..}``."""
        for name in (row, over):
            if name not in self.rows:
                raise KeyError(f"no row {name!r}; the rows are {list(self.rows)}")
        return {
            p: 100 * (self.rows[row][p] - self.rows[over][p]) for p in ("knn", "linear")
        }

    def __str__(self) -> str:
        lines = [
            f"{'features':<24}{f'k-NN (k={self.k})':>14}{'linear probe':>14}  note",
            "-" * 64,
        ]
        for name, r in self.rows.items():
            lines.append(
                f"{name:<24}{100 * r['knn']:>13.2f}%{100 * r['linear']:>13.2f}%"
                f"  {r.get('note', '')}"
            )
        lines.append(
            f"(Fashion-MNIST test set, {self.n_test} images; "
            f"features of {self.n_train} training images)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def representation_report(
    pretrained: nn.Module,
    random_init: nn.Module,
    train_set,
    test_set,
    *,
    supervised: nn.Module | dict | None = None,
    pixels: bool = True,
    n_train: int | None = None,
    k: int = 20,
    batch_size: int = 512,
    probe_epochs: int = 100,
    pool: Callable | None = None,
    device=None,
    seed: int = 0,
) -> RepresentationReport:
    """The one table every self-supervised chapter prints (and the comparison chapter
    reuses).

    Rows: the ``pretrained`` backbone, the same architecture at ``random_init``, raw
    pixels, and the ``supervised`` model (a trained backbone, or a dict ``{"knn",
    "linear", "note"}`` cited from where it was measured). Each row is judged twice on
    the frozen features: weighted k-NN (cosine, as DINO) and a linear probe, both on the
    ``test_set``. ``n_train`` subsamples the training split (seeded) to fit a notebook's
    budget.
    """
    train_part = train_set.subset(n_train, seed=seed)
    loaders = (train_part.loader(batch_size), test_set.loader(batch_size))

    def judge(train_f, train_y, test_f, test_y, note):
        return {
            "knn": knn_accuracy(train_f, train_y, test_f, test_y, k=k),
            "linear": linear_probe(
                train_f, train_y, test_f, test_y, epochs=probe_epochs, seed=seed
            ),
            "note": note,
        }

    def of_model(model, note):
        model = model.to(device) if device is not None else model
        train_f, train_y = extract_features(model, loaders[0], pool=pool)
        test_f, test_y = extract_features(model, loaders[1], pool=pool)
        return judge(train_f, train_y, test_f, test_y, note)

    rows = {
        "pretrained": of_model(pretrained, f"{type(pretrained).__name__} backbone"),
        "random init": of_model(random_init, "same architecture, untrained"),
    }
    if pixels:
        flat = [
            (s.normalize(s.images).flatten(1), s.labels) for s in (train_part, test_set)
        ]
        rows["raw pixels"] = judge(*flat[0], *flat[1], "normalized, flattened")
    if isinstance(supervised, dict):
        missing = {"knn", "linear"} - set(supervised)
        if missing:
            raise ValueError(
                f"supervised={supervised!r} needs the keys {sorted(missing)}"
            )
        rows["supervised"] = {"note": "cited", **supervised}
    elif supervised is not None:
        rows["supervised"] = of_model(supervised, "trained with labels")
    return RepresentationReport(rows, k, len(train_part), len(test_set))


# ---------------------------------------------------------------------------
# checkpoints
CHECKPOINT_FORMAT = "vitbook-checkpoint-v1"


def save_checkpoint(
    path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra
) -> Path:
    """Save the model's weights (and optimizer state, and any ``extra`` values) to
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_class": type(model).__name__,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "extra": extra,
        },
        path,
    )
    return path


def load_checkpoint(
    path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``; returns its
    ``extra`` values.

    A file that is not such a checkpoint, or whose weights do not fit ``model``, raises
    a ValueError that says which and why, before anything in ``model`` is changed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {error}"
        ) from error
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a vitbook checkpoint (no format={CHECKPOINT_FORMAT!r} "
            "entry)"
        )
    if ckpt["model_class"] != type(model).__name__:
        raise ValueError(
            f"{path} holds a {ckpt['model_class']}, cannot load it into a "
            f"{type(model).__name__}"
        )
    theirs, ours = ckpt["state_dict"], model.state_dict()
    problems = [f"missing {k}" for k in ours if k not in theirs]
    problems += [f"unexpected {k}" for k in theirs if k not in ours]
    problems += [
        f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and theirs[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise ValueError(f"{path} does not match this {type(model).__name__}: {shown}")
    model.load_state_dict(theirs)
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["extra"]
