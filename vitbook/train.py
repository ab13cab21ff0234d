"""Training and evaluation: one ``fit`` for every chapter, classifiers and self-supervised methods alike.

    history = fit(model, train.loader(256, shuffle=True), epochs=3, eval_loader=test.loader(1024))
    history.plot()

``fit`` picks the device (cuda, then mps, then cpu), uses mixed precision on CUDA, shows a
``tqdm.auto`` progress bar, stops at the first budget reached (``epochs``, ``steps`` or
``seconds``), and returns a :class:`History`. A seeded run on the CPU is reproducible:
the same seed gives the same history, number for number.
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


# --------------------------------------------------------------------------- where and how big
def get_device(prefer: str | None = None) -> torch.device:
    """``cuda`` if there is a GPU, else Apple's ``mps``, else ``cpu`` (``prefer`` overrides)."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
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
    """Cross-entropy of ``model(images)`` against labels; reports accuracy too."""
    images, labels = batch
    logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    return loss, {"acc": (logits.argmax(-1) == labels).float().mean().item()}


def self_supervised_loss(method: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """For methods whose forward returns their loss: ``loss = method(images)`` (labels unused)."""
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
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup))))


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


# --------------------------------------------------------------------------- fit
def fit(model: nn.Module, loader, *, epochs: float | None = None, steps: int | None = None,
        seconds: float | None = None, lr: float = 1e-3, weight_decay: float = 0.05, warmup: float = 0.1,
        loss: Callable = classification_loss, optimizer: torch.optim.Optimizer | None = None,
        eval_loader=None, device: torch.device | str | None = None, amp: bool = True,
        grad_clip: float | None = 1.0, seed: int = 0, progress: bool = True, desc: str = "train") -> History:
    """Train ``model`` until the first of ``epochs``, ``steps`` or ``seconds`` runs out.

    ``loss(model, batch) -> (loss, metrics)``: :func:`classification_loss` by default,
    :func:`self_supervised_loss` for methods whose forward returns their loss. After every
    optimizer step ``model.step_teacher()`` is called when the model has one (EMA teachers).
    AdamW with linear warm-up and cosine decay unless an ``optimizer`` is given. With only a
    ``seconds`` budget the schedule follows the clock, so such a run is not reproducible.
    """
    if epochs is None and steps is None and seconds is None:
        raise ValueError("fit needs a budget: epochs=, steps= or seconds=")
    for name, value in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
        if value is not None and value <= 0:
            raise ValueError(f"{name}={value} must be positive")
    per_epoch = _batches_per_epoch(loader)
    if epochs is not None and per_epoch is None:
        raise ValueError("epochs= needs a loader with a length; pass steps= or seconds= instead")
    if per_epoch == 0:
        raise ValueError("the loader yields no batches (batch_size larger than the dataset with drop_last?)")
    budgets = [b for b in (steps, epochs * per_epoch if epochs is not None else None) if b is not None]
    total_steps = int(min(budgets)) if budgets else None

    device = get_device() if device is None else torch.device(device)
    model.to(device).train()
    torch.manual_seed(seed)  # dropout, drop-path and masking draws
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    autocast, amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    step_teacher = getattr(model, "step_teacher", None)

    history = History()
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, unit="step")
    start, step, epoch = time.perf_counter(), 0, 0
    done = False
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
            value = value.item()
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(f"loss became {value} at step {step}; lower lr (now {lr}) or check the data")
            history.steps.append({"step": step, "epoch": epoch, "loss": value, "lr": base_lrs[0] * factor, **metrics})
            bar.update(1)
            bar.set_postfix({"loss": f"{value:.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()}}, refresh=False)
            if (total_steps is not None and step >= total_steps) or \
                    (seconds is not None and time.perf_counter() - start >= seconds):
                done = True
                break
        if eval_loader is not None:
            result = evaluate(model, eval_loader, device=device, amp=amp)
            history.evals.append({"step": step, "epoch": epoch, **{f"test_{k}": v for k, v in result.items()}})
            bar.set_postfix({"loss": f"{value:.3f}", "test_acc": f"{result['acc']:.3f}"})
            model.train()
    bar.close()
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, amp: bool = True) -> dict:
    """Mean cross-entropy and accuracy of a classifier over a loader: ``{"loss": ..., "acc": ...}``."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    autocast, _ = _autocast(device, amp)
    total, loss_sum, correct = 0, 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast:
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        total += len(labels)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss_sum / total, "acc": correct / total}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits for a tensor of (normalized) images, in batches, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat([model(images[i:i + batch_size].to(device)).float().cpu()
                     for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- evaluating representations
@torch.no_grad()
def extract_features(backbone: nn.Module, loader, device=None, pool: Callable | None = None):
    """Frozen features ``(n, d)`` and labels ``(n,)``. ``pool`` turns ``forward_features`` output into
    one vector per image; by default the model's own ``forward_head(..., pre_logits=True)``."""
    device = next(backbone.parameters()).device if device is None else torch.device(device)
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in loader:
        tokens = backbone.forward_features(images.to(device))
        f = pool(tokens) if pool is not None else backbone.forward_head(tokens, pre_logits=True)
        feats.append(f.float().cpu())
        labels.append(y.cpu())
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Weighted k-NN on cosine similarity, as DINO evaluates frozen features (Wu et al. 2018)."""
    if k < 1 or k > len(train_features):
        raise ValueError(f"k={k} must be between 1 and the number of training features {len(train_features)}")
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    train_f = F.normalize(train_features.float(), dim=1)
    test_f = F.normalize(test_features.float(), dim=1)
    correct = 0
    for i in range(0, len(test_f), 1024):
        sim, idx = (test_f[i:i + 1024] @ train_f.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == test_labels[i:i + 1024]).sum().item()
    return correct / len(test_f)


def linear_probe(train_features, train_labels, test_features, test_labels, epochs: int = 100,
                 lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Accuracy of a linear classifier trained on frozen features (full-batch AdamW, standardized inputs)."""
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


# --------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "vitbook-checkpoint-v1"


def save_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra) -> Path:
    """Save the model's weights (and optimizer state, and any ``extra`` values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model_class": type(model).__name__,
                "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "extra": extra}, path)
    return path


def load_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``; returns its ``extra`` values.

    A file that is not such a checkpoint, or whose weights do not fit ``model``, raises a
    ValueError that says which and why, before anything in ``model`` is changed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from error
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vitbook checkpoint (no format={CHECKPOINT_FORMAT!r} entry)")
    if ckpt["model_class"] != type(model).__name__:
        raise ValueError(f"{path} holds a {ckpt['model_class']}, cannot load it into a {type(model).__name__}")
    theirs, ours = ckpt["state_dict"], model.state_dict()
    problems = [f"missing {k}" for k in ours if k not in theirs]
    problems += [f"unexpected {k}" for k in theirs if k not in ours]
    problems += [f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in ours.items() if k in theirs and theirs[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{path} does not match this {type(model).__name__}: {shown}")
    model.load_state_dict(theirs)
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["extra"]
