"""Every chapter's configuration at both scales, side by side: the models, the methods
and the budgets (steps or epochs, batch sizes, subset sizes) each chapter trains with,
``small`` on a CPU and ``full`` on a GPU (:func:`vitbook.scale`).

A chapter reads its values with ``cfg = vitbook.configs.chapter("07_dino")``: an
object with one attribute per entry (``cfg.backbone``, ``cfg.steps``, ...), each the
value of the current scale. In the records below a value that depends on the scale is
written ``Scales(small=..., full=...)`` (inside a dictionary too); any other value is
the same at both scales. ``chapter(name, scale="full")`` gives a scale by name (the
tests build every full-scale model on a CPU from it). ``tests/test_full_scale.py`` runs
one training step of every full-scale run; ``python -m vitbook.bench.fullscale`` counts
their FLOPs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

from . import runtime
from .runtime import SCALES


class Scales(NamedTuple):
    """One value per scale: ``Scales(small=3, full=30)``."""

    small: Any
    full: Any


# --------------------------------------------------------------- the models
# the ViT classifier of chapters 1-4 (7x7 patches of 28x28 images on a CPU, 4x4 and
# ViT-Ti's width on a GPU)
VIT = Scales(
    small=dict(patch_size=7, dim=64, depth=4, heads=4, mlp_dim=128),
    full=dict(patch_size=4, dim=192, depth=9, heads=3, mlp_dim=384, drop_path=0.1),
)
# the ViT the self-supervised chapters (6-10) pretrain: the same, without drop path
VIT_BACKBONE = Scales(
    small=dict(patch_size=7, dim=64, depth=4, heads=4, mlp_dim=128),
    full=dict(patch_size=4, dim=192, depth=9, heads=3, mlp_dim=384),
)
# chapter 1's baseline, about the ViT's size at each scale (133k and 2.3M parameters)
CNN = Scales(small=dict(widths=(38, 76, 152)), full=dict(widths=(160, 320, 640)))
SWIN = Scales(
    small=dict(
        patch_size=7, dim=32, depths=(2, 2), heads=(2, 4), window_size=2, drop_path=0.0
    ),
    full=dict(
        patch_size=2,
        dim=64,
        depths=(2, 2, 2),
        heads=(2, 4, 8),
        window_size=7,
        drop_path=0.1,
    ),
)
TWINS = Scales(
    small=dict(
        patch_size=7,
        dims=(32, 64),
        depths=(2, 2),
        heads=(2, 4),
        window_sizes=2,
        sr_ratios=(2, 1),
    ),
    full=dict(
        patch_size=2,
        dims=(64, 128, 256),
        depths=(2, 2, 2),
        heads=(2, 4, 8),
        window_sizes=7,
        sr_ratios=(4, 2, 1),
        drop_path=0.1,
    ),
)
# chapter 3's Twins-SVT with ScalableViT's attentions: keys c times as wide and, at the
# full scale, windows of 4 on the last stage's 4x4 map
SCALABLE_VIT = Scales(
    small=dict(**TWINS.small, c_ratios=(1.25, 1)),
    full={**TWINS.full, "window_sizes": (7, 7, 4), "c_ratios": (1.25, 1.25, 1)},
)
# chapter 5's NaViT: the ViT's width; its patch size is the chapter's `patch_size`
NAVIT = Scales(
    small=dict(dim=64, depth=4, heads=4, mlp_dim=128),
    full=dict(dim=192, depth=9, heads=3, mlp_dim=384, drop_path=0.1),
)

# DINO's and EsViT's local crops (chapters 7 and 8): a multiple of the patch size (7 on
# a CPU, 4 on a GPU), about 0.43 of the 28-pixel global crop as DINO's 96 of 224
LOCAL_SIZE = Scales(small=14, full=12)

# ------------------------------------------------------------- the chapters
# Every chapter trains on Fashion-MNIST: 60,000 28x28 grey images, 10 classes.
CHAPTERS: dict[str, dict] = {
    "01_vit": dict(
        model=VIT,
        epochs=Scales(small=9, full=20),
        batch_size=Scales(small=256, full=512),
        lr=2e-3,
        cnn=CNN,  # the baseline, raced against a fresh ViT on the clock
        race_seconds=Scales(small=10, full=120),
    ),
    "02_swin": dict(
        model=SWIN,
        # six on a CPU: Swin and the ViT beside it train the same steps, within the
        # chapter's four minutes
        epochs=Scales(small=6, full=30),
        batch_size=Scales(small=256, full=512),
        lr=2e-3,
        vit=VIT,  # chapter 1's ViT, trained again with Swin's budget
    ),
    "03_twins": dict(
        model=TWINS,
        epochs=Scales(small=8, full=30),
        batch_size=Scales(small=256, full=512),
        lr=2e-3,
        vit=VIT,  # timed for a few steps beside Twins-SVT
        swin=SWIN,
    ),
    "04_scalable_vit": dict(
        model=SCALABLE_VIT,
        epochs=Scales(small=8, full=30),
        batch_size=Scales(small=256, full=512),
        lr=2e-3,
        twins=TWINS,  # trained with the same budget
        vit=VIT,  # timed for a few steps beside them
        swin=SWIN,
    ),
    "05_navit": dict(
        model=NAVIT,
        patch_size=7,
        heights=(14, 42),  # each training image's sides: multiples of 7 in 14..42
        token_budget=64,
        steps=Scales(small=2000, full=8000),
        batch_size=Scales(small=128, full=256),
        lr=3e-3,
        eval_images=Scales(small=1000, full=None),  # None: the whole test set
        # the fixed-size ViT it is compared with trains steps // 2 steps
    ),
    "06_mae": dict(
        backbone=VIT_BACKBONE,
        mae=Scales(
            small=dict(
                decoder_dim=32, decoder_depth=2, decoder_heads=4, mask_ratio=0.75
            ),
            full=dict(
                decoder_dim=128, decoder_depth=4, decoder_heads=4, mask_ratio=0.75
            ),
        ),
        pretrain_steps=Scales(small=600, full=12_000),
        batch_size=256,
        labelled=Scales(small=20_000, full=None),  # fine-tuning images (None: all)
        finetune_epochs=Scales(small=3, full=20),  # from MAE and from scratch
    ),
    "07_dino": dict(
        backbone=VIT_BACKBONE,
        steps=Scales(small=300, full=6000),
        batch_size=Scales(small=128, full=256),
        # 2 global crops of 28x28, 4 local ones; the schedules that depend on the
        # number of steps are set in the chapter
        dino=dict(
            global_size=28,
            local_size=LOCAL_SIZE,
            num_local=4,
            out_dim=1024,
            hidden_dim=256,
            bottleneck_dim=64,
            use_bn=True,
            momentum=0.98,
            teacher_temp=0.07,
            warmup_teacher_temp=0.04,
        ),
        short_steps=Scales(small=60, full=1000),  # each of the two variants
    ),
    "08_esvit": dict(
        backbone=VIT_BACKBONE,
        steps=Scales(small=300, full=6000),
        batch_size=Scales(small=128, full=256),
        esvit=dict(
            global_size=28,
            local_size=LOCAL_SIZE,
            num_local=4,
            out_dim=1024,
            hidden_dim=256,
            bottleneck_dim=64,
            use_bn=True,
            norm_last_layer=True,
            momentum=0.98,
            teacher_temp=0.07,
            warmup_teacher_temp=0.04,
        ),
    ),
    "09_byol": dict(
        backbone=VIT_BACKBONE,
        steps=Scales(small=600, full=6000),
        batch_size=Scales(small=128, full=256),
        byol=dict(
            image_size=28,
            projection_dim=128,
            hidden_dim=512,
            predictor_hidden_dim=512,
            momentum=0.99,
        ),
        short_steps=Scales(small=100, full=1000),  # each of the five variants
    ),
    "10_mp3": dict(
        backbone=VIT_BACKBONE,
        mask_ratio=0.75,
        pretrain_steps=Scales(small=600, full=12_000),
        batch_size=256,
    ),
    "11_comparison": dict(
        # the models of chapters 1-4 (vitbook.zoo), each trained with one recipe
        epochs=Scales(small=1, full=10),
        batch_size=Scales(small=256, full=512),
        lr=2e-3,
        # the self-supervised methods of chapters 6-10, each pretrained this many
        # seconds with its chapter's recipe (vitbook.ssl.race)
        race_seconds=Scales(small=10, full=60),
    ),
}


# The baselines chapters 6-10 share (vitbook/baselines.py): the backbone they all
# pretrain, trained with labels once, and the training images their k-NN and linear
# probe read (None: all)
REFERENCE = dict(
    backbone=VIT_BACKBONE,
    supervised_epochs=1,
    batch_size=256,
    lr=2e-3,
    probe_images=Scales(small=10_000, full=None),
)


class Chapter(SimpleNamespace):
    """A chapter's values at one scale, as attributes (``cfg.epochs``); printed, one
    entry a line, as the keywords a chapter would type, within 88 characters."""

    def __str__(self) -> str:
        lines = []
        for key, value in vars(self).items():
            if key == "name":
                continue
            if isinstance(value, dict):
                items = [f"{k}={v!r}" for k, v in value.items()]
                lines += _wrapped(f"{key} = dict(", items, ")")
            else:
                lines.append(f"{key} = {value!r}")
        return "\n".join(lines)


def _wrapped(head: str, items: list[str], tail: str, width: int = 88) -> list[str]:
    """``head`` then ``items`` joined by commas, then ``tail``, on as few lines of at
    most ``width`` characters as fit, the next lines indented under the first item."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + (tail if i == len(items) - 1 else ",")
        if line != head and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = " " * len(head) + piece
        else:
            line += ("" if line == head else " ") + piece
    return lines + [line if items else head + tail]


