"""Figures of chapter 4 (ScalableViT): the keys one query reads under IWSA (its window,
and its 3x3 neighbourhood through the LIM) and SSA (one key per reduced cell, keys
``c_ratio`` times as wide). The cost figure is chapter 3's
:func:`~vitbook.viz.twins.plot_local_global_cost`, which also measures IWSA and SSA."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from ..layers import pair
from .common import grid_lines, patch_grid, tint, to_image


def scalable_receptive_fields(grid, query, window_size: int, sr_ratio: int) -> dict:
    """For the token ``query = (row, col)`` of a ``grid = (h, w)`` map: the tokens each
    part of a ScalableViT block pair lets it read, as ``(h, w)`` boolean maps with the
    number of keys. ``"IWSA window"``: its ``k x k`` window (cut by the border where
    the window does not divide the map; the padding is not drawn); ``"LIM"``: its 3x3
    neighbourhood, whose values the LIM adds; ``"SSA"``: every token a reduced cell
    covers, read through ``(h // r) * (w // r)`` keys."""
    (h, w), (qy, qx), k, r = grid, query, window_size, sr_ratio
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    window = (ys // k == qy // k) & (xs // k == qx // k)
    lim = (np.abs(ys - qy) <= 1) & (np.abs(xs - qx) <= 1)
    covered = (ys < h // r * r) & (xs < w // r * r)  # the strided conv drops the rest
    return {
        "IWSA window": (window, int(window.sum())),
        "LIM": (lim, int(lim.sum())),
        "SSA": (covered, (h // r) * (w // r)),
    }


def plot_scalable_receptive_fields(
    image: torch.Tensor,
    patch_size: int,
    query=(3, 3),
    window_size: int = 4,
    sr_ratio: int = 4,
    c_ratio: float = 1.25,
    dim: int = 64,
):
    """The keys one query token (red star) reads on a photo: windowed attention alone
    (Twins' LSA), ScalableViT's IWSA (the window, plus the 3x3 neighbourhood whose
    values the LIM adds, across window borders) and SSA (the whole picture, one key
    per ``r x r`` cell; keys and queries ``c_ratio * dim`` wide)."""
    (h, w), (qy, qx) = patch_grid(image, patch_size), pair(query)
    if not (0 <= qy < h and 0 <= qx < w):
        raise ValueError(f"query {(qy, qx)} is outside the {h}x{w} patch grid")
    if not 1 <= window_size <= min(h, w):
        raise ValueError(f"window_size {window_size} must be in [1, {min(h, w)}]")
    if not 1 <= sr_ratio <= min(h, w):
        raise ValueError(f"sr_ratio {sr_ratio} must be in [1, {min(h, w)}]")
    if not c_ratio > 0:
        raise ValueError(f"c_ratio {c_ratio} must be > 0")
    fields = scalable_receptive_fields((h, w), (qy, qx), window_size, sr_ratio)
    (window, k2), (lim, n_lim), (covered, keys) = fields.values()
    p, photo = patch_size, to_image(image)
    # 2 x 2 panels fit the page's column; the fourth holds the legend
    fig, grid = plt.subplots(2, 2, figsize=(8.2, 8.6))
    axes, key = grid.ravel()[:3], grid[1, 1]
    for ax in axes:
        ax.imshow(photo)
        grid_lines(ax, h, w, 1, p, color="w", lw=0.3, alpha=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{w} tokens across ({p}x{p} pixels each)", fontsize=9)
        ax.set_ylabel(f"{h} tokens down", fontsize=9)
    m = window_size
    tint(axes[0], window, {True: "tab:blue"}, p)
    grid_lines(axes[0], h, w, m, p, color="k", lw=1.8)
    axes[0].set_title(f"windows alone (Twins LSA)\n{k2} keys", fontsize=10)
    tint(axes[1], window & ~lim, {True: "tab:blue"}, p)
    tint(axes[1], lim & ~window, {True: "tab:orange"}, p)
    tint(axes[1], window & lim, {True: "tab:purple"}, p)
    grid_lines(axes[1], h, w, m, p, color="k", lw=1.8)
    outside = int((lim & ~window).sum())
    axes[1].set_title(
        f"IWSA: {m}x{m} window + LIM (3x3 on values)\n{k2} keys + {outside} "
        "neighbours outside",
        fontsize=10,
    )
    r = sr_ratio
    tint(axes[2], covered, {True: "tab:green"}, p, alpha=0.25)
    grid_lines(axes[2], h // r, w // r, 1, p * r, color="k", lw=1)
    width = dim * c_ratio
    axes[2].set_title(
        f"SSA: {keys} keys, each a learned\nsummary of one {r}x{r} cell", fontsize=10
    )
    key.axis("off")
    key.legend(
        handles=[
            Patch(color="tab:blue", alpha=0.6, label="attention (window)"),
            Patch(color="tab:orange", alpha=0.6, label="LIM only"),
            Patch(color="tab:purple", alpha=0.6, label="attention and LIM"),
            Patch(color="tab:green", alpha=0.25, label="SSA: every cell"),
        ],
        loc="upper left",
        fontsize=10,
        title="keys of the query (red star)",
        title_fontsize=10,
    )
    key.text(
        0.02,
        0.25,
        f"SSA's widths:\nq, k: C' = {c_ratio:g} x {dim} = {width:g}\nv: C = {dim}",
        transform=key.transAxes,
        fontsize=10,
        va="top",
    )
    for ax in axes:
        ax.plot(qx * p + p / 2 - 0.5, qy * p + p / 2 - 0.5, "*", color="red", ms=14)
    fig.suptitle(
        f"the keys one query (red star) reads in a ScalableViT block pair,\non a "
        f"{h}x{w} map of tokens",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


__all__ = ["scalable_receptive_fields", "plot_scalable_receptive_fields"]
