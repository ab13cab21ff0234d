"""BYOL's figure: the loss and the collapse diagnostics of several runs side by
side."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

import torch

from .common import moving_average, plot_branches

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


def plot_byol_method(byol, title: str | None = None):
    """BYOL (or SimSiam) as a diagram drawn from ``byol`` (a
    :class:`vitbook.ssl.BYOL`): the online network and its predictor try to predict
    the target's projection of the other view; the target is a moving average of the
    online network (BYOL) or the online network itself (SimSiam)."""
    from .dino import _backbone, _size

    projection = byol.online.projector
    out = [m for m in projection.modules() if hasattr(m, "out_features")][-1]
    size = _size(byol.multicrop.global_size)
    has_predictor = not isinstance(byol.predictor, torch.nn.Identity)
    top = [
        ("views", [f"2 views {size}"]),
        (
            "online",
            [_backbone(byol.online.backbone), f"projector -> {out.out_features}"],
        ),
        ("predictor", [f"MLP -> {out.out_features}"] if has_predictor else ["none"]),
    ]
    if byol.target is not None:
        m = (byol.target.base, byol.target.final)
        target, link = ["the same network,", f"EMA m: {m[0]} -> {m[1]}"], "EMA"
    else:
        target, link = ["the online network", "itself"], "same weights"
    bottom = [
        ("views", ["the same 2, swapped"]),
        ("target", target),
        ("projection", [f"{out.out_features} numbers"]),
    ]
    loss = ("cosine loss", ["2 - 2 cos(p, z')", "both orders", "of the views"])
    name = "BYOL" if byol.mode == "byol" else "SimSiam"
    return plot_branches(
        top,
        bottom,
        loss,
        link=(1, link),
        title=title or f"{name}: predict the other view",
    )


__all__ = ["plot_byol_method", "plot_byol_diagnostics"]
