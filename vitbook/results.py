"""What one chapter's training run leaves for the chapters after it: a classifier's test
accuracy with the budget that bought it (epochs, steps, seconds), so that chapters 3
and 4 can print chapter 1's ViT and chapter 2's Swin beside their own model without
training them again.

    save_classifier("ViT", model, history, accuracy=0.86)   # chapter 1
    load_classifiers()["ViT"]["accuracy"]                   # chapter 3

The records live in ``<results dir>/classifiers/<name>.json`` (:func:`results_dir`:
``$VITBOOK_RESULTS``, which ``make test`` sets per clone, else a cache folder), apart
from the representation tables of chapters 6-10. A record measured at another
:func:`~vitbook.runtime.scale` is not returned.
"""

from __future__ import annotations

import json
import time

from torch import nn

from .history import History
from .probe import results_dir
from .runtime import scale


def save_classifier(
    name: str, model: nn.Module, history: History, accuracy: float, directory=None
) -> None:
    """Record ``name``'s test ``accuracy`` (a fraction), its parameter count and the
    training ``history``'s epochs, steps and seconds."""
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy={accuracy} must be a fraction in [0, 1]")
    if not history.steps:
        raise ValueError(f"the history of {name!r} has no steps: train it first")
    record = {
        "name": name,
        "accuracy": accuracy,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": history.steps[-1]["epoch"],
        "steps": history.steps[-1]["step"],
        "seconds": history.seconds,
        "scale": scale(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = results_dir(directory) / "classifiers" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def load_classifiers(directory=None) -> dict[str, dict]:
    """Every record :func:`save_classifier` left at the current scale: ``{name:
    record}``; empty when no chapter has run yet."""
    found = {}
    for path in sorted((results_dir(directory) / "classifiers").glob("*.json")):
        record = json.loads(path.read_text())
        if record["scale"] == scale():
            found[record["name"]] = record
    return found


def describe(record: dict | None, chapter: str) -> str:
    """One line for a table: the accuracy and its budget, or what to run first."""
    if record is None:
        return f"not measured yet: run {chapter} first (its result is saved)"
    budget = f"{record['epochs']} epochs, {record['steps']:,} steps"
    seconds = f"{record['seconds']:.0f} s"
    return f"{record['accuracy']:.2%} after {budget}, {seconds} ({chapter})"


__all__ = ["save_classifier", "load_classifiers", "describe"]
