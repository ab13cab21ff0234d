"""The self-supervised methods of chapters 6 to 10 on one clock: each pretrains the
same ViT for the same number of seconds with its chapter's recipe
(:mod:`vitbook.ssl.recipes`), then its frozen backbone is judged as every chapter
judges it (weighted k-NN and a linear probe on the same training images).

A step costs each method something different (MAE encodes a quarter of the patches,
DINO ten crops of each image), so equal seconds means unequal steps. The methods'
schedules (the learning rate's cosine, DINO's teacher temperature and momentum) are
set by the number of steps, so :func:`equal_seconds` first times one training step of
each method, interleaved (:func:`vitbook.bench.interleaved_median`), and gives each
the steps that fit in the budget at that pace: the run that follows is an ordinary
seeded run of so many steps, and the seconds it took are printed beside it.
"""

from __future__ import annotations

import torch

from ..baselines import random_backbone
from ..bench.timing import interleaved_median
from ..probe import frozen_accuracy
from ..runtime import get_device
from ..threads import ThreadPlan
from ..train import fit, train_step
from .recipes import RECIPES, pretraining


def step_seconds(names, train_set, device=None, rounds: int = 3) -> dict[str, float]:
    """Seconds one training step of each method in ``names`` takes here, on its
    chapter's batch size: the median of ``rounds`` interleaved rounds, after one round
    of warm-up, on the threads ``fit`` would choose now (:class:`ThreadPlan`: on a busy
    CPU, torch's default threads would time every method several times slower than
    ``fit`` then trains it). The methods timed are throwaway copies."""
    device = get_device() if device is None else torch.device(device)
    calls = {}
    for name in names:
        # a throwaway method: its schedules' length does not change a step's cost
        p = pretraining(name, steps=100)
        method = p.method.to(device)
        kwargs = dict(p.fit_kwargs)
        optimizer = kwargs.get("optimizer") or torch.optim.AdamW(
            method.parameters(), lr=kwargs.get("lr", 1e-3)
        )
        batch = next(iter(train_set.loader(p.batch_size, shuffle=True, device=device)))
        clip = dict(
            grad_clip=kwargs.get("grad_clip", 1.0),
            clip_mode=kwargs.get("clip_mode", "global"),
        )

        def call(method=method, batch=batch, optimizer=optimizer, clip=clip):
            return train_step(method, batch, kwargs["loss"], optimizer, **clip)

        calls[name] = call
    plan = ThreadPlan(device).start()
    try:
        return interleaved_median(calls, rounds=rounds, warmup=1, device=device)
    finally:
        plan.restore()


def equal_seconds(
    seconds: float,
    train_set,
    test_set,
    names=None,
    n_train: int | None = None,
    device=None,
    seed: int = 0,
) -> dict[str, dict]:
    """Pretrain every method in ``names`` (default: all of :data:`RECIPES`) for about
    ``seconds`` each, and judge each frozen backbone: ``{name: row}``, each row with
    the ``steps`` taken, the ``views`` per image, the ``images_seen``, the training
    ``seconds`` it took, and the ``knn`` and ``linear`` test accuracy (features of
    ``n_train`` training images, seeded, and of the whole ``test_set``). The row
    ``"random init"`` is the shared random backbone
    (:func:`vitbook.baselines.random_backbone`) judged the same way."""
    if not seconds > 0:
        raise ValueError(f"seconds={seconds!r} must be a positive number of seconds")
    names = list(RECIPES) if names is None else list(names)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"names={unknown!r}: not recipes; there are {list(RECIPES)}")
    device = get_device() if device is None else torch.device(device)
    pace = step_seconds(names, train_set, device)
    train_part = train_set.subset(n_train, seed=seed)
    loaders = (train_part.loader(512), test_set.loader(512))

    def judge(backbone) -> dict:
        return frozen_accuracy(backbone, *loaders, device=device, seed=seed)

    rows = {}
    for name in names:
        steps = max(1, round(seconds / pace[name]))
        p = pretraining(name, steps, seed=seed)
        loader = train_set.loader(
            p.batch_size, shuffle=True, drop_last=p.drop_last, seed=seed, device=device
        )
        history = fit(
            p.method,
            loader,
            steps=steps,
            device=device,
            seed=seed,
            desc=f"{name}, {seconds:g} s",
            **p.fit_kwargs,
        )
        rows[name] = {
            "steps": steps,
            "views": p.views,
            "images_seen": steps * p.batch_size,
            "seconds": history.train_seconds,
            **judge(p.method.backbone),
        }
    rows["random init"] = {
        "steps": 0,
        "views": 0,
        "images_seen": 0,
        "seconds": 0.0,
        **judge(random_backbone(seed=seed)),
    }
    return rows


__all__ = ["equal_seconds", "step_seconds"]
