"""Figures of chapter 5 (NaViT): images at their own sizes, packed sequences, the masks
that keep packed images apart, token utilization, accuracy against resolution."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..packing import Packing, padding_utilization, pack
from .common import to_image

PADDING = "#bdbdbd"


# tab20 without its two greys (14, 15), which look like the padding's grey, then
# tab20b's 15 lighter shades (its darkest five would hide the black index written on
# a block): 33 colours, so a batch of 24 images (chapter 5's explorer) repeats none
IMAGE_COLORS = [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]
IMAGE_COLORS += [plt.get_cmap("tab20b")(i) for s in (2, 1, 3) for i in range(s, 20, 4)]


def _image_colors(n: int) -> list:
    return [IMAGE_COLORS[i % len(IMAGE_COLORS)] for i in range(n)]


def _split_rows(widths: list[float], gap: float, max_width: float) -> list[list[int]]:
    """The fewest rows, in order, whose widths (``gap`` between neighbours) fit in
    ``max_width``: of the splits into that many rows, the one whose widest row is
    narrowest, so the rows come out balanced. One row per item when none fits."""

    def row_width(row):
        return sum(widths[i] for i in row) + gap * (len(row) - 1)

    n = len(widths)
    for k in range(1, n + 1):
        best = None
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            rows = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
            widest = max(row_width(r) for r in rows)
            if best is None or widest < best[0]:
                best = (widest, rows)
        if best[0] <= max_width:
            return best[1]
    return [[i] for i in range(n)]


def plot_sizes(
    images,
    titles=None,
    suptitle: str | None = None,
    scale: float = 0.04,
    max_width: float = 8.0,
):
    """Images at their own sizes on one pixel scale (``scale`` inches per pixel, so a
    small image looks small), in order, in as few rows as keep the figure within
    ``max_width`` inches: a wider figure would be shrunk to the page's column, and its
    titles with it."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    # inches: between images, the two-line title above each, the suptitle, the margin
    gap, title, top, margin = 0.25, 0.45, 0.45 if suptitle else 0.05, 0.1
    widths = [scale * img.shape[-1] for img in images]
    rows = _split_rows(widths, gap, max_width - 2 * margin)
    heights = [max(scale * images[i].shape[-2] for i in row) + title for row in rows]
    fig_w = 2 * margin + max(
        sum(widths[i] for i in r) + gap * (len(r) - 1) for r in rows
    )
    fig_h = top + sum(heights) + margin
    fig = plt.figure(figsize=(fig_w, fig_h))
    y = fig_h - top  # the top of the current row, in inches from the bottom
    for row, row_h in zip(rows, heights):
        x = margin
        for i in row:
            img = images[i]
            h, w = img.shape[-2:]
            # top-aligned under its title, at the shared scale
            box = (x, y - title - scale * h, scale * w, scale * h)
            ax = fig.add_axes(
                (box[0] / fig_w, box[1] / fig_h, box[2] / fig_w, box[3] / fig_h)
            )
            ax.imshow(to_image(img), cmap="gray", aspect="auto")
            label = f"{h}x{w}" if titles is None else f"{titles[i]}\n{h}x{w}"
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            x += scale * w + gap
        y -= row_h
    if suptitle:
        fig.suptitle(suptitle, y=1 - 0.1 / fig_h, va="top")
    return fig


def plot_packing(packing: Packing, title: str | None = None, ax=None):
    """Each packed sequence as a bar of ``budget`` tokens: one colour per image (its
    input index written on it), padding grey."""
    colors = _image_colors(len(packing.placements))
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 0.4 * packing.num_sequences + 1.5))
    else:
        fig = ax.figure
    for s in range(packing.num_sequences):
        ax.barh(s, packing.budget, color=PADDING, height=0.8)
    for p in packing.placements:
        ax.barh(
            p.sequence,
            p.length,
            left=p.offset,
            color=colors[p.image],
            height=0.8,
            edgecolor="white",
            linewidth=0.5,
        )
        if p.length >= 0.03 * packing.budget:
            ax.text(
                p.offset + p.length / 2,
                p.sequence,
                str(p.image),
                ha="center",
                va="center",
                fontsize=9,
            )
    ax.set_xlim(0, packing.budget)
    ax.set_ylim(packing.num_sequences - 0.5, -0.5)
    ax.set_xlabel("token position in the packed sequence")
    ax.set_ylabel("packed sequence")
    ax.set_yticks(range(packing.num_sequences))
    ax.legend(
        handles=[Patch(color=PADDING, label="padding")], loc="lower right", fontsize=9
    )
    ax.set_title(
        title
        or f"{len(packing.placements)} images in {packing.num_sequences} sequences "
        f"of {packing.budget} tokens, utilization {packing.utilization:.0%}"
    )
    fig.tight_layout()
    return fig


