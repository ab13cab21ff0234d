"""The pretraining recipe of each self-supervised chapter (6 to 10) in one registry, so
that chapter 11 races exactly the methods the chapters pretrain.

``RECIPES[name]`` says how chapter ``name`` builds its method around the shared ViT
backbone (``configs.VIT_BACKBONE``) and how it trains it: the optimizer settings
``fit`` gets, the batch size, the views of each image the method computes. The values
come from :mod:`vitbook.configs`, where the chapters read theirs;
``tests/test_recipes.py`` reads the notebooks and fails if a chapter's code and its
recipe part ways.

``pretraining(name, steps)`` returns a fresh method and the keywords of its ``fit``
call; :func:`vitbook.ssl.race.equal_seconds` gives every method the same seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .. import configs
from ..models.vit import ViT
from ..optim import param_groups
from ..runtime import seed_everything
from ..train import self_supervised_loss
from .byol import BYOL
from .dino import DINO
from .esvit import EsViT
from .mae import MAE
from .mp3 import MP3

# the crops of chapters 7-9: global crops keep 40-100% of the image, local ones 10-40%
GLOBAL_SCALE, LOCAL_SCALE = (0.4, 1.0), (0.1, 0.4)


@dataclass(frozen=True)
class Recipe:
    """How chapter ``chapter`` pretrains its method.

    ``build(backbone, steps, cfg)`` wraps the backbone in the method for a run of
    ``steps`` steps (DINO's schedules need the run's length), ``cfg`` the chapter's
    configuration. ``backbone`` holds the ViT options beyond ``configs.VIT_BACKBONE``.
    ``fit`` holds ``vitbook.fit``'s optimizer keywords; ``betas``, when given, are
    AdamW's (the chapter then builds its own optimizer, MAE's (0.9, 0.95)).
    ``views(method)``: the views of each image one step computes."""

    chapter: str
    build: Callable[[nn.Module, int, object], nn.Module]
    views: Callable[[nn.Module], int]
    backbone: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    betas: tuple[float, float] | None = None
    drop_last: bool = False


def _self_distillation(cls):
    """DINO's and EsViT's builder: the chapter's entry, the teacher temperature warmed
    up over a third of the run, the last layer frozen for its first 1%."""

    def build(backbone, steps, cfg):
        entry = cfg.dino if cls is DINO else cfg.esvit
        return cls(
            backbone,
            total_steps=steps,
            **entry,
            warmup_teacher_temp_steps=steps // 3,
            freeze_last_layer_steps=max(1, steps // 100),
            global_scale=GLOBAL_SCALE,
            local_scale=LOCAL_SCALE,
        )

    return build


def _crops(method) -> int:
    return 2 + method.multicrop.num_local


# DINO's optimizer (chapters 7, 8): weight decay 0.04 -> 0.4 along a cosine, each
# gradient clipped on its own
DINO_FIT = dict(
    lr=2e-3,
    weight_decay=0.04,
    weight_decay_end=0.4,
    warmup=0.1,
    grad_clip=3.0,
    clip_mode="per_tensor",
)
# MAE's and MP3's (chapters 6, 10): AdamW with betas (0.9, 0.95), weight decay 0.05
MASKED_FIT = dict(lr=3e-3, weight_decay=0.05)

RECIPES: dict[str, Recipe] = {
    "MAE": Recipe(
        chapter="06_mae",
        build=lambda backbone, steps, cfg: MAE(backbone, norm_pix_loss=True, **cfg.mae),
        views=lambda method: 1,
        backbone=dict(pos_embed="sincos"),
        fit=MASKED_FIT,
        betas=(0.9, 0.95),
    ),
    "DINO": Recipe(
        chapter="07_dino",
        build=_self_distillation(DINO),
        views=_crops,
        backbone=dict(dynamic_img_size=True),
        fit=DINO_FIT,
        drop_last=True,
    ),
    "EsViT": Recipe(
        chapter="08_esvit",
        build=_self_distillation(EsViT),
        views=_crops,
        backbone=dict(dynamic_img_size=True),
        fit=DINO_FIT,
        drop_last=True,
    ),
    "BYOL": Recipe(
        chapter="09_byol",
        build=lambda backbone, steps, cfg: BYOL(
            backbone, total_steps=steps, **cfg.byol, global_scale=GLOBAL_SCALE
        ),
        views=lambda method: 2,
        fit=dict(lr=2e-3, weight_decay=0.04, warmup=0.1, grad_clip=3.0),
        drop_last=True,
    ),
    "MP3": Recipe(
        chapter="10_mp3",
        build=lambda backbone, steps, cfg: MP3(backbone, mask_ratio=cfg.mask_ratio),
        views=lambda method: 1,
        backbone=dict(pos_embed="learned"),
        fit=MASKED_FIT,
        betas=(0.9, 0.95),
    ),
}


@dataclass
class Pretraining:
    """A method ready to pretrain: ``fit(method, loader, steps=steps, **fit_kwargs)``
    with a loader of ``batch_size`` images (``drop_last`` as its chapter)."""

    name: str
    method: nn.Module
    steps: int
    batch_size: int
    drop_last: bool
    views: int
    fit_kwargs: dict


def pretraining(name: str, steps: int, seed: int = 0, scale: str | None = None):
    """Chapter ``RECIPES[name]``'s method, built as its chapter builds it (the global
    seed set to ``seed`` first) for a run of ``steps`` steps at ``scale`` (default: the
    current one), with the keywords of its ``fit`` call."""
    if name not in RECIPES:
        raise ValueError(f"name={name!r}: not a recipe; there are {list(RECIPES)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a whole number of steps >= 1")
    recipe = RECIPES[name]
    cfg = configs.chapter(recipe.chapter, scale)
    seed_everything(seed)
    backbone = ViT(
        image_size=28, channels=1, num_classes=0, **cfg.backbone, **recipe.backbone
    )
    method = recipe.build(backbone, steps, cfg)
    fit_kwargs = dict(recipe.fit, loss=self_supervised_loss)
    if recipe.betas is not None:
        groups = param_groups(method, fit_kwargs.pop("weight_decay"))
        lr = fit_kwargs.pop("lr")
        fit_kwargs["optimizer"] = torch.optim.AdamW(groups, lr=lr, betas=recipe.betas)
    return Pretraining(
        name=name,
        method=method,
        steps=steps,
        batch_size=cfg.batch_size,
        drop_last=recipe.drop_last,
        views=recipe.views(method),
        fit_kwargs=fit_kwargs,
    )


__all__ = ["Recipe", "RECIPES", "Pretraining", "pretraining", "DINO_FIT", "MASKED_FIT"]