def chapter(name: str, scale: str | None = None) -> Chapter:
    """Chapter ``name``'s configuration (``"01_vit"``, ..., ``"11_comparison"``) at
    ``scale`` (default: the current :func:`vitbook.scale`): every ``Scales`` entry of
    ``CHAPTERS[name]`` (in a dictionary too) replaced by its value at that scale, as
    attributes (``chapter("01_vit").epochs``). Dictionaries are copies: changing one
    changes nothing here."""
    if name not in CHAPTERS:
        raise ValueError(f"name={name!r}: not a chapter; there are {list(CHAPTERS)}")
    scale = scale or runtime.scale()
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not one of {SCALES}")
    values = {key: _at(value, scale) for key, value in CHAPTERS[name].items()}
    return Chapter(**values)


def _at(value, scale: str):
    """``value`` at ``scale``: a ``Scales`` gives its entry, a dictionary is copied
    with its own ``Scales`` entries resolved, anything else is returned as it is."""
    if isinstance(value, Scales):
        value = getattr(value, scale)
    if isinstance(value, dict):
        return {key: _at(v, scale) for key, v in value.items()}
    return value


__all__ = [
    "Scales",
    "Chapter",
    "CHAPTERS",
    "chapter",
    "REFERENCE",
    "reference",
    "VIT",
    "VIT_BACKBONE",
    "CNN",
    "SWIN",
    "TWINS",
    "SCALABLE_VIT",
    "NAVIT",
]


def reference(scale: str | None = None) -> Chapter:
    """The shared baselines' values (:data:`REFERENCE`) at ``scale`` (default: the
    current one), as :func:`chapter` gives a chapter's."""
    scale = scale or runtime.scale()
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not one of {SCALES}")
    return Chapter(**{key: _at(value, scale) for key, value in REFERENCE.items()})
