"""Where a chapter runs and how big: the device (cuda, then mps, then cpu), the one
scale switch (``small`` on a CPU, ``full`` on a GPU) and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

SCALES = ("small", "full")


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


__all__ = ["SCALES", "get_device", "scale", "at_scale", "seed_everything"]
