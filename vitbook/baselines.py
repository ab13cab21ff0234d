"""The baselines every self-supervised chapter's table shares, so that chapters 6 to
10, and chapter 11 which sets them side by side, compare against the same rows.

- :func:`random_backbone`: the ViT the chapters pretrain (``configs.VIT_BACKBONE`` at
  this scale), at its seeded random initialization: the "random init" row.
- :func:`supervised_reference`: that ViT trained with labels, once per results
  directory and scale (``configs.reference()``: one pass over the 60,000 training
  images on a CPU), saved in its ``baselines/`` folder and loaded by every later
  chapter: the "supervised" row.
- :func:`pretraining_budget`: what a method spent, for the table's budget line.

A chapter run alone trains the reference itself; the same seed gives the same model.
"""

from __future__ import annotations

import hashlib
import json
import time

import torch
from torch import nn

from . import configs
from .models.vit import ViT
from .probe import results_dir
from .runtime import get_device, scale


def _backbone_config() -> dict:
    return configs.reference().backbone


def random_backbone(
    image_size: int = 28, channels: int = 1, seed: int = 0, **kwargs
) -> ViT:
    """The shared random-initialization baseline: the chapters' ViT backbone, its
    weights drawn from ``seed`` (without touching the global random state).
    ``kwargs`` add ViT options that change no weight (``dynamic_img_size=True``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViT(
            image_size=image_size,
            num_classes=0,
            channels=channels,
            **_backbone_config(),
            **kwargs,
        )


def _fingerprint(record: dict) -> str:
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def supervised_reference(
    train_set, device=None, directory=None, seed: int = 0
) -> tuple[nn.Module, dict]:
    """The shared supervised baseline and how it was trained: ``(model, info)``,
    ``info`` with its ``epochs``, ``images_seen``, ``seconds`` and whether this call
    ``trained`` it or loaded it. Trained with ``configs.reference()``'s recipe from
    :func:`random_backbone`'s weights with a linear head, then saved in
    :func:`vitbook.probe.results_dir` under the scale and a fingerprint of the recipe,
    so a changed recipe is trained again."""
    from .train import fit  # train imports probe, which this module imports

    cfg = configs.reference()
    device = get_device() if device is None else torch.device(device)
    image_size, channels = train_set.images.shape[-1], train_set.images.shape[1]
    recipe = {
        "backbone": cfg.backbone,
        "epochs": cfg.supervised_epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": seed,
        "images": len(train_set),
        "image_size": image_size,
        "channels": channels,
    }
    stem = f"supervised_reference_{scale()}_{_fingerprint(recipe)}"
    # a folder of its own: the chapters' tables are the *.json beside it
    weights = results_dir(directory) / "baselines" / f"{stem}.pt"
    notes = weights.with_suffix(".json")
    model = random_backbone(image_size, channels, seed)
    model.reset_classifier(len(train_set.classes))
    if weights.exists() and notes.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        info = {**json.loads(notes.read_text()), "trained": False}
        return model.to(device), info
    began = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        history = fit(
            model,
            train_set.loader(cfg.batch_size, shuffle=True, seed=seed, device=device),
            epochs=cfg.supervised_epochs,
            lr=cfg.lr,
            device=device,
            desc="supervised reference",
        )
    info = {
        "epochs": cfg.supervised_epochs,
        "images_seen": cfg.supervised_epochs * len(train_set),
        "seconds": history.train_seconds,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    notes.write_text(json.dumps(info, indent=1))
    info["trained"] = True
    info["wall_seconds"] = time.perf_counter() - began
    return model, info


def pretraining_budget(history, batch_size: int, views: int) -> dict:
    """What a pretraining run spent, as the tables print it: its optimizer
    ``steps``, the ``views`` of each image the method computes, the ``images_seen``
    (steps x batch) and its training ``seconds`` (evaluations excluded)."""
    steps = len(history.steps)
    return {
        "steps": steps,
        "views": views,
        "images_seen": steps * batch_size,
        "seconds": history.train_seconds,
    }


__all__ = ["pretraining_budget", "random_backbone", "supervised_reference"]
