"""Figures of chapter 2 (Swin): windows, the cyclic shift and its masks, relative
position bias, attention cost."""

from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..bench.timing import interleaved_median
from ..layers import Attention
from ..models.swin import (
    MASK_FILL,
    SwinBlock,
    attention_flops,
    shift_mask,
    shift_regions,
)
from .common import patch_grid, plot_pipeline, tint, to_image

# region 0 stays where it was; A, B, C are the paper's names (Fig. 4) for what wrapped
# around
REGION_NAMES = {1: "C (from the left)", 2: "B (from the top)", 3: "A (top-left corner)"}
REGION_COLORS = {1: "tab:blue", 2: "tab:orange", 3: "tab:red"}


def _check_window(grid, window_size: int, shift: int = 0) -> None:
    gh, gw = grid
    if window_size < 1 or gh % window_size or gw % window_size:
        raise ValueError(
            f"window_size {window_size} must divide the {gh}x{gw} patch grid"
        )
    if not 0 <= shift < window_size:
        raise ValueError(
            f"shift {shift} must be in [0, window_size) = [0, {window_size})"
        )


def _lines(ax, positions, horizontal: bool, **style):
    for p in positions:
        (ax.axhline if horizontal else ax.axvline)(p - 0.5, **style)


def plot_windows(image: torch.Tensor, patch_size: int, window_size: int):
    """A photo cut into patches (the tokens), and the patches grouped into M x M windows
    (W-MSA)."""
    gh, gw = patch_grid(image, patch_size)
    _check_window((gh, gw), window_size)
    h, w = image.shape[-2:]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for ax in axes:
        ax.imshow(to_image(image))
        _lines(ax, range(0, h + 1, patch_size), True, color="w", lw=0.6)
        _lines(ax, range(0, w + 1, patch_size), False, color="w", lw=0.6)
        ax.axis("off")
    axes[0].set_title(f"{gh}x{gw} patches of {patch_size}x{patch_size} pixels")
    win = (np.arange(gh)[:, None] // window_size) * (gw // window_size) + np.arange(gw)[
        None, :
    ] // window_size
    tint(
        axes[1],
        win,
        {i: plt.cm.tab10(i % 10) for i in range(win.max() + 1)},
        patch_size,
        alpha=0.3,
    )
    _lines(axes[1], range(0, h + 1, window_size * patch_size), True, color="k", lw=2.5)
    _lines(axes[1], range(0, w + 1, window_size * patch_size), False, color="k", lw=2.5)
    axes[1].set_title(
        f"{win.max() + 1} windows of {window_size}x{window_size} patches: attention "
        "stays inside"
    )
    fig.tight_layout()
    return fig


