"""``python -m vitbook.bench.fullscale``: what each chapter trains, and what it costs.

:func:`training_runs` lists every training run of a chapter (a model or method, how
many optimizer steps, the batch size), built from :mod:`vitbook.configs` as the
chapter builds it, at either scale. ``tests/test_full_scale.py`` runs one step of each
full-scale run on a CPU; :func:`flops_table` counts each run's FLOPs (one training
step, forward and backward, counted by ``FlopCounterMode`` on a small batch and scaled
linearly to the run's batch size, times its steps) and converts them to minutes at
the sustained throughputs of ``GPUS``. The README's table "The full scale" is its
output. Evaluation, the k-NN and linear probes of the self-supervised chapters and the
few timed steps of the throughput tables are not counted: they are forward passes or
linear layers, small beside the training runs.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import configs, runtime
from ..models import CNN, NaViT, ScalableViT, Swin, Twins, ViT
from ..ssl import MAE
from ..ssl.recipes import RECIPES, pretraining
from ..train import classification_loss, self_supervised_loss
from .flops import count_flops

TRAIN_IMAGES = 60_000  # Fashion-MNIST's training set
SIDE = 28  # its images are 28x28, grey

# Sustained throughput assumed for these small models, in FLOP/s (the tensor-core
# peak times a utilisation): a T4 has no bfloat16, so fit runs float16 (GradScaler),
# 65 TFLOP/s peak; an A100 runs bfloat16, 312 TFLOP/s peak. Models of 50-200 tokens
# and widths of 64-256 keep a GPU far from its peak: kernels are small, and layer
# norms, softmax and the optimizer's elementwise work are not counted as FLOPs but
# take time. 25% and 30% are assumptions, not measurements.
GPUS = {
    "T4": dict(peak=65e12, utilisation=0.25),
    "A100": dict(peak=312e12, utilisation=0.30),
}


@dataclass
class Run:
    """One training run of a chapter: ``build()`` makes its model or method afresh,
    ``batch(n)`` a batch of ``n`` random images (and labels) with the run's shapes,
    ``loss`` is what ``fit`` is given; ``steps`` optimizer steps of ``batch_size``
    images, or, for a run on the clock (``seconds``), as many steps as fit in that time:
    its minutes are its seconds, whatever the GPU. Its FLOPs are counted on
    ``batch(flop_batch)``."""

    chapter: str
    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int], tuple]
    loss: Callable
    steps: int
    batch_size: int
    flop_batch: int = 2
    seconds: float | None = None


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalized 28x28 grey images and their labels (random: the shapes are
    what matter)."""
    return torch.randn(n, 1, SIDE, SIDE), torch.randint(0, 10, (n,))


def steps_of(epochs: int, batch_size: int, n: int | None = None, drop_last=False):
    """Optimizer steps of ``epochs`` epochs of ``n`` images (default: the whole
    training set) in batches of ``batch_size``."""
    n = TRAIN_IMAGES if n is None else n
    per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    return epochs * per_epoch


def _classifier(chapter, name, cls, config, epochs, batch_size, n=None) -> Run:
    def build():
        if cls is CNN:
            return CNN(num_classes=10, channels=1, **config)
        return cls(image_size=SIDE, num_classes=10, channels=1, **config)

    steps = steps_of(epochs, batch_size, n)
    return Run(chapter, name, build, images, classification_loss, steps, batch_size)


def _timed(chapter, name, cls, config, batch_size) -> Run:
    """A model the chapter only times: six steps (one warm-up round, five timed)."""
    run = _classifier(chapter, name, cls, config, 1, batch_size)
    run.steps = 6
    return run


def _navit_images(sizes):
    def batch(n: int):
        chosen = [sizes[i % len(sizes)] for i in range(n)]
        return [torch.randn(1, h, w) for h, w in chosen], torch.randint(0, 10, (n,))

    return batch


def _ssl(chapter, name, build, steps, batch_size) -> Run:
    return Run(chapter, name, build, images, self_supervised_loss, steps, batch_size)


def _finetuned(backbone, num_classes=10):
    model = copy.deepcopy(backbone)
    model.reset_classifier(num_classes)
    return model


