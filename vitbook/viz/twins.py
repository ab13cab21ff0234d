"""Figures of chapter 3 (Twins-SVT): the keys one query sees under each kind of
attention, and what each kind costs."""

from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..bench.timing import interleaved_median
from ..layers import Attention, pair
from ..models.swin import SwinBlock
from ..models.swin import attention_flops as swin_flops
from ..models.twins import (
    GlobalSubsampledAttention,
    LocallyGroupedAttention,
    TwinsBlock,
    attention_flops,
)
from .common import grid_lines, patch_grid, plot_pipeline, tint, to_image


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


def plot_receptive_fields(
    image: torch.Tensor,
    patch_size: int,
    query=(2, 2),
    window_size: int = 4,
    sr_ratio: int = 4,
):
    """The keys one query token (red star) reads on a photo, for full attention (ViT),
    Swin's two blocks (W-MSA, then SW-MSA with its mask), Twins' LSA and GSA. In the
    GSA panel each ``r x r`` cell is one key, computed from all of the cell's tokens
    (a strided convolution): the query reads the whole picture, at ``r x r`` coarser
    resolution."""
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
    # 2 x 2 panels fit the page's column
    fig, axes = plt.subplots(2, 2, figsize=(8.2, 9.4))
    axes = axes.ravel()
    for ax in axes:
        ax.imshow(photo)
        grid_lines(ax, h, w, 1, p, color="w", lw=0.3, alpha=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
    (full, n), (win, _), (shifted, n_shift), (lsa, k2), (gsa, n_gsa) = fields.values()
    tint(axes[0], full, {True: "tab:green"}, p)
    axes[0].set_title(f"full attention (ViT)\n{n} keys", fontsize=10)
    tint(axes[1], win & ~shifted, {True: "tab:blue"}, p)
    tint(axes[1], shifted & ~win, {True: "tab:orange"}, p)
    tint(axes[1], win & shifted, {True: "tab:purple"}, p)
    grid_lines(axes[1], h, w, window_size, p, color="k", lw=1.8)
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
        fontsize=9,
    )
    tint(axes[2], lsa, {True: "tab:blue"}, p)
    grid_lines(axes[2], h, w, window_size, p, color="k", lw=1.8)
    axes[2].set_title(
        f"Twins LSA: its {window_size}x{window_size} sub-window\n{k2} keys",
        fontsize=10,
    )
    tint(axes[3], gsa, {True: "tab:green"}, p, alpha=0.25)
    grid_lines(axes[3], h // sr_ratio, w // sr_ratio, 1, p * sr_ratio, color="k", lw=1)
    axes[3].set_title(
        f"Twins GSA: {n_gsa} keys, each a learned\nsummary of one "
        f"{sr_ratio}x{sr_ratio} cell",
        fontsize=10,
    )
    for ax in axes:
        ax.plot(qx * p + p / 2 - 0.5, qy * p + p / 2 - 0.5, "*", color="red", ms=14)
    fig.suptitle(
        f"the keys one query (red star) reads on a {h}x{w} map of tokens", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.5)
    return fig


# --------------------------------------------------------------------------- diagram
def _block_text(block) -> str:
    attn = block.attn
    if getattr(attn, "window_size", None) is not None:
        wh, ww = attn.window_size
        return f"{block.kind} {wh}x{ww}"
    extra = f", c={attn.c_ratio:g}" if hasattr(attn, "c_ratio") else ""
    return f"{block.kind} r={attn.sr_ratio}{extra}"


def plot_pyramid_architecture(model, title: str | None = None):
    """Twins-SVT or ScalableViT as a block diagram: each stage's patch embedding, map
    size and width, its blocks in order (LSA/GSA or IWSA/SSA with their windows,
    ratios and, for SSA, c) with the PEG between the first two, then the head. Sizes
    measured on a zero image of the model's ``image_size``, so the diagram cannot drift
    from the code."""
    (ih, iw), channels = pair(model.image_size), model.channels
    x = torch.zeros(1, channels, ih, iw)
    with torch.no_grad():
        maps = [m[0] for m in model.forward_intermediates(x)]  # (d_i, h_i, w_i)
        logits = model(x)[0]
    boxes = [("image", [f"{channels} x {ih} x {iw}", "(c x H x W)"])]
    for s, (stage, fmap) in enumerate(zip(model.stages, maps)):
        d, h, w = fmap.shape
        embed = stage.patch_embed
        if isinstance(getattr(embed, "proj", None), torch.nn.Conv2d):
            k, st = embed.proj.kernel_size[0], embed.proj.stride[0]
            how = f"conv {k}x{k}, stride {st}"
        else:
            how = "patches, linear"
        kinds = [_block_text(b) for b in stage.blocks]
        # in the order the stage runs them: the PEG right after the first block
        lines = [how, f"map {h} x {w}", f"width {d}", kinds[0], "PEG", *kinds[1:]]
        boxes.append((f"stage {s + 1}", lines))
    boxes.append(
        ("head", ["LayerNorm", "average pool", f"linear -> {logits.shape[0]}"])
    )
    name = type(model).__name__
    return plot_pipeline(boxes, title or f"{name}: the map after each stage", width=1.6)


# --------------------------------------------------------------------------- reach
def stack_kinds(
    side: int = 16,
    dim: int = 16,
    heads: int = 2,
    window_size: int = 4,
    sr_ratio: int = 4,
    depth: int = 4,
    seed: int = 0,
) -> dict:
    """Three stacks of ``depth`` blocks on a ``side x side`` map, seeded: Swin's (W-MSA
    and SW-MSA alternating), LSA alone, and Twins' (LSA and GSA alternating)."""
    torch.manual_seed(seed)
    shift = window_size // 2
    return {
        "Swin (W-MSA, SW-MSA)": [
            SwinBlock(dim, heads, window_size, shift if i % 2 else 0)
            for i in range(depth)
        ],
        "LSA alone": [
            TwinsBlock(dim, heads, window_size=window_size) for _ in range(depth)
        ],
        "Twins (LSA, GSA)": [
            TwinsBlock(dim, heads, sr_ratio=sr_ratio)
            if i % 2
            else TwinsBlock(dim, heads, window_size=window_size)
            for i in range(depth)
        ],
    }


def gradient_reach(blocks, side: int, dim: int, query) -> list[torch.Tensor]:
    """Which input tokens the output at ``query`` depends on after each block of
    ``blocks`` (modules on ``(1, side, side, dim)`` maps): one ``(side, side)`` bool map
    per depth, where the gradient of that output token reaches the input."""
    qy, qx = query
    x = torch.randn(1, side, side, dim, requires_grad=True)
    reach, y = [], x
    for block in blocks:
        y = block.eval()(y)
        (grad,) = torch.autograd.grad(y[0, qy, qx].sum(), x, retain_graph=True)
        reach.append(grad[0].abs().sum(-1) > 0)
    return reach


def plot_gradient_reach(
    side: int = 16, window_size: int = 4, sr_ratio: int = 4, depth: int = 4, query=None
):
    """The input tokens one output token (red star) depends on after 1 to ``depth``
    blocks, for Swin, LSA alone and Twins: rows are the stacks, columns the depth;
    the title of each panel gives the share of the map reached."""
    query = (side // 2 - 1, side // 2 - 1) if query is None else pair(query)
    kinds = stack_kinds(side, window_size=window_size, sr_ratio=sr_ratio, depth=depth)
    fig, axes = plt.subplots(
        len(kinds),
        depth,
        figsize=(1.9 * depth + 0.9, 2.0 * len(kinds) + 0.6),
        squeeze=False,
    )
    for r, (name, blocks) in enumerate(kinds.items()):
        for d, reached in enumerate(gradient_reach(blocks, side, 16, query)):
            ax = axes[r, d]
            ax.imshow(
                reached.numpy(),
                cmap=ListedColormap(["0.92", "tab:blue"]),
                vmin=0,
                vmax=1,
            )
            grid_lines(ax, side, side, window_size, 1, color="k", lw=0.8)
            ax.plot(query[1], query[0], "*", color="red", ms=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"{d + 1} block{'s' if d else ''}: {reached.float().mean():.0%}",
                fontsize=9,
            )
            if d == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.legend(
        handles=[
            Patch(color="tab:blue", label="reaches the red token"),
            Patch(color="0.92", label="does not"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(
        f"the inputs one output token depends on, {side}x{side} map, windows "
        f"{window_size}x{window_size}, GSA r = {sr_ratio}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


# --------------------------------------------------------------------------- cost
KINDS = ("full", "swin", "LSA", "GSA", "IWSA", "SSA")


def measure_local_global_cost(
    sides=(8, 16, 32, 48, 64),
    dim: int = 32,
    heads: int = 2,
    window_size: int = 8,
    sr_ratio: int = 8,
    repeats: int = 5,
    kinds=("full", "swin", "LSA", "GSA"),
    c_ratio: float = 1.25,
) -> dict:
    """Time one forward of each attention in ``kinds`` (full attention, Swin's windowed
    attention W-MSA, Twins' LSA and GSA, ScalableViT's IWSA and SSA, ``c_ratio`` for
    SSA) on a ``side x side`` map, interleaved, the median of ``repeats``, on one
    thread (so that other work on a shared machine disturbs them alike). Also counts
    the multiply-adds, the attention logits each computes (what the explicit path
    would store) and the peak memory of one forward: measured with
    ``torch.cuda.max_memory_allocated`` when a GPU is there, otherwise computed from
    the shapes (``memory_source`` says which)."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds {tuple(kinds)} must be a non-empty subset of {KINDS}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(
            sides, dim, heads, window_size, sr_ratio, repeats, tuple(kinds), c_ratio
        )
    finally:
        torch.set_num_threads(threads)


def _layers(dim, heads, window_size, sr_ratio, c_ratio) -> dict:
    """One layer of each kind and how to call it on a map ``(b, H, W, dim)``."""
    from ..models.scalable_vit import InteractiveWindowAttention, ScalableAttention

    torch.manual_seed(0)
    full = Attention(dim, heads).eval()
    swin = SwinBlock(dim, heads, window_size).eval()
    modules = {
        "full": full,
        "swin": swin,
        "LSA": LocallyGroupedAttention(dim, heads, window_size).eval(),
        "GSA": GlobalSubsampledAttention(dim, heads, sr_ratio).eval(),
        "IWSA": InteractiveWindowAttention(dim, heads, window_size).eval(),
        "SSA": ScalableAttention(dim, heads, sr_ratio, c_ratio).eval(),
    }
    calls = dict(modules)
    calls["full"] = lambda x: full(x.flatten(1, 2))
    calls["swin"] = swin.attend
    return modules, calls


def attention_memory(
    kind: str,
    side: int,
    dim: int,
    heads: int,
    window_size: int,
    sr_ratio: int,
    c_ratio: float = 1.25,
    bytes_per_value: int = 4,
) -> int:
    """Bytes one attention layer holds at its peak on a ``side x side`` map of width C,
    computed from the shapes (batch 1, float32): its input, its queries, keys and
    values, the attention weights of the explicit softmax (``heads`` x queries x keys,
    what training keeps for the backward pass), its output before and after the
    projection. A lower bound on what the allocator really uses."""
    n, c, k2 = side * side, dim, window_size**2
    m = (side // sr_ratio) ** 2
    if kind == "full":
        values = n * c + 3 * n * c + heads * n * n + 2 * n * c
    elif kind in ("swin", "LSA"):  # padding ignored: the sides used are multiples
        values = n * c + 3 * n * c + heads * n * k2 + 2 * n * c
    elif kind == "IWSA":  # + the LIM's output
        values = n * c + 3 * n * c + heads * n * k2 + 3 * n * c
    elif kind == "GSA":  # q for all, summary and k, v for the m cells
        summary = m * c if sr_ratio > 1 else 0
        values = n * c + n * c + summary + 2 * m * c + heads * n * m + 2 * n * c
    elif kind == "SSA":
        if sr_ratio > 1:
            w = int(c * c_ratio)  # reduced map (depthwise, then 1x1), q, k at C'
            values = n * c + m * c + m * w + n * w + m * w + m * c + heads * n * m
        else:
            values = n * c + 3 * n * c + heads * n * n
        values += 2 * n * c
    else:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    return int(values * bytes_per_value)


@torch.no_grad()
def _cuda_peak(call, x) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call(x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@torch.no_grad()
def _measure(sides, dim, heads, window_size, sr_ratio, repeats, kinds, c_ratio):
    from ..models.scalable_vit import attention_flops as scalable_flops

    modules, calls = _layers(dim, heads, window_size, sr_ratio, c_ratio)
    # (1, side, side, dim): one map of tokens per size
    maps = {side: torch.randn(1, side, side, dim) for side in sides}
    timed = {(k, side): partial(calls[k], maps[side]) for side in sides for k in kinds}
    # one round to warm up every shape
    seconds = interleaved_median(timed, repeats, warmup=1)
    tokens = [s * s for s in sides]
    keys = [(s // sr_ratio) ** 2 for s in sides]
    flops = {
        "full": [attention_flops(s, s, dim) for s in sides],
        "swin": [swin_flops(n, dim, window_size) for n in tokens],
        "LSA": [attention_flops(s, s, dim, window=window_size) for s in sides],
        "GSA": [attention_flops(s, s, dim, sr_ratio=sr_ratio) for s in sides],
        "IWSA": [scalable_flops(s, s, dim, window=window_size) for s in sides],
        "SSA": [
            scalable_flops(s, s, dim, sr_ratio=sr_ratio, c_ratio=c_ratio) for s in sides
        ],
    }
    # every head computes its own matrix of logits
    windowed = [heads * n * window_size**2 for n in tokens]
    logits = {
        "full": [heads * n * n for n in tokens],
        "swin": windowed,
        "LSA": windowed,
        "IWSA": windowed,
        "GSA": [heads * n * m for n, m in zip(tokens, keys)],
        "SSA": [heads * n * m for n, m in zip(tokens, keys)],
    }
    if torch.cuda.is_available():
        source = "measured: torch.cuda.max_memory_allocated, one forward"
        memory = {}
        for k in kinds:
            modules[k].cuda()  # in place: calls[k] now runs on the GPU
            memory[k] = [
                _cuda_peak(calls[k], torch.randn(1, s, s, dim, device="cuda"))
                for s in sides
            ]
            modules[k].cpu()
    else:
        source = "computed from shapes (no GPU): tensors held, float32"
        memory = {
            k: [
                attention_memory(k, s, dim, heads, window_size, sr_ratio, c_ratio)
                for s in sides
            ]
            for k in kinds
        }
    return {
        "sides": list(sides),
        "tokens": tokens,
        "dim": dim,
        "heads": heads,
        "window_size": window_size,
        "sr_ratio": sr_ratio,
        "c_ratio": c_ratio,
        "seconds": {k: [seconds[k, s] for s in sides] for k in kinds},
        "flops": {k: flops[k] for k in kinds},
        "logits": {k: logits[k] for k in kinds},
        "memory": memory,
        "memory_source": source,
    }


COST_STYLE = {
    "full": ("C3", "o-", "full attention (ViT)"),
    "swin": ("C0", "o-", "Swin W-MSA"),
    "LSA": ("C2", "s--", "Twins LSA"),
    "GSA": ("C1", "o-", "Twins GSA"),
    "IWSA": ("C4", "^:", "ScalableViT IWSA"),
    "SSA": ("C5", "v-.", "ScalableViT SSA"),
}


def plot_local_global_cost(cost: dict | None = None, **measure_kw):
    """Measured time, peak memory, multiply-adds and attention logits of one layer of
    each kind against the number of tokens. ``cost`` from
    :func:`measure_local_global_cost`; the memory panel says whether it was measured
    (GPU) or computed from shapes (CPU)."""
    cost = measure_local_global_cost(**measure_kw) if cost is None else cost
    n = np.array(cost["tokens"])
    m, r = cost["window_size"], cost["sr_ratio"]
    panels = [
        ("seconds", 1e3, "ms per forward (median)", "time, measured on this machine"),
    ]
    if "memory" in cost:
        source = cost.get("memory_source", "")
        panels.append(("memory", 2**-20, "MiB", f"peak memory, {source}"))
    panels += [
        ("flops", 1e-6, "million multiply-adds", "formulas (multiply-adds)"),
        ("logits", 1e-6, "million attention logits", "attention logits, all heads"),
    ]
    # 2 x 2 panels fit the page's column; with three, the fourth holds the legend
    fig, axes = plt.subplots(2, 2, figsize=(8.4, 7.2))
    axes = axes.ravel()
    for ax, (key, scale, ylabel, title) in zip(axes, panels):
        for kind, (color, style, label) in COST_STYLE.items():
            if kind not in cost[key]:
                continue
            values = np.array(cost[key][kind]) * scale
            ax.plot(n, values, style, color=color, label=label)
        ax.set(xscale="log", yscale="log", xlabel="tokens (h x w)", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    if len(panels) == 3:
        axes[3].axis("off")
        axes[3].legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9)
    else:
        axes[0].legend(fontsize=9)
    extra = f", SSA c_ratio {cost['c_ratio']:g}" if "SSA" in cost["seconds"] else ""
    fig.suptitle(
        f"one attention layer, C = {cost['dim']}, windows {m}x{m}, sub-sampling {r}"
        f"{extra}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


__all__ = [
    "dense_lsa_weights",
    "receptive_fields",
    "plot_receptive_fields",
    "plot_pyramid_architecture",
    "stack_kinds",
    "gradient_reach",
    "plot_gradient_reach",
    "measure_local_global_cost",
    "attention_memory",
    "plot_local_global_cost",
]
