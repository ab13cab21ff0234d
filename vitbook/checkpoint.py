"""Checkpoints that survive a crash: written beside the target and renamed into place.

A Colab runtime disconnects, a laptop sleeps. ``train.fit(..., checkpoint=path)`` writes
the whole training state every few steps with :func:`save_checkpoint` and resumes from
it when it is called again with the same arguments. A write never leaves a half file
under ``path``: the new file is written as ``path.tmp``, the old one becomes
``path.prev``, then the new one is renamed to ``path`` (a rename is atomic). A file that
does not load is refused with a ValueError that says why, and :func:`load_latest` falls
back to ``.prev``.
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed

CHECKPOINT_FORMAT = "vitbook-checkpoint-v1"


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".tmp"), path.with_name(path.name + ".prev")


def save_checkpoint(
    path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra
) -> Path:
    """Save the model's weights, the optimizer state and any ``extra`` values to
    ``path``, atomically (the previous file is kept as ``path.prev``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, prev = _siblings(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra,
    }
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before it takes the name
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """The raw contents of a checkpoint file; a ValueError names what is wrong with
    it."""
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
    return ckpt


def load_checkpoint(
    path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``; returns its
    ``extra`` values.

    A file that is not such a checkpoint, or whose weights do not fit ``model``, raises
    a ValueError that says which and why, before anything in ``model`` is changed.
    """
    ckpt = read_checkpoint(path)
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


def load_latest(
    path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict | None:
    """Load ``path``, or, when it does not load, the previous good file ``path.prev``
    (with a warning that quotes why ``path`` was refused). None when neither exists."""
    path = Path(path)
    _, prev = _siblings(path)
    candidates = [p for p in (path, prev) if p.is_file()]
    refused = []
    for candidate in candidates:
        try:
            extra = load_checkpoint(candidate, model, optimizer)
        except ValueError as error:
            refused.append(str(error))
            continue
        if refused:
            warnings.warn(
                f"{refused[0]}; resuming from {candidate} instead", stacklevel=2
            )
        return extra
    if refused:
        raise ValueError("no checkpoint could be loaded: " + " | ".join(refused))
    return None


# ------------------------------------------------ random number generators
def _generators(model: nn.Module | None) -> dict[str, torch.Generator]:
    """The modules' own generators (``MultiCrop.generator``), by dotted name."""
    if model is None:
        return {}
    return {
        f"{prefix}.{attr}" if prefix else attr: value
        for prefix, module in model.named_modules()
        for attr, value in vars(module).items()
        if isinstance(value, torch.Generator)
    }


def rng_state(model: nn.Module | None = None) -> dict:
    """Every generator a training step draws from: Python, NumPy, torch (CPU, CUDA),
    and the generators ``model``'s modules keep as attributes (``MultiCrop``'s)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in _generators(model).items()},
    }


def set_rng_state(state: dict, model: nn.Module | None = None) -> None:
    """The inverse of :func:`rng_state`. A generator of ``model`` that ``state`` does
    not name (a checkpoint written before they were saved) is left as it is."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in _generators(model).items():
        if name in saved:
            generator.set_state(saved[name])


# ------------------------------------------------ a training run's checkpoint
def save_run(path, model: nn.Module, optimizer: torch.optim.Optimizer, **state) -> None:
    """``train.fit``'s checkpoint: :func:`save_checkpoint` with the run's ``state``
    (its arguments, position and history, dataclasses saved as dicts, and the scaler's
    state) and the RNG states of every rank, which all take part; rank 0 writes it and
    every rank waits until it is written."""
    rng = _rng_of_every_rank(model)
    # the run's position and history are dataclasses, the scaler an object or None
    state = {k: asdict(v) if is_dataclass(v) else v for k, v in state.items()}
    if "scaler" in state:
        state["scaler"] = (
            {} if state["scaler"] is None else state["scaler"].state_dict()
        )
    if distributed.is_main():
        save_checkpoint(path, model, optimizer, rng=rng, **state)
    distributed.barrier()


def resume_run(
    path, model: nn.Module, optimizer: torch.optim.Optimizer, run: dict
) -> dict | None:
    """Load what :func:`save_run` left at ``path`` (or, if that is torn, at
    ``path.prev``) into ``model`` and ``optimizer``, check that a run with the same
    arguments ``run`` wrote it, and set every random generator back to where it stood.
    Returns the saved ``state``; None when there is no checkpoint yet."""
    state = load_latest(path, model, optimizer)
    if state is None:
        return None
    _check_same_run(state["run"], run, path)
    set_rng_state(_own_rng_state(state["rng"], path), model)
    return state


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
    """This process's RNG states (:func:`rng_state`); under torchrun every rank's, a
    list by rank, since each draws its own."""
    state = rng_state(model)
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


__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "load_latest",
    "rng_state",
    "set_rng_state",
    "save_run",
    "resume_run",
]