def training_runs(chapter: str, scale: str | None = None) -> list[Run]:
    """Every training run of ``chapter`` (``"01_vit"``, ...) at ``scale`` (default: the
    current one), built as the chapter builds it from ``configs.chapter(chapter)``."""
    scale = scale or runtime.scale()
    cfg = configs.chapter(chapter, scale)
    c, runs = chapter, []
    if c in ("01_vit", "02_swin", "03_twins", "04_scalable_vit"):
        cls = {"01_vit": ViT, "02_swin": Swin, "03_twins": Twins}.get(c, ScalableViT)
        runs.append(
            _classifier(c, cls.__name__, cls, cfg.model, cfg.epochs, cfg.batch_size)
        )
    if c == "01_vit":
        for name, cls, config in (
            ("ViT (race)", ViT, cfg.model),
            ("CNN", CNN, cfg.cnn),
        ):
            run = _classifier(c, name, cls, config, 1, cfg.batch_size)
            run.steps, run.seconds = 0, cfg.race_seconds
            runs.append(run)
    if c == "02_swin":
        runs.append(_classifier(c, "ViT", ViT, cfg.vit, cfg.epochs, cfg.batch_size))
    if c == "03_twins":
        runs.append(_timed(c, "Swin (timed)", Swin, cfg.swin, cfg.batch_size))
        runs.append(_timed(c, "ViT (timed)", ViT, cfg.vit, cfg.batch_size))
    if c == "04_scalable_vit":
        runs.append(
            _classifier(c, "Twins", Twins, cfg.twins, cfg.epochs, cfg.batch_size)
        )
        runs.append(_timed(c, "Swin (timed)", Swin, cfg.swin, cfg.batch_size))
        runs.append(_timed(c, "ViT (timed)", ViT, cfg.vit, cfg.batch_size))
    if c == "05_navit":
        runs += _navit_runs(cfg)
    if c in ("06_mae", "10_mp3"):
        runs += _masked_runs(c, cfg, scale)
    if c in ("07_dino", "08_esvit", "09_byol"):
        runs += _distillation_runs(c, cfg, scale)
    if c == "11_comparison":
        from ..zoo import CHAPTER_MODELS

        for name, (_, cls, small, full) in CHAPTER_MODELS.items():
            config = full if scale == "full" else small
            runs.append(_classifier(c, name, cls, config, cfg.epochs, cfg.batch_size))
        runs += _race_runs(c, cfg.race_seconds, scale)
    return runs


def _race_runs(c: str, seconds: float, scale: str | None) -> list[Run]:
    """Chapter 11's race: every method of chapters 6-10 pretrained for ``seconds``
    with its chapter's recipe (:mod:`vitbook.ssl.recipes`)."""
    runs = []
    for name, recipe in RECIPES.items():
        batch_size = configs.chapter(recipe.chapter, scale).batch_size

        def build(name=name):
            return pretraining(name, steps=1, scale=scale).method

        run = _ssl(c, f"{name} (race)", build, 0, batch_size)
        run.seconds = seconds
        runs.append(run)
    return runs


