"""BYOL's figure: the loss and the collapse diagnostics of several runs side by
side."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .common import moving_average

PANELS = (
    ("loss", "loss (2 - 2 cos, both views)"),
    ("std", "std of normalized projection"),
    ("erank", "effective rank of projection"),
    ("rep_erank", "effective rank of backbone output"),
)


def plot_byol_diagnostics(histories: dict, smooth: int = 5, projection_dim=None):
    """The loss and three collapse diagnostics over training, one line per run
    (``histories`` maps a run's name to its ``fit`` History, trained with
    ``loss=vitbook.ssl.method_loss`` so its steps hold ``BYOL.metrics``).
    ``projection_dim`` draws ``1/sqrt(P)`` as a dashed line on the std panel: the
    std of unit vectors spread evenly in ``P`` dimensions; a collapsed run's is 0. The
    effective ranks are on a log scale, down to 1 (every vector the same)."""
    # 2 x 2 panels fit the page's column
    fig, axes = plt.subplots(2, 2, figsize=(8.2, 6.0))
    for ax, (key, label) in zip(axes.ravel(), PANELS):
        for j, (name, history) in enumerate(histories.items()):
            rows = [r for r in history.steps if key in r]
            if not rows:
                raise ValueError(
                    f"run {name!r} has no {key!r} in its history: train with "
                    "fit(..., loss=vitbook.ssl.method_loss)"
                )
            values = np.asarray([r[key] for r in rows])
            steps = [r["step"] for r in rows]
            ax.plot(steps, moving_average(values, smooth), color=f"C{j}", label=name)
        if key == "std" and projection_dim:
            level = 1 / math.sqrt(projection_dim)
            ax.axhline(level, color="gray", ls="--", lw=1)
            ax.annotate(
                "1/sqrt(P)",
                (0.02, level),
                xycoords=("axes fraction", "data"),
                va="top",  # under the line, inside the axes
                fontsize=9,
                color="gray",
            )
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if "erank" in key:  # from about the dimension down to 1 (collapse): log scale
            ax.set_yscale("log")
            ax.set_ylim(bottom=1)
        else:
            ax.set_ylim(bottom=0)
        # each panel says which run is which: a reader looks at one at a time
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["plot_byol_diagnostics"]
