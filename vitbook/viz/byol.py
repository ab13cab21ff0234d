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
        level = None
        if key == "std" and projection_dim:
            level = 1 / math.sqrt(projection_dim)
            # named in the shared legend: a label on the line hides under the curves
            ax.axhline(
                level,
                color="k",
                ls="--",
                lw=1,
                label=rf"$1/\sqrt{{P}}$, P = {projection_dim}",
            )
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if "erank" in key:  # from about the dimension down to 1 (collapse): log scale
            ax.set_yscale("log")
            ax.set_ylim(bottom=1)
        else:
            # a healthy run's spread starts at 1/sqrt(P): room above it, so that the
            # dashed line is not drawn on the panel's frame
            top = max(ax.get_ylim()[1], 1.15 * level) if level else None
            ax.set_ylim(0, top)
    # one legend under the four panels for all of them: a legend inside a panel covers
    # the curves of its first steps, where the runs differ most
    handles, labels = axes[0, 1].get_legend_handles_labels()
    legend = fig.legend(
        handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False
    )
    # the panels fill what the legend leaves free
    height = legend.get_window_extent(fig.canvas.get_renderer()).height
    fig.tight_layout(rect=(0, height / fig.bbox.height + 0.01, 1, 1))
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
        # the momentum is the chapter's tau, rising from its base to its final value
        tau = (byol.target.base, byol.target.final)
        target = ["the same network,", rf"EMA $\tau$: {tau[0]} -> {tau[1]}"]
        link = "EMA"
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
