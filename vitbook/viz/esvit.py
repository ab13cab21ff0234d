"""EsViT's figures: the region correspondences between two views, and the training
diagnostics (both halves of the loss and the collapse measures)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import cm, colors
from matplotlib.patches import ConnectionPatch

from .common import (
    moving_average,
    plot_branches,
    to_image,
    uniform_entropy_line,
)


def _centres(grid, size) -> np.ndarray:
    """Pixel centres ``(n, 2)`` as (x, y) of a row-major ``grid`` of regions over an
    image of ``size`` (h, w)."""
    (gh, gw), (h, w) = grid, size
    ys, xs = np.meshgrid(
        (np.arange(gh) + 0.5) * h / gh, (np.arange(gw) + 0.5) * w / gw, indexing="ij"
    )
    return np.stack([xs.ravel(), ys.ravel()], axis=1) - 0.5  # imshow's pixel centres


def plot_region_correspondences(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    index: torch.Tensor,
    cosine: torch.Tensor,
    grid_a,
    grid_b,
    *,
    title: str | None = None,
    cmap: str = "viridis",
):
    """Two views of one image ``(c, h, w)`` side by side, each region of ``view_a``
    joined by a line to the region of ``view_b`` it is matched to (``index`` ``(n_a,)``,
    as :meth:`vitbook.ssl.EsViT.correspondences` returns it); the line's colour is the
    cosine similarity of the two regions' features (colour bar). The grids ``(h, w)``
    of regions are drawn faintly over each view."""
    index, cosine = index.cpu().numpy(), cosine.detach().float().cpu().numpy()
    if len(index) != grid_a[0] * grid_a[1]:
        raise ValueError(
            f"index has {len(index)} entries but grid_a {tuple(grid_a)} has "
            f"{grid_a[0] * grid_a[1]} regions"
        )
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2))
    centres = []
    for ax, view, grid, name in zip(
        axes, (view_a, view_b), (grid_a, grid_b), ("view A (student)", "view B")
    ):
        h, w = view.shape[-2:]
        ax.imshow(to_image(view), cmap="gray", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        for k in range(1, grid[0]):
            ax.axhline(k * h / grid[0] - 0.5, color="w", lw=0.4, alpha=0.5)
        for k in range(1, grid[1]):
            ax.axvline(k * w / grid[1] - 0.5, color="w", lw=0.4, alpha=0.5)
        ax.set(xlabel="x (pixels)", ylabel="y (pixels)", title=name)
        centres.append(_centres(grid, (h, w)))
    norm = colors.Normalize(vmin=min(0.0, float(cosine.min())), vmax=1.0)
    mapper = cm.ScalarMappable(norm=norm, cmap=cmap)
    for i, j in enumerate(index):
        line = ConnectionPatch(
            xyA=centres[0][i],
            coordsA=axes[0].transData,
            xyB=centres[1][j],
            coordsB=axes[1].transData,
            color=mapper.to_rgba(cosine[i]),
            lw=1.2,
            alpha=0.9,
        )
        fig.add_artist(line)
    for ax, pts in zip(axes, centres):
        ax.plot(pts[:, 0], pts[:, 1], ".", color="orange", ms=4)
    fig.colorbar(mapper, ax=axes, fraction=0.03, label="cosine of matched features")
    fig.suptitle(title or "each region of A -> the region of B it learns from")
    return fig


def plot_esvit_diagnostics(history, smooth: int = 10, max_entropy=None):
    """EsViT's training from a ``fit`` history whose steps carry ``EsViT.metrics``:
    the view and region halves of the loss, the teacher's entropy on the view task
    (``log K`` means uniform output, 0 one-hot: both are collapse), the per-dimension
    std and the effective rank of the student's view embeddings. ``max_entropy``
    (``log K``) is drawn as a dashed line on the entropy panel, as chapter 7's
    :func:`plot_collapse_diagnostics` draws it."""
    rows = history.steps
    missing = {"view", "region", "entropy", "std", "erank"} - set(
        rows[0] if rows else {}
    )
    if missing:
        raise ValueError(
            f"the history lacks {sorted(missing)}: train with "
            "fit(..., loss=vitbook.ssl.method_loss)"
        )
    steps = [r["step"] for r in rows]
    # 2 x 2 panels fit the page's column
    fig, axes = plt.subplots(2, 2, figsize=(8.2, 5.8))
    panels = [
        (("view", "region"), "cross-entropy", "loss, view and region halves"),
        (("entropy",), "nats", "teacher entropy"),
        (("std",), "std", "per-dim. std of embeddings"),
        (("erank",), "effective rank", "effective rank of embeddings"),
    ]
    for ax, (keys, ylabel, title) in zip(axes.ravel(), panels):
        for k in keys:
            ax.plot(steps, moving_average([r[k] for r in rows], smooth), label=k)
        if keys == ("entropy",) and max_entropy is not None:
            uniform_entropy_line(ax, max_entropy)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_esvit_method(esvit, title: str | None = None):
    """EsViT as a diagram drawn from ``esvit`` (a :class:`vitbook.ssl.EsViT`): DINO's
    view-level loss plus a region-level one, in which each student token is matched
    to the teacher token it is most similar to."""
    from .dino import _backbone, _crops

    k, kr = esvit.center.shape[1], esvit.region_center.shape[1]
    teacher = esvit.teacher
    w = esvit.region_weight
    top = [
        ("views", _crops(esvit.multicrop)),
        (
            "student",
            [
                _backbone(esvit.student.backbone),
                f"view head -> {k:,}",
                f"region head -> {kr:,}",
            ],
        ),
        ("softmax", [f"$\\tau_s$ = {esvit.student_temp}", "every view and token"]),
    ]
    bottom = [
        ("views", _crops(esvit.multicrop, local=False)),
        ("teacher", ["the same network,", f"EMA m: {teacher.base} -> {teacher.final}"]),
        (
            "center, softmax",
            [
                "two centers (EMA)",
                f"$\\tau_t$: {esvit.warmup_teacher_temp} -> {esvit.teacher_temp}",
            ],
        ),
    ]
    loss = (
        "two losses",
        [
            f"view: DINO's, x {1 - w:g}",
            f"region: x {w:g}, each",
            "token to its best",
            f"match ({esvit.match})",
        ],
    )
    return plot_branches(
        top, bottom, loss, link=(1, "EMA"), title=title or "EsViT: views and regions"
    )


__all__ = ["plot_esvit_method", "plot_region_correspondences", "plot_esvit_diagnostics"]
