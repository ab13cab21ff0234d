"""Figures of chapter 3 (Twins-SVT): the keys one query sees under each kind of
attention, and what each kind costs."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.patches import Patch

from ..layers import Attention, pair
from ..models.swin import SwinBlock
from ..models.swin import attention_flops as swin_flops
from ..models.twins import (
    GlobalSubsampledAttention,
    LocallyGroupedAttention,
    attention_flops,
)
from .common import patch_grid, to_image


def dense_lsa_weights(
    weights: torch.Tensor, height: int, width: int, window
) -> torch.Tensor:
    """LSA's recorded weights ``(b * windows, heads, k*k, k*k)`` as one ``(b, heads, n,
    n)`` matrix over the ``n = height * width`` real tokens (row-major), zero wherever
    query and key are in different sub-windows; keys on the padding are left out."""
    wh, ww = pair(window)
    gy, gx = -(-height // wh), -(-width // ww)  # windows per column, per row
    w = rearrange(
        weights,
        "(b y x) h (qy qx) (ky kx) -> b h y x qy qx ky kx",
        y=gy,
        x=gx,
        qy=wh,
        qx=ww,
        ky=wh,
        kx=ww,
    )
    b, heads = w.shape[:2]
    hp, wp = gy * wh, gx * ww
    dense = w.new_zeros(b, heads, hp, wp, hp, wp)
    for y in range(gy):
        for x in range(gx):
            rows, cols = slice(y * wh, (y + 1) * wh), slice(x * ww, (x + 1) * ww)
            dense[:, :, rows, cols, rows, cols] = w[:, :, y, x]
    dense = dense[:, :, :height, :width, :height, :width]
    return dense.reshape(b, heads, height * width, height * width)


def receptive_fields(grid, query, window_size: int, sr_ratio: int) -> dict:
    """For the token ``query = (row, col)`` of a ``grid = (h, w)`` map: which tokens
    each kind of attention lets it read, as ``(h, w)`` boolean maps, plus the number of
    keys. Swin's shifted block (shift ``M // 2``) counts only the tokens of its window
    that the mask leaves it; GSA reads every ``r x r`` patch through one key."""
    (h, w), (qy, qx), m, r = grid, query, window_size, sr_ratio
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    same = lambda a, b: (a == a[qy, qx]) & (b == b[qy, qx])  # noqa: E731
    s = m // 2
    # after the roll by -s, the token at (y, x) sits at ((y - s) % h, (x - s) % w)
    ry, rx = (ys - s) % h, (xs - s) % w
    shifted = same(ry // m, rx // m) & same(ry >= h - s, rx >= w - s)
    covered = (ys < h // r * r) & (xs < w // r * r)  # the strided conv drops the rest
    return {
        "full": (np.ones((h, w), bool), h * w),
        "swin W-MSA": (same(ys // m, xs // m), m * m),
        "swin SW-MSA": (shifted, int(shifted.sum())),
        "LSA": (same(ys // m, xs // m), m * m),
        "GSA": (covered, (h // r) * (w // r)),
    }


def _tint(ax, mask: np.ndarray, color, patch: int, alpha: float = 0.45):
    rgba = np.zeros(mask.shape + (4,))
    rgba[mask] = plt.matplotlib.colors.to_rgba(color, alpha)
    ax.imshow(np.kron(rgba, np.ones((patch, patch, 1))), interpolation="nearest")


def _grid_lines(ax, h: int, w: int, step: int, patch: int, **style):
    for y in range(0, h + 1, step):
        ax.axhline(y * patch - 0.5, **style)
    for x in range(0, w + 1, step):
        ax.axvline(x * patch - 0.5, **style)


def plot_receptive_fields(
    image: torch.Tensor,
    patch_size: int,
    query=(2, 2),
    window_size: int = 4,
    sr_ratio: int = 4,
):
    """The keys one query token (red star) reads on a photo, for full attention (ViT),
    Swin's two blocks (W-MSA, then SW-MSA with its mask), Twins' LSA and GSA. In the
    GSA panel each ``r x r`` cell is one key: the query reads the whole picture, at
    ``r x r`` coarser resolution."""
    (h, w), (qy, qx) = patch_grid(image, patch_size), pair(query)
    if not (0 <= qy < h and 0 <= qx < w):
        raise ValueError(f"query {(qy, qx)} is outside the {h}x{w} patch grid")
    if window_size < 1 or h % window_size or w % window_size:
        raise ValueError(
            f"window_size {window_size} must divide the {h}x{w} patch grid (Swin's "
            "shift needs whole windows)"
        )
    if not 1 <= sr_ratio <= min(h, w):
        raise ValueError(f"sr_ratio {sr_ratio} must be in [1, {min(h, w)}]")
    fields = receptive_fields((h, w), (qy, qx), window_size, sr_ratio)
    p, photo = patch_size, to_image(image)
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
    for ax in axes:
        ax.imshow(photo)
        _grid_lines(ax, h, w, 1, p, color="w", lw=0.3, alpha=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
    (full, n), (win, _), (shifted, n_shift), (lsa, k2), (gsa, n_gsa) = fields.values()
    _tint(axes[0], full, "tab:green", p)
    axes[0].set_title(f"full attention (ViT)\n{n} keys", fontsize=10)
    _tint(axes[1], win & ~shifted, "tab:blue", p)
    _tint(axes[1], shifted & ~win, "tab:orange", p)
    _tint(axes[1], win & shifted, "tab:purple", p)
    _grid_lines(axes[1], h, w, window_size, p, color="k", lw=1.8)
    axes[1].set_title(
        f"Swin: W-MSA then SW-MSA\n{k2} + {n_shift} keys (shift {window_size // 2})",
        fontsize=10,
    )
    axes[1].legend(
        handles=[
            Patch(color="tab:blue", alpha=0.6, label="W-MSA only"),
            Patch(color="tab:orange", alpha=0.6, label="SW-MSA only"),
            Patch(color="tab:purple", alpha=0.6, label="both"),
        ],
        loc="lower left",
        fontsize=7,
    )
    _tint(axes[2], lsa, "tab:blue", p)
    _grid_lines(axes[2], h, w, window_size, p, color="k", lw=1.8)
    axes[2].set_title(
        f"Twins LSA: its {window_size}x{window_size} sub-window\n{k2} keys",
        fontsize=10,
    )
    _tint(axes[3], gsa, "tab:green", p, alpha=0.25)
    _grid_lines(axes[3], h // sr_ratio, w // sr_ratio, 1, p * sr_ratio, color="k", lw=1)
    centres = (np.arange(h // sr_ratio) + 0.5) * sr_ratio * p - 0.5
    cy, cx = np.meshgrid(centres, (np.arange(w // sr_ratio) + 0.5) * sr_ratio * p - 0.5)
    axes[3].plot(cx.ravel(), cy.ravel(), "o", color="k", ms=3)
    axes[3].set_title(
        f"Twins GSA: one key per {sr_ratio}x{sr_ratio} cell\n{n_gsa} keys", fontsize=10
    )
    for ax in axes:
        ax.plot(qx * p + p / 2 - 0.5, qy * p + p / 2 - 0.5, "*", color="red", ms=14)
    fig.suptitle(
        f"the keys one query (red star) reads on a {h}x{w} map of tokens", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


# --------------------------------------------------------------------------- cost
def measure_local_global_cost(
    sides=(8, 16, 32, 48, 64),
    dim: int = 32,
    heads: int = 2,
    window_size: int = 8,
    sr_ratio: int = 8,
    repeats: int = 5,
) -> dict:
    """Time one forward of full attention, Swin's windowed attention (W-MSA), LSA and
    GSA on a ``side x side`` map, interleaved, the median of ``repeats``, on one thread
    (so that other work on a shared machine disturbs them alike). Also counts the
    multiply-adds and the attention logits each computes (what the explicit path would
    store: the memory that grows with the map)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(sides, dim, heads, window_size, sr_ratio, repeats)
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _measure(sides, dim, heads, window_size, sr_ratio, repeats) -> dict:
    torch.manual_seed(0)
    full = Attention(dim, heads).eval()
    swin = SwinBlock(dim, heads, window_size).eval()
    lsa = LocallyGroupedAttention(dim, heads, window_size).eval()
    gsa = GlobalSubsampledAttention(dim, heads, sr_ratio).eval()
    runs = {
        "full": lambda x: full(x.flatten(1, 2)),
        "swin": swin.attend,
        "LSA": lsa,
        "GSA": gsa,
    }
    times = {k: {s: [] for s in sides} for k in runs}
    for side in sides:  # warm up every shape once
        for run in runs.values():
            run(torch.randn(1, side, side, dim))
    for _ in range(repeats):
        for side in sides:
            x = torch.randn(1, side, side, dim)
            for name, run in runs.items():
                start = time.perf_counter()
                run(x)
                times[name][side].append(time.perf_counter() - start)
    tokens = [s * s for s in sides]
    keys = (s // sr_ratio for s in sides)
    return {
        "sides": list(sides),
        "tokens": tokens,
        "dim": dim,
        "window_size": window_size,
        "sr_ratio": sr_ratio,
        "seconds": {
            k: [float(np.median(v[s])) for s in sides] for k, v in times.items()
        },
        "flops": {
            "full": [attention_flops(s, s, dim) for s in sides],
            "swin": [swin_flops(n, dim, window_size) for n in tokens],
            "LSA": [attention_flops(s, s, dim, window=window_size) for s in sides],
            "GSA": [attention_flops(s, s, dim, sr_ratio=sr_ratio) for s in sides],
        },
        "logits": {
            "full": [n * n for n in tokens],
            "swin": [n * window_size**2 for n in tokens],
            "LSA": [n * window_size**2 for n in tokens],
            "GSA": [n * k * k for n, k in zip(tokens, keys)],
        },
    }


COST_STYLE = {
    "full": ("C3", "o-", "full attention (ViT)"),
    "swin": ("C0", "o-", "Swin W-MSA"),
    "LSA": ("C2", "s--", "Twins LSA"),
    "GSA": ("C1", "o-", "Twins GSA"),
}


def plot_local_global_cost(cost: dict | None = None, **measure_kw):
    """Measured time, multiply-adds and attention logits of one layer of each kind
    against the number of tokens. ``cost`` from :func:`measure_local_global_cost`."""
    cost = measure_local_global_cost(**measure_kw) if cost is None else cost
    n = np.array(cost["tokens"])
    m, r = cost["window_size"], cost["sr_ratio"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (
        ("seconds", 1e3, "ms per forward (median)", "measured on this machine"),
        ("flops", 1e-6, "million multiply-adds", "formulas (multiply-adds)"),
        ("logits", 1e-6, "million attention logits", "attention matrix size"),
    )
    for ax, (key, scale, ylabel, title) in zip(axes, panels):
        for kind, (color, style, label) in COST_STYLE.items():
            ax.plot(
                n, np.array(cost[key][kind]) * scale, style, color=color, label=label
            )
        ax.set(xscale="log", yscale="log", xlabel="tokens (h x w)", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"one attention layer, C = {cost['dim']}, windows {m}x{m}, sub-sampling {r}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


__all__ = [
    "dense_lsa_weights",
    "receptive_fields",
    "plot_receptive_fields",
    "measure_local_global_cost",
    "plot_local_global_cost",
]
