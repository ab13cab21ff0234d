"""Figures of chapter 10 (MP3): where the model puts each patch it was given without a
position."""

from __future__ import annotations

import math
from typing import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from .common import identity, to_image


def position_confusion(predicted: torch.Tensor, num_positions: int) -> torch.Tensor:
    """``predicted (N, n)``: the predicted position of token ``i`` (which sits at
    position ``i``) for N images -> ``(n, n)`` rates, row = true position, each row
    summing to 1."""
    n = predicted.shape[1]
    true = torch.arange(n).expand_as(predicted)
    counts = torch.zeros(n, num_positions).index_put_(
        (true.flatten().cpu(), predicted.flatten().cpu()),
        torch.ones(predicted.numel()),
        accumulate=True,
    )
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def plot_position_confusion(predicted: torch.Tensor, grid, title: str | None = None):
    """Left: the confusion matrix of positions (row: true, column: predicted). Right:
    the fraction of tokens put at their true place, drawn on the patch grid."""
    gh, gw = grid
    rates = position_confusion(predicted, gh * gw)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.9))
    im = left.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    left.set(
        xlabel="predicted position", ylabel="true position", title="position confusion"
    )
    # positions are whole numbers: no tick at 2.5
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=left, shrink=0.85, label="fraction of tokens")
    correct = rates.diagonal().reshape(gh, gw)
    im = right.imshow(correct.numpy(), cmap="viridis", vmin=0, vmax=1)
    for r in range(gh):
        for c in range(gw):
            right.text(
                c,
                r,
                f"{correct[r, c]:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="w" if correct[r, c] < 0.6 else "k",
            )
    # one tick per patch row and column, at the cell's centre (not at -0.5, 0.5, ...)
    right.set(
        xticks=range(gw),
        yticks=range(gh),
        xlabel="patch column",
        ylabel="patch row",
        title="put at the right place",
    )
    fig.colorbar(im, ax=right, shrink=0.85, label="accuracy")
    # as many digits as chance needs: 1/16 is 6.25%, as the text says, not 6.2%
    chance = f"{100 / (gh * gw):.3g}%"
    fig.suptitle(
        title or f"{rates.diagonal().mean():.1%} of positions right (chance {chance})"
    )
    fig.tight_layout()
    return fig


def plot_position_arrows(
    images: torch.Tensor,
    predicted: torch.Tensor,
    grid,
    to_pixels: Callable = identity,
    titles=None,
):
    """Each image with an arrow from every patch's true place to the place the model
    predicted for it; a dot where the prediction is right. Rows of at most three
    images, so that each stays large enough to read in the page's column."""
    gh, gw = grid
    n = len(images)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows + 0.4), squeeze=False
    )
    # the last row's empty places, when n is not a multiple of three
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    pictures = to_pixels(images).cpu()
    h, w = images.shape[-2:]
    ph, pw = h / gh, w / gw
    for k, ax in enumerate(axes.ravel()[:n]):
        ax.imshow(to_image(pictures[k]), cmap="gray", vmin=0, vmax=1)
        right = 0
        for i, j in enumerate(predicted[k].tolist()):
            (r0, c0), (r1, c1) = divmod(i, gw), divmod(j, gw)
            x0, y0 = (c0 + 0.5) * pw - 0.5, (r0 + 0.5) * ph - 0.5
            if i == j:
                ax.plot(x0, y0, "o", color="lime", ms=4)
                right += 1
            else:
                ax.annotate(
                    "",
                    xy=((c1 + 0.5) * pw - 0.5, (r1 + 0.5) * ph - 0.5),
                    xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="->", color="red", lw=1.2),
                )
        name = titles[k] if titles is not None else f"image {k}"
        ax.set_title(f"{name}: {right}/{gh * gw} right", fontsize=9)
        # the grid's rows and columns, numbered at the patches' centres as in
        # plot_position_confusion
        ax.set_xticks([(c + 0.5) * pw - 0.5 for c in range(gw)], labels=range(gw))
        ax.set_yticks([(r + 0.5) * ph - 0.5 for r in range(gh)], labels=range(gh))
    # the axes are named once for every panel: a label under each panel of the first
    # row would run into the titles of the second
    fig.supxlabel("patch column")
    fig.supylabel("patch row")
    fig.suptitle("true place -> predicted place (red); right (green)")
    # more room between the rows than tight_layout leaves: with it alone, the second
    # row's titles touched the first row's column numbers
    fig.tight_layout(h_pad=2.0)
    return fig


def plot_mp3_method(mp3, title: str | None = None):
    """MP3 as a diagram drawn from ``mp3`` (a :class:`vitbook.ssl.MP3`): patches
    without positions, attention that reads only a random set of context patches,
    and a classifier that names each patch's position."""
    from .common import plot_pipeline
    from .mae import _blocks

    n = mp3.num_patches
    keep = int(n * (1 - mp3.mask_ratio))
    encoder = mp3.backbone
    boxes = [
        ("patches", [f"{n} patches", "no position", "embedding"]),
        ("context mask", [f"keys: {keep} of {n}", "at random", "(queries: all)"]),
        ("encoder", [_blocks(len(encoder.blocks)), f"width {encoder.dim}"]),
        ("position head", [f"linear -> {n}", "one class per", "grid position"]),
        ("loss", ["cross-entropy:", "each patch's", "true position"]),
    ]
    return plot_pipeline(
        boxes, title or "MP3: find where each patch belongs", width=1.6
    )


__all__ = [
    "plot_mp3_method",
    "position_confusion",
    "plot_position_confusion",
    "plot_position_arrows",
]