def _paint_mask(mask: torch.Tensor, owner: torch.Tensor):
    """A mask's cells as colour indices: 0 blocked, 1 padding to padding, 2 + i inside
    image i (``owner``: the image each cell's row belongs to, -1 for padding)."""
    out = torch.zeros(mask.shape, dtype=torch.long)
    out[mask & (owner < 0)] = 1
    out[mask & (owner >= 0)] = 2 + owner[mask & (owner >= 0)]
    return out.numpy()


def plot_packing_masks(features, sequence: int = 0, title: str | None = None):
    """The masks of one packed sequence: token-to-token attention (block diagonal, one
    block per image) and the pooling queries' mask (one row per image)."""
    if not 0 <= sequence < features.packing.num_sequences:
        raise ValueError(
            f"sequence {sequence} is not in [0, {features.packing.num_sequences})"
        )
    ids = features.image_ids[sequence].cpu()  # (L,)
    n = int(ids.max()) + 1
    colors = _image_colors(max(n, 1))
    cmap = ListedColormap(["white", PADDING] + colors)

    attention = features.attention_mask()[sequence, 0].cpu()  # (L, L)
    slots = features.slots()[sequence].cpu()  # (Q,)
    pooling = features.pooling_mask()[sequence, 0].cpu()  # (Q, L)
    real = slots >= 0
    length = len(ids)
    fig, (a, b) = plt.subplots(
        1, 2, figsize=(8.4, 4.6), gridspec_kw={"width_ratios": [1, 1]}
    )
    owner_rows = ids[:, None].expand(length, length)
    a.imshow(
        _paint_mask(attention, owner_rows),
        cmap=cmap,
        vmin=0,
        vmax=len(colors) + 1,
        interpolation="nearest",
    )
    a.set_xlabel("key token")
    a.set_ylabel("query token")
    a.set_title("attention mask:\neach image attends to itself", fontsize=11)
    pool_owner = slots[real][:, None].expand(-1, length)
    b.imshow(
        _paint_mask(pooling[real], pool_owner),
        cmap=cmap,
        vmin=0,
        vmax=len(colors) + 1,
        interpolation="nearest",
        aspect="auto",
    )
    b.set_xlabel("token")
    b.set_ylabel("pooling query (one per image)")
    b.set_yticks(range(int(real.sum())))
    b.set_yticklabels([f"image {int(i)}" for i in slots[real]])
    b.set_title("pooling mask:\neach query reads its image", fontsize=11)
    handles = [
        Patch(color="white", label="blocked", ec="black"),
        Patch(color=PADDING, label="padding"),
    ]
    handles += [
        Patch(color=colors[int(i)], label=f"image {int(i)}") for i in slots[real]
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=9
    )
    fig.suptitle(title or f"packed sequence {sequence}: masks ({length} tokens)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_navit_pipeline(model, images, title: str | None = None):
    """NaViT on one real batch, from the model's own forward: the images at their
    sizes with their patch grids (patch), the packed sequences (pack), the attention
    mask of the first sequence (mask) and the pooling queries that give one vector per
    image to the head (pool)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = model.forward_features(list(images))
        logits = model(list(images))
    model.train(was_training)
    p = model.patch_size[0] if isinstance(model.patch_size, tuple) else model.patch_size
    colors = _image_colors(len(images))
    fig = plt.figure(figsize=(8.4, 6.6))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.25])
    top = grid[0, :].subgridspec(
        1, len(images), width_ratios=[x.shape[-1] for x in images]
    )
    tallest = max(x.shape[-2] for x in images)
    for i, x in enumerate(images):
        ax = fig.add_subplot(top[0, i])
        h, w = x.shape[-2:]
        ax.imshow(to_image(x), cmap="gray")
        # the patch grid, on the image only
        ax.vlines(np.arange(0, w + 1, p) - 0.5, -0.5, h - 0.5, color=colors[i], lw=1.2)
        ax.hlines(np.arange(0, h + 1, p) - 0.5, -0.5, w - 0.5, color=colors[i], lw=1.2)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(tallest - 0.5, -0.5)
        # short: a narrow image's title must not run into its neighbours' (the
        # suptitle already says these are the images cut into patches)
        ax.set_title(f"{i}: {h}x{w}\n{(h // p) * (w // p)} tokens", fontsize=9)
        ax.axis("off")
    packed = fig.add_subplot(grid[1, 0])
    plot_packing(features.packing, ax=packed, title="pack: the token sequences")
    masks = fig.add_subplot(grid[1, 1])
    ids = features.image_ids[0].cpu()
    allowed = features.attention_mask()[0, 0].cpu()
    painted = _paint_mask(allowed, ids[:, None].expand_as(allowed))
    cmap = ListedColormap(["white", PADDING] + colors)
    masks.imshow(painted, cmap=cmap, vmin=0, vmax=len(colors) + 1)
    masks.set_xlabel("key token")
    masks.set_ylabel("query token")
    masks.set_title("mask of sequence 0: each image\nattends to itself", fontsize=10)
    fig.suptitle(
        title
        or f"NaViT on {len(images)} images: patch, pack, mask, then one pooling query "
        f"per image\ngives {tuple(logits.shape)} logits",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def utilization_table(lengths, budgets) -> dict[str, list[float]]:
    """Token utilization (real / all tokens) for each budget: greedy and first-fit
    decreasing packing, and padding every image to the largest (one value)."""
    lengths = list(lengths)
    return {
        "greedy": [pack(lengths, b, "greedy").utilization for b in budgets],
        "ffd": [pack(lengths, b, "ffd").utilization for b in budgets],
        "pad to largest": [padding_utilization(lengths)] * len(budgets),
    }


def plot_utilization(lengths, budgets, title: str | None = None):
    """Utilization against the token budget: greedy, first-fit decreasing, padding."""
    table = utilization_table(lengths, budgets)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    styles = {"greedy": "o-", "ffd": "s-", "pad to largest": "k--"}
    for name, values in table.items():
        ax.plot(budgets, np.array(values) * 100, styles[name], label=name)
    ax.axvline(max(lengths), color="grey", lw=0.8, ls=":")
    ax.text(max(lengths), 2, " largest image", color="grey", fontsize=8)
    ax.set_xlabel("token budget (tokens per packed sequence)")
    ax.set_ylabel("utilization: real tokens / all tokens (%)")
    ax.set_ylim(0, 102)
    ax.legend()
    ax.set_title(title or f"{len(lengths)} images, {sum(lengths)} real tokens")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_resolution(results: dict, title: str | None = None):
    """``results[model][(h, w)] = accuracy``: grouped bars, one group per test size
    (the sizes in the order given, square and non-square alike: categories, so no line
    joins them), one bar per model, its accuracy written on it."""
    sizes = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = np.arange(len(sizes))
    width = 0.8 / len(results)
    for j, (name, accs) in enumerate(results.items()):
        values = [100 * accs[s] for s in sizes]
        offset = (j - (len(results) - 1) / 2) * width
        bars = ax.bar(x + offset, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=9, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{h}x{w}" for h, w in sizes])
    ax.set_xlabel("test image size (height x width, pixels)")
    ax.set_ylabel("test accuracy (%)")
    # room above the bars for the legend, so that it covers none of them
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", ncol=len(results))
    ax.set_title(title or "accuracy against resolution and aspect ratio")
    fig.tight_layout()
    return fig


__all__ = [
    "plot_navit_pipeline",
    "plot_sizes",
    "plot_packing",
    "plot_packing_masks",
    "utilization_table",
    "plot_utilization",
    "plot_accuracy_vs_resolution",
]