def _navit_runs(cfg) -> list[Run]:
    p, (low, high) = cfg.patch_size, cfg.heights
    sides = range(low, high + 1, p)
    # every (height, width) once: a batch whose mean number of patches is the
    # loader's (each side drawn uniformly from the multiples of the patch size); the
    # largest and the smallest first, so that a batch of 2 has both
    sizes = [(high, high), (low, low)]
    sizes += [(h, w) for h in sides for w in sides if (h, w) not in sizes]

    def navit():
        return NaViT(
            max_image_size=high,
            patch_size=p,
            num_classes=10,
            channels=1,
            token_budget=cfg.token_budget,
            **cfg.model,
        )

    def vit():
        return ViT(
            image_size=SIDE, patch_size=p, num_classes=10, channels=1, **cfg.model
        )

    loss, bs = classification_loss, cfg.batch_size
    return [
        Run(
            "05_navit",
            "NaViT",
            navit,
            _navit_images(sizes),
            loss,
            cfg.steps,
            bs,
            flop_batch=len(sizes),
        ),
        Run("05_navit", "ViT", vit, images, loss, cfg.steps // 2, bs),
    ]


def _masked_runs(c: str, cfg, scale: str) -> list[Run]:
    """MAE (chapter 6) and MP3 (chapter 10): pretraining, then fine-tuning."""
    pos_embed = "sincos" if c == "06_mae" else "learned"

    def backbone():
        return ViT(
            image_size=SIDE,
            channels=1,
            num_classes=0,
            pos_embed=pos_embed,
            **cfg.backbone,
        )

    bs, method = cfg.batch_size, "MAE" if c == "06_mae" else "MP3"
    runs = [
        _ssl(
            c,
            f"{method} pretraining",
            lambda: pretraining(method, cfg.pretrain_steps, scale=scale).method,
            cfg.pretrain_steps,
            bs,
        )
    ]
    if c == "06_mae":
        # the pictures' model: the same MAE predicting pixels
        runs.append(
            _ssl(
                c,
                "MAE on pixels",
                lambda: MAE(backbone(), norm_pix_loss=False, **cfg.mae),
                cfg.pretrain_steps,
                bs,
            )
        )
        # the supervised row chapters 6-10 share, trained here and loaded after
        ref = configs.reference(scale)
        runs.append(
            Run(
                c,
                "supervised reference",
                lambda: ViT(
                    image_size=SIDE, num_classes=10, channels=1, **ref.backbone
                ),
                images,
                classification_loss,
                steps_of(ref.supervised_epochs, ref.batch_size),
                ref.batch_size,
            )
        )
        epochs, names = cfg.finetune_epochs, ("from MAE", "from scratch")
    else:
        return runs
    steps = steps_of(epochs, bs, cfg.labelled)

    def classifier():  # the backbone with a 10-class head (from MAE or from scratch)
        return _finetuned(backbone())

    for name in names:
        runs.append(Run(c, name, classifier, images, classification_loss, steps, bs))
    return runs


def _distillation_runs(c: str, cfg, scale: str | None) -> list[Run]:
    """DINO, EsViT, BYOL: pretraining with the chapter's recipe
    (:mod:`vitbook.ssl.recipes`) and the short variants (the supervised baseline is
    chapter 6's shared reference)."""
    name = {"07_dino": "DINO", "08_esvit": "EsViT", "09_byol": "BYOL"}[c]
    steps, bs = cfg.steps, cfg.batch_size

    def build():
        return pretraining(name, steps, scale=scale).method

    runs = [_ssl(c, name, build, steps, bs)]
    variants = {"DINO": 2, "EsViT": 0, "BYOL": 5}[name]
    if variants:
        # the variants change heads and switches, not the shapes: counted as the
        # method itself (an upper bound: some drop the predictor or crops)
        short = variants * cfg.short_steps
        runs.append(_ssl(c, f"{variants} short variants", build, short, bs))
    return runs


def step_flops(run: Run, n: int | None = None) -> float:
    """FLOPs of one training step of ``run`` at its batch size: forward and backward on
    a batch of ``n`` images (default ``run.flop_batch``), counted, times ``batch_size /
    n``."""
    n = n or run.flop_batch
    model = run.build().train()
    batch = run.batch(n)

    def step():
        loss, _ = run.loss(model, batch)
        loss.backward()

    return count_flops(step) * run.batch_size / n


def chapter_flops(chapter: str, scale: str = "full") -> list[dict]:
    """One row per training run of ``chapter``: name, steps, batch size, FLOPs."""
    rows = []
    for run in training_runs(chapter, scale):
        per_step = step_flops(run)
        rows.append(
            dict(
                run=run.name,
                steps=run.steps,
                seconds=run.seconds,
                batch_size=run.batch_size,
                step_flops=per_step,
                flops=per_step * run.steps,
            )
        )
    return rows


def minutes(flops: float, gpu: str) -> float:
    """Minutes ``flops`` take at ``GPUS[gpu]``'s assumed sustained throughput."""
    spec = GPUS[gpu]
    return flops / (spec["peak"] * spec["utilisation"]) / 60


def flops_table(scale: str = "full", details: bool = False) -> str:
    """The README's table: per chapter, its runs' steps, FLOPs and minutes on a T4 and
    an A100 at ``GPUS``' throughputs (``details``: one row per run as well)."""
    lines = [
        "| chapter | steps | FLOPs | T4 minutes | A100 minutes |",
        "|---|---:|---:|---:|---:|",
    ]
    for chapter in configs.CHAPTERS:
        rows = chapter_flops(chapter, scale)
        total = sum(r["flops"] for r in rows)
        # a run on the clock takes its seconds on any GPU
        clock = sum(r["seconds"] or 0 for r in rows) / 60
        steps = " + ".join(
            f"{r['seconds']:g} s" if r["seconds"] else f"{r['steps']:,}" for r in rows
        )
        lines.append(
            f"| {chapter} | {steps} | {total:.2e} | {minutes(total, 'T4') + clock:.1f} "
            f"| {minutes(total, 'A100') + clock:.1f} |"
        )
        if details:
            for r in rows:
                lines.append(
                    f"| &nbsp; {r['run']} | {r['steps']:,} x {r['batch_size']} "
                    f"| {r['flops']:.2e} | {minutes(r['flops'], 'T4'):.1f} "
                    f"| {minutes(r['flops'], 'A100'):.1f} |"
                )
    return "\n".join(lines)


def main(argv=None) -> None:
    """The command line: the assumed throughputs, then :func:`flops_table`."""
    parser = argparse.ArgumentParser(
        prog="python -m vitbook.bench.fullscale",
        description="FLOPs of every chapter's training runs and the minutes they "
        "take on a T4 and an A100 at an assumed sustained throughput.",
    )
    parser.add_argument("--scale", default="full", choices=configs.SCALES)
    parser.add_argument("--details", action="store_true", help="one row per run too")
    args = parser.parse_args(argv)
    assumed = ", ".join(
        f"{g} {s['peak'] / 1e12:.0f} TFLOP/s x {s['utilisation']:.0%}"
        for g, s in GPUS.items()
    )
    print(f"scale {args.scale}; sustained throughput assumed: {assumed}")
    print(flops_table(args.scale, args.details))


__all__ = [
    "GPUS",
    "Run",
    "training_runs",
    "images",
    "steps_of",
    "step_flops",
    "chapter_flops",
    "minutes",
    "flops_table",
    "main",
]

if __name__ == "__main__":
    main()
