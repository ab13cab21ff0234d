"""The classifiers the chapters train on Fashion-MNIST, and how they train them, in one
place, so the comparison chapter races exactly the models the chapters built (chapters
1-4; NaViT, chapter 5, reads lists of images of any size and is not raced there).

``CHAPTER_MODELS[name]`` is ``(chapter, class, small config, full config)``: the small
configuration is the one each chapter uses on a CPU, the full one on a GPU
(:func:`vitbook.at_scale`). ``CHAPTER_RECIPES[name]`` is the learning rate, batch
size and number of epochs each chapter trains with on a CPU (``NAVIT`` and
``NAVIT_RECIPE`` the same for chapter 5). All are read from :mod:`vitbook.configs`,
where the chapters read theirs; ``tests/test_zoo.py`` checks that the chapters' code
still takes them from there.

``python -m vitbook.zoo --seconds 30 60 120`` measures what the README's
time-to-accuracy table records: the test accuracy each chapter's model and recipe reach
in a training budget of so many seconds on this machine (chapters 1-5, NaViT included);
``--epochs 10 --seeds 0 1 2`` trains every model listed for 10 epochs instead, once per
seed, and prints the mean over the seeds too (how a recipe change is told from noise);
seed 0 with a model's own ``CHAPTER_RECIPES`` epochs is its chapter's run.
"""

from __future__ import annotations

import argparse
import ast
import statistics

import torch
from torch import nn

from . import configs, data
from .models import CNN, NaViT, ScalableViT, Swin, Twins, ViT
from .train import at_scale, evaluate, fit, get_device, seed_everything

CHAPTER_MODELS: dict[str, tuple[int, type, dict, dict]] = {
    "CNN": (1, CNN, *configs.CNN),
    "ViT": (1, ViT, *configs.VIT),
    "Swin": (2, Swin, *configs.SWIN),
    "Twins-SVT": (3, Twins, *configs.TWINS),
    "ScalableViT": (4, ScalableViT, *configs.SCALABLE_VIT),
}


def chapter_model(
    name: str, num_classes: int = 10, channels: int = 1, **changes
) -> nn.Module:
    """A fresh model of chapter ``CHAPTER_MODELS[name]``, at the current scale, for
    28x28 Fashion-MNIST images; ``changes`` replace entries of its configuration
    (``chapter_model("ViT", patch_size=4)``)."""
    if name not in CHAPTER_MODELS:
        raise ValueError(
            f"name={name!r}: not a chapter model; there are {list(CHAPTER_MODELS)}"
        )
    _, cls, small, full = CHAPTER_MODELS[name]
    config = {**at_scale(small=small, full=full), **changes}
    if cls is CNN:
        return CNN(num_classes=num_classes, channels=channels, **config)
    return cls(image_size=28, num_classes=num_classes, channels=channels, **config)


def _recipe(name: str, epochs: str = "epochs") -> dict:
    cfg = configs.chapter(name, "small")
    return dict(lr=cfg.lr, batch_size=cfg.batch_size, epochs=getattr(cfg, epochs))


# The CPU recipe of each chapter: AdamW (weight decay 0.05 on weight matrices), 10%
# warm-up then cosine decay, seed 0; ``epochs`` is the chapter's own budget.
CHAPTER_RECIPES: dict[str, dict] = {
    # chapter 1 races its CNN on the clock; the zoo gives it the ViT's epochs
    "CNN": _recipe("01_vit"),
    "ViT": _recipe("01_vit"),
    "Swin": _recipe("02_swin"),
    "Twins-SVT": _recipe("03_twins"),
    "ScalableViT": _recipe("04_scalable_vit"),
}

# Chapter 5: NaViT trains on images of random sizes from 14 to 42 pixels a side (7x7
# patches, 64-token sequences) and is tested at the native 28x28.
_NAVIT = configs.chapter("05_navit", "small")
NAVIT = dict(
    **_NAVIT.model, patch_size=_NAVIT.patch_size, token_budget=_NAVIT.token_budget
)
NAVIT_RECIPE = dict(
    lr=_NAVIT.lr,
    batch_size=_NAVIT.batch_size,
    steps=_NAVIT.steps,
    heights=_NAVIT.heights,
)


