"""Figure helpers every chapter uses: images from tensors, grids, training curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..layers import pair


def to_image(x: torch.Tensor) -> np.ndarray:
    """A ``(c, h, w)`` or ``(h, w)`` tensor in [0, 1] -> an array ``imshow`` takes."""
    x = x.detach().float().cpu()
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    return x.clamp(0, 1).numpy()


def patch_grid(image: torch.Tensor, patch_size) -> tuple[int, int]:
    """The ``(rows, columns)`` of patches an image ``(c, h, w)`` is cut into; a
    ValueError if they do not fit."""
    h, w = image.shape[-2:]
    ph, pw = pair(patch_size)
    if h % ph or w % pw:
        raise ValueError(f"image {h}x{w} is not divisible by patch_size {ph}x{pw}")
    return h // ph, w // pw


def image_grid(
    images, titles=None, ncols: int = 8, size: float = 1.6, cmap="gray", suptitle=None
):
    """Images side by side, optional titles under each."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        min(n, ncols),
        figsize=(size * min(n, ncols), size * nrows + 0.3),
        squeeze=False,
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_image(images[i]), cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def moving_average(values, window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it; the first ones average
    what there is so far, so that the curve starts where the values start."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    # no dip at the start
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def identity(x: torch.Tensor) -> torch.Tensor:
    """The default ``to_pixels`` of the figures that take one: images already in
    [0, 1]."""
    return x


def uniform_entropy_line(ax, max_entropy: float) -> None:
    """The dashed line at ``log K``, the entropy of a uniform distribution over the
    ``K`` outputs: where a collapsed-by-uniformity teacher sits."""
    ax.axhline(
        max_entropy,
        color="gray",
        ls="--",
        lw=1,
        label=f"log K = {max_entropy:.2f} (uniform)",
    )


def tint(ax, labels: np.ndarray, colors: dict, patch_size: int, alpha: float = 0.45):
    """Colour each patch of a picture drawn on ``ax`` by ``colors[label]``, ``labels``
    being a ``(rows, columns)`` map of patches (a boolean mask with ``{True: color}``);
    labels without a colour stay clear."""
    rgba = np.zeros(labels.shape + (4,))
    for label, color in colors.items():
        rgba[labels == label] = plt.matplotlib.colors.to_rgba(color, alpha)
    # one patch_size x patch_size block of pixels per patch
    pixels = np.kron(rgba, np.ones((patch_size, patch_size, 1)))
    ax.imshow(pixels, interpolation="nearest")


def grid_lines(ax, h: int, w: int, step: int, patch_size: int, **style):
    """The lines between the cells of ``step x step`` patches, on a picture of ``h x
    w`` patches of ``patch_size`` pixels (pixel centres at whole numbers)."""
    for y in range(0, h + 1, step):
        ax.axhline(y * patch_size - 0.5, **style)
    for x in range(0, w + 1, step):
        ax.axvline(x * patch_size - 0.5, **style)


def plot_history(history, smooth: int = 20, title: str | None = None):
    """Training loss per step, and train/test accuracy when the history has them."""
    steps = [r["step"] for r in history.steps]
    has_acc = any("acc" in r for r in history.steps) or any(
        "test_acc" in r for r in history.evals
    )
    fig, axes = plt.subplots(
        1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.2), squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(steps, [r["loss"] for r in history.steps], color="C0", alpha=0.25, lw=0.8)
    ax.plot(
        steps,
        moving_average([r["loss"] for r in history.steps], smooth),
        color="C0",
        label="train loss",
    )
    if any("test_loss" in r for r in history.evals):
        ax.plot(
            [r["step"] for r in history.evals],
            [r["test_loss"] for r in history.evals],
            "o-",
            color="C1",
            label="test loss",
        )
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.legend()
    if has_acc:
        ax = axes[0, 1]
        acc = [r.get("acc", np.nan) for r in history.steps]
        ax.plot(
            steps,
            moving_average(acc, smooth),
            color="C0",
            label="train (batch, smoothed)",
        )
        ev = [r for r in history.evals if "test_acc" in r]
        if ev:
            ax.plot(
                [r["step"] for r in ev],
                [r["test_acc"] for r in ev],
                "o-",
                color="C1",
                label="test",
            )
            ax.annotate(
                f"{ev[-1]['test_acc']:.1%}",
                (ev[-1]["step"], ev[-1]["test_acc"]),
                textcoords="offset points",
                xytext=(-10, -14),
                color="C1",
            )
        ax.set(xlabel="step", ylabel="accuracy", title="accuracy")
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(
    predictions: torch.Tensor,
    labels: torch.Tensor,
    classes,
    title: str = "confusion matrix",
):
    """Rows: true class, columns: predicted class, each row normalized to sum to 1."""
    k = len(classes)
    counts = torch.zeros(k, k).index_put_(
        (labels.cpu(), predictions.cpu()), torch.ones(len(labels)), accumulate=True
    )
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.5 * k + 1.5))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if rates[i, j] >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def shape_text(shape) -> str:
    """``(17, 64)`` -> ``"17 x 64"``: a tensor's shape as a diagram prints it."""
    return " x ".join(str(int(s)) for s in shape)