def plot_cyclic_shift(
    image: torch.Tensor, patch_size: int, window_size: int, shift: int | None = None
):
    """Left: the next layer's windows, displaced by ``shift`` patches (paper Fig. 2),
    which leaves
    partial windows at the edges. Right: the same partition done cheaply: roll the map
    by
    ``-shift`` and cut the regular windows; the strips that wrapped around (A, B, C)
    share
    windows with tokens that were never their neighbours, and the mask keeps them
    apart."""
    gh, gw = patch_grid(image, patch_size)
    shift = window_size // 2 if shift is None else shift
    _check_window((gh, gw), window_size, shift)
    h, w = image.shape[-2:]
    m, s, p = window_size, shift, patch_size
    # where the strips are before the roll: top rows, left columns
    before = np.zeros((gh, gw), dtype=int)
    before[:s, :] += 2
    before[:, :s] += 1
    # after the roll: bottom rows, right columns
    after = shift_regions(gh, gw, s).numpy()

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 5))
    axes[0].imshow(to_image(image))
    tint(axes[0], before, REGION_COLORS, p, alpha=0.35)
    borders = (
        [(s + k * m) * p for k in range(-1, gh // m + 1) if 0 < (s + k * m) * p < h]
        if s
        else []
    )
    _lines(axes[0], [0, h] + borders, True, color="k", lw=2.5)
    _lines(axes[0], [0, w] + [b for b in borders if b < w], False, color="k", lw=2.5)
    count = (gh // m + (1 if s else 0)) * (gw // m + (1 if s else 0))
    axes[0].set_title(
        f"shifted by {s}: {count} windows, some partial"
        if s
        else "no shift: the regular windows"
    )

    rolled = torch.roll(image, shifts=(-s * p, -s * p), dims=(-2, -1))
    axes[1].imshow(to_image(rolled))
    tint(axes[1], after, REGION_COLORS, p, alpha=0.35)
    _lines(axes[1], range(0, h + 1, m * p), True, color="k", lw=2.5)
    _lines(axes[1], range(0, w + 1, m * p), False, color="k", lw=2.5)
    axes[1].set_title(f"cyclic shift, then the regular {(gh // m) * (gw // m)} windows")
    for ax in axes:
        _lines(ax, range(0, h + 1, p), True, color="w", lw=0.4)
        _lines(ax, range(0, w + 1, p), False, color="w", lw=0.4)
        ax.axis("off")
    if s:
        handles = [
            Patch(color=REGION_COLORS[k], alpha=0.5, label=REGION_NAMES[k])
            for k in (3, 2, 1)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if s else 0, 1, 1))
    return fig


def plot_shift_masks(window_size: int, shift: int | None = None):
    """The SW-MSA masks of the four kinds of window on a 2M x 2M map: inside (no mask),
    right edge (split by column), bottom edge (split by row), corner (four regions).
    Top: each window's tokens, numbered and coloured by region; bottom: its mask,
    queries down and keys across, dark = blocked (``MASK_FILL``)."""
    m = window_size
    shift = m // 2 if shift is None else shift
    if not 0 < shift < m:
        raise ValueError(
            f"shift {shift} must be in (0, window_size) = (0, {m}) for there to be a "
            "mask"
        )
    masks = shift_mask(2 * m, 2 * m, m, shift)  # (4, N, N)
    regions = shift_regions(2 * m, 2 * m, shift)
    names = ["inside", "right edge", "bottom edge", "corner"]
    fig, axes = plt.subplots(
        2, 4, figsize=(8.4, 5.6), gridspec_kw={"height_ratios": [1, 1.6]}
    )
    colors = {0: "white", **REGION_COLORS}
    regions_cmap = ListedColormap([colors[k] for k in range(4)])
    mask_cmap = ListedColormap(["white", "0.3"])
    n = m * m
    for k in range(4):
        r, c = divmod(k, 2)
        window_regions = regions[r * m : (r + 1) * m, c * m : (c + 1) * m]
        ax = axes[0, k]
        ax.imshow(window_regions.numpy(), cmap=regions_cmap, vmin=0, vmax=3, alpha=0.6)
        for (y, x), label in np.ndenumerate(window_regions.numpy()):
            ax.text(
                x, y, str(y * m + x), ha="center", va="center", fontsize=max(8, 12 - m)
            )
        ax.set_title(f"window {k}: {names[k]}", fontsize=10)
        ax.set_xticks(range(m))
        ax.set_yticks(range(m))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("column in window", fontsize=8)
        ax.set_ylabel("row in window", fontsize=8)
        ax = axes[1, k]
        blocked = (masks[k] == MASK_FILL).int()
        ax.imshow(blocked.numpy(), cmap=mask_cmap, vmin=0, vmax=1)
        ax.set_title(f"{int(blocked.sum())} of {n * n} pairs blocked", fontsize=9)
        # four ticks a side: two-digit labels at a readable size do not overlap
        step = max(1, -(-n // 4))
        ax.set_xticks(range(0, n, step))
        ax.set_yticks(range(0, n, step))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("key token", fontsize=8)
        ax.set_ylabel("query token", fontsize=8)
    handles = [
        Patch(fc=colors[0], ec="0.5", label="not wrapped"),
        *[
            Patch(color=REGION_COLORS[j], alpha=0.6, label=REGION_NAMES[j])
            for j in (3, 2, 1)
        ],
        Patch(fc="white", ec="0.5", label="mask: may attend"),
        Patch(color="0.3", label=f"mask: blocked ({MASK_FILL:g})"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.suptitle(
        f"window {m}x{m}, shift {shift}: top, each window's tokens by region; "
        f"bottom, its {n}x{n} attention mask",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_relative_position_bias(model, stage: int | None = None, title=None):
    """The learned bias tables: one ``(2M-1) x (2M-1)`` map per block and head (rows:
    blocks, columns: heads), the centre (+) being "key = query", each pixel an offset
    (dy, dx) = query - key. ``stage=None`` draws every stage. One colour scale for
    every table of the model (all stages), so panels and figures compare."""
    stages = range(len(model.stages)) if stage is None else [stage]
    rows = [(s, i, b) for s in stages for i, b in enumerate(model.stages[s].blocks)]
    every = [b for st in model.stages for b in st.blocks]
    limit = max(
        b.attn.relative_position_bias_table.detach().abs().max().item() for b in every
    )
    # one panel per (block, head), four to a row so that they fit the page's column
    panels = [(s, i, b, j) for s, i, b in rows for j in range(b.attn.heads)]
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.85 * ncols + 1.0, 1.95 * nrows + 0.6), squeeze=False
    )
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (s, i, block, j) in zip(axes.ravel(), panels):
        wh, ww = block.window_size
        table = block.attn.relative_position_bias_table.detach().float().cpu()
        # ((2wh-1), (2ww-1), heads)
        table = table.reshape(2 * wh - 1, 2 * ww - 1, block.attn.heads)
        im = ax.imshow(
            table[..., j].numpy(),
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            extent=(-ww + 0.5, ww - 0.5, wh - 0.5, -wh + 0.5),
        )
        ax.plot(0, 0, "k+", ms=8)
        # ticks at the ends and the centre: readable at any window size
        ax.set_xticks([-ww + 1, 0, ww - 1])
        ax.set_yticks([-wh + 1, 0, wh - 1])
        kind = "SW" if block.shifted else "W"
        ax.set_title(f"stage {s + 1} block {i + 1} ({kind})\nhead {j + 1}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("dx", fontsize=9)
        ax.set_ylabel("dy", fontsize=9)
    fig.suptitle(
        (title or "relative position bias")
        + "\n(offset = query - key; one colour scale for every table)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    bar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, fraction=0.04)
    bar.set_label("bias added to the attention logit", fontsize=9)
    return fig


def plot_swin_architecture(model, title: str | None = None):
    """Swin as a block diagram: patch partition, then each stage with its map size,
    width, window and shift, then the head; sizes measured on a zero image of the
    model's ``image_size``, so the diagram cannot drift from the code."""
    embed = model.patch_embed
    (ih, iw), (ph, pw), c = model.image_size, embed.patch_size, embed.channels
    x = torch.zeros(1, c, ih, iw)
    with torch.no_grad():
        tokens = embed(x)[0]  # (h, w, dim)
        maps = [m[0] for m in model.forward_intermediates(x)]  # (d_i, h_i, w_i)
        logits = model(x)[0]
    boxes = [
        ("image", [f"{c} x {ih} x {iw}", "(c x H x W)"]),
        (
            "patches",
            [
                f"{ph}x{pw} pixels",
                f"map {tokens.shape[0]} x {tokens.shape[1]}",
                f"width {tokens.shape[2]}",
            ],
        ),
    ]
    for s, (stage, fmap) in enumerate(zip(model.stages, maps)):
        d, h, w = fmap.shape
        shifts = sorted({b.shift_size for b in stage.blocks if b.shifted})
        wh, ww = stage.window_size
        lines = (["merge 2x2 -> 1"] if s else []) + [
            f"map {h} x {w}",
            f"width {d}",
            f"{len(stage.blocks)} blocks, {stage.blocks[0].attn.heads} heads",
            f"window {wh}x{ww}" + (" (all)" if (wh, ww) == (h, w) else ""),
            "shift " + (", ".join(f"{a}x{b}" for a, b in shifts) if shifts else "none"),
        ]
        boxes.append((f"stage {s + 1}", lines))
    boxes.append(
        ("head", ["LayerNorm", "average pool", f"linear -> {logits.shape[0]}"])
    )
    return plot_pipeline(boxes, title or "Swin: the map after each stage")


def measure_attention_cost(
    sides=(7, 14, 28, 42, 56),
    dim: int = 32,
    heads: int = 2,
    window_size: int = 7,
    repeats: int = 7,
) -> dict:
    """Time one forward of global attention (ViT) and windowed attention (Swin) on a
    ``side x side``
    map of tokens, interleaved, the median of ``repeats``. Returns tokens, seconds and
    multiply-adds.

    Runs on one thread, so that other work on a shared machine disturbs the two sides
    alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(sides, dim, heads, window_size, repeats)
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _measure(sides, dim, heads, window_size, repeats) -> dict:
    torch.manual_seed(0)
    full, windowed = (
        Attention(dim, heads).eval(),
        SwinBlock(dim, heads, window_size).eval(),
    )
    runs = {"global": lambda x: full(x.flatten(1, 2)), "window": windowed.attend}
    # (1, side, side, dim): one map of tokens per size
    maps = {side: torch.randn(1, side, side, dim) for side in sides}
    calls = {(k, s): partial(run, maps[s]) for s in sides for k, run in runs.items()}
    # one round to warm up every shape
    seconds = interleaved_median(calls, repeats, warmup=1)
    tokens = [s * s for s in sides]
    return {
        "sides": list(sides),
        "tokens": tokens,
        "dim": dim,
        "window_size": window_size,
        "seconds": {k: [seconds[k, s] for s in sides] for k in runs},
        "flops": {
            "global": [attention_flops(n, dim) for n in tokens],
            "window": [attention_flops(n, dim, window_size) for n in tokens],
        },
    }


def plot_attention_cost(cost: dict | None = None, **measure_kw):
    """Measured time and the paper's multiply-add count (eq. 1, 2) of global and
    windowed attention
    against the number of tokens. ``cost`` from :func:`measure_attention_cost` (measured
    if None)."""
    cost = measure_attention_cost(**measure_kw) if cost is None else cost
    n = np.array(cost["tokens"])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8))
    labels = {
        "global": "global attention (ViT)",
        "window": f"windows of {cost['window_size']}x{cost['window_size']} (Swin)",
    }
    for key, color in (("global", "C3"), ("window", "C0")):
        axes[0].plot(
            n,
            np.array(cost["seconds"][key]) * 1e3,
            "o-",
            color=color,
            label=labels[key],
        )
        axes[1].plot(
            n, np.array(cost["flops"][key]) / 1e6, "o-", color=color, label=labels[key]
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="tokens (h x w)",
        ylabel="ms per forward (median)",
        title="measured on this machine",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="tokens (h x w)",
        ylabel="million multiply-adds",
        title="paper's formulas (eq. 1, 2)",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ratio = cost["seconds"]["global"][-1] / cost["seconds"]["window"][-1]
    fig.suptitle(
        f"one attention layer, C = {cost['dim']}: at {n[-1]} tokens windows are "
        f"{ratio:.0f}x faster",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


__all__ = [
    "plot_windows",
    "plot_cyclic_shift",
    "plot_shift_masks",
    "plot_relative_position_bias",
    "plot_swin_architecture",
    "measure_attention_cost",
    "plot_attention_cost",
]