def time_to_accuracy(
    name: str,
    seconds: float | None = None,
    device=None,
    progress: bool = True,
    *,
    epochs: float | None = None,
    seed: int = 0,
    **changes,
) -> dict:
    """Train chapter model ``name`` (or ``"NaViT"``) with its chapter's recipe for
    ``seconds`` of training, the schedule stretched over that budget, or for ``epochs``
    (the kind of budget the chapters use), and return ``{"acc": test accuracy, "steps":
    ..., "seconds": ...}`` on the full 28x28 Fashion-MNIST test set. ``seed`` seeds the
    initialization, the order of the batches and the training's draws: an ``epochs``
    run is reproducible number for number, a ``seconds`` run's steps follow the clock.

    ``changes`` try another recipe: ``lr`` and ``batch_size`` replace the recipe's,
    anything else an entry of the model's configuration (``patch_size=4``)."""
    if name not in CHAPTER_RECIPES and name != "NaViT":
        raise ValueError(
            f"name={name!r}: not a chapter model; there are "
            f"{list(CHAPTER_RECIPES) + ['NaViT']}"
        )
    if (seconds is None) == (epochs is None):
        raise ValueError(f"seconds={seconds}, epochs={epochs}: give exactly one budget")
    recipe_changes = {k: changes.pop(k) for k in ("lr", "batch_size") if k in changes}
    device = device or get_device()
    train_set, test_set = data.fashion_mnist("train"), data.fashion_mnist("test")
    seed_everything(seed)
    if name == "NaViT":
        r, config = {**NAVIT_RECIPE, **recipe_changes}, {**NAVIT, **changes}
        patch = config["patch_size"]
        model = NaViT(
            max_image_size=r["heights"][1], num_classes=10, channels=1, **config
        )
        loader = data.VariableResolutionLoader(
            train_set,
            r["batch_size"],
            heights=r["heights"],
            patch_size=patch,
            shuffle=True,
            seed=seed,
        )
        test_loader = data.VariableResolutionLoader(
            test_set, 1000, heights=(28, 28), patch_size=patch
        )
    else:
        r = {**CHAPTER_RECIPES[name], **recipe_changes}
        model = chapter_model(name, **changes)
        loader = train_set.loader(
            r["batch_size"], shuffle=True, seed=seed, device=device
        )
        test_loader = test_set.loader(1000, device=device)
    budget = f"{seconds:g} s" if epochs is None else f"{epochs:g} epochs"
    history = fit(
        model.to(device),
        loader,
        seconds=seconds,
        epochs=epochs,
        lr=r["lr"],
        seed=seed,
        device=device,
        progress=progress,
        desc=f"{name} {budget}",
    )
    acc = evaluate(model, test_loader, device=device)["acc"]
    return {"acc": acc, "steps": len(history.steps), "seconds": history.train_seconds}


DEFAULT_SECONDS = [30, 60, 120]
# arguments of time_to_accuracy that --set may not change: the command line's own
OWN_OPTIONS = {"seed": "--seeds", "seconds": "--seconds", "epochs": "--epochs"}


def main(argv=None) -> None:
    names = [*CHAPTER_RECIPES, "NaViT"]
    parser = argparse.ArgumentParser(
        prog="python -m vitbook.zoo",
        description="Test accuracy of each chapter's model and recipe after a "
        "training budget in seconds or epochs (Fashion-MNIST, 28x28 test set).",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds",
        type=float,
        nargs="+",
        help=f"default: {' '.join(map(str, DEFAULT_SECONDS))}",
    )
    budget.add_argument(
        "--epochs",
        type=float,
        nargs="+",
        help="the same number of epochs for every model",
    )
    parser.add_argument("--models", nargs="+", default=names, choices=names)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change the recipe (lr, batch_size) or the model (e.g. patch_size=4)",
    )
    args = parser.parse_args(argv)
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set {item!r}: expected KEY=VALUE, e.g. lr=3e-3")
        if key in OWN_OPTIONS:
            option = OWN_OPTIONS[key]
            parser.error(f"--set {item!r}: {key} has its own option, {option}")
        try:
            changes[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[key] = value  # a word, such as pool=mean
    # the keyword of time_to_accuracy, and its unit in the table's head
    unit, symbol = ("epochs", "epochs") if args.epochs else ("seconds", "s")
    values = args.epochs or args.seconds or DEFAULT_SECONDS
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {get_device()}" + (f", changes {changes}" if changes else "")
    )
    head = " | ".join(f"{v:g} {symbol}" for v in values)
    print(f"| model | {head} |\n|---|" + "---|" * len(values), flush=True)
    for name in args.models:
        accs = []
        for seed in args.seeds:
            cells = [
                time_to_accuracy(name, seed=seed, **{unit: v}, **changes)
                for v in values
            ]
            accs.append([c["acc"] for c in cells])
            label = name if args.seeds == [0] else f"{name}, seed {seed}"
            print(f"| {label} | " + " | ".join(map(_cell, cells)) + " |", flush=True)
        if len(args.seeds) > 1:
            means = " | ".join(f"{statistics.fmean(a):.2%}" for a in zip(*accs))
            print(f"| {name}, mean of {len(args.seeds)} seeds | {means} |", flush=True)


def _cell(result: dict) -> str:
    return f"{result['acc']:.2%} ({result['steps']:,} steps, {result['seconds']:.0f} s)"


__all__ = ["CHAPTER_MODELS", "CHAPTER_RECIPES", "chapter_model", "time_to_accuracy"]

if __name__ == "__main__":
    main()