def _box(ax, x, y, width, height, name, lines, color, spacing=(0.2, 0.55, 0.3)):
    """One box of a block diagram: its name in bold on top, ``lines`` below;
    ``spacing``: the name's drop from the top, the first line's, each next line's."""
    name_drop, first, step = spacing
    ax.add_patch(plt.Rectangle((x, y), width, height, fc=color, ec="0.3", lw=1.2))
    ax.text(
        x + width / 2,
        y + height - name_drop,
        name,
        ha="center",
        va="top",
        fontsize=10,
        weight="bold",
    )
    for k, line in enumerate(lines):
        ax.text(
            x + width / 2,
            y + height - first - step * k,
            line,
            ha="center",
            va="top",
            fontsize=8.5,
        )


def _arrow(ax, start, end, **style) -> None:
    ax.annotate(
        "", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1.5, **style)
    )


def _finish_diagram(fig, ax, width: float, height: float, title):
    """A diagram's frame: its drawing area with a small margin, no axes, the title."""
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(-0.1, height + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_pipeline(boxes, title: str | None = None, width: float = 1.27):
    """A left-to-right block diagram: ``boxes`` is a list of ``(name, lines)``, each
    drawn as a box with its name on top and ``lines`` (shapes, sizes) below, joined by
    arrows. The architecture diagrams of every chapter are drawn with it."""
    n = len(boxes)
    rows = max(len(lines) for _, lines in boxes) + 1
    height = 0.32 * rows + 0.5
    fig, ax = plt.subplots(figsize=(width * n + 0.2, height + 0.7))
    gap = 0.2
    for i, (name, lines) in enumerate(boxes):
        x = i * (width + gap)
        spacing = (0.25, 0.62, 0.32)
        _box(ax, x, 0, width, height, name, lines, plt.cm.Pastel1(i % 9), spacing)
        if i:
            _arrow(ax, (x - gap, height / 2), (x, height / 2))
    return _finish_diagram(fig, ax, n * (width + gap) - gap, height, title)


def plot_branches(top, bottom, loss, link=None, stop_gradient: bool = True, title=None):
    """Two pipelines, one above the other, that meet in one loss: the method diagrams
    of the self-supervised chapters. ``top`` (the branch gradients train) and
    ``bottom`` (the branch that gives the targets) are lists of ``(name, lines)``;
    ``loss`` is one ``(name, lines)``. ``link = (i, text)`` draws a dashed arrow from
    box ``i`` of the top row down to box ``i`` of the bottom row, labelled ``text``
    (how the target's weights follow: "EMA", "the same weights"); ``stop_gradient``
    marks the bottom row's arrow into the loss."""
    width, gap, vgap = 1.75, 0.4, 0.8
    rows = max(len(lines) for _, lines in [*top, *bottom, loss]) + 1
    height = 0.3 * rows + 0.45
    n = max(len(top), len(bottom))
    total = (n + 1) * width + n * gap
    fig, ax = plt.subplots(figsize=(total + 0.3, 2 * height + vgap + 0.6))
    loss_x, loss_y = n * (width + gap), (height + vgap) / 2
    for r, (row, y) in enumerate(((top, height + vgap), (bottom, 0.0))):
        for i, (name, lines) in enumerate(row):
            x = i * (width + gap)
            _box(ax, x, y, width, height, name, lines, plt.cm.Pastel1(2 * i + r))
            if i:
                _arrow(ax, (x - gap, y + height / 2), (x, y + height / 2))
        # the row's last box into the loss, the target's through a stop-gradient
        start = ((len(row) - 1) * (width + gap) + width, y + height / 2)
        end = (loss_x, loss_y + height * (0.7 if r == 0 else 0.3))
        _arrow(ax, start, end, color="0.2")
    _box(ax, loss_x, loss_y, width, height, loss[0], loss[1], "0.9")
    if stop_gradient:
        ax.text(
            loss_x + width / 2,
            loss_y - 0.1,
            "no gradient into\nthe lower branch",
            ha="center",
            va="top",
            fontsize=8.5,
            color="C3",
        )
    if link is not None:
        i, text = link
        x = i * (width + gap) + width / 2
        _arrow(ax, (x, height + vgap), (x, height), ls="--", color="C0")
        ax.text(
            x + 0.08, height + vgap / 2, text, va="center", fontsize=8.5, color="C0"
        )
    return _finish_diagram(fig, ax, total, 2 * height + vgap, title)
