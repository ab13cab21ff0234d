"""Figures of chapter 1: patches, position embeddings, attention maps and rollout."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..layers import pair
from .common import patch_grid, plot_pipeline, shape_text, to_image


def plot_patches(image: torch.Tensor, patch_size, max_tokens_shown: int = 49):
    """An image, the same image cut into a grid of patches, and the first patches laid
    out as a sequence."""
    c, h, w = image.shape
    ph, pw = pair(patch_size)
    gh, gw = patch_grid(image, patch_size)
    # (c, gh, gw, ph, pw)
    patches = image.unfold(1, ph, ph).unfold(2, pw, pw)
    # (gh * gw, c, ph, pw), row-major, as the tokens are
    patches = patches.permute(1, 2, 0, 3, 4).reshape(gh * gw, c, ph, pw)

    # top: the image and its grid; below: the first patches as a sequence
    fig = plt.figure(figsize=(8.4, 7.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.7])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_image(image), cmap="gray")
    ax.set_title(f"image {h}x{w}")
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(to_image(image), cmap="gray")
    for y in range(0, h + 1, ph):
        ax.axhline(y - 0.5, color="w", lw=1)
    for x in range(0, w + 1, pw):
        ax.axvline(x - 0.5, color="w", lw=1)
    for i in range(min(gh * gw, max_tokens_shown)):
        r, col = divmod(i, gw)
        ax.text(
            col * pw + pw / 2 - 0.5,
            r * ph + ph / 2 - 0.5,
            str(i),
            color="yellow",
            ha="center",
            va="center",
            fontsize=8,
        )
    ax.set_title(f"{gh}x{gw} = {gh * gw} patches of {ph}x{pw}")
    ax.axis("off")
    shown = min(gh * gw, 16)
    per_row = -(-shown // 2)
    sub = grid[1, :].subgridspec(2 if shown > 1 else 1, per_row, hspace=0.45)
    for i in range(shown):
        ax = fig.add_subplot(sub[i // per_row, i % per_row])
        ax.imshow(to_image(patches[i]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(str(i), fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"the sequence: token i is patch i, flattened to {c}*{ph}*{pw} = "
        f"{c * ph * pw} numbers\n(first {shown} of {gh * gw} shown)",
        y=0.02,
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def position_similarity(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Cosine similarity between the position embeddings of every pair of patches,
    ``(gh, gw, gh, gw)``."""
    gh, gw = grid
    # (n, d): one row per patch, the prefix tokens' rows (the class token's) dropped
    pos = pos_embed.detach().float().cpu().reshape(-1, pos_embed.shape[-1])
    pos = pos[num_prefix_tokens:]
    if len(pos) != gh * gw:
        raise ValueError(f"{len(pos)} position embeddings do not fill a {gh}x{gw} grid")
    pos = F.normalize(pos, dim=-1)
    return (pos @ pos.T).reshape(gh, gw, gh, gw)


def plot_position_similarity(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    num_prefix_tokens: int = 0,
    title: str = "cosine similarity of position embeddings",
):
    """ViT paper Fig. 7 (centre): for each patch position, its embedding's cosine
    similarity to all others.

    Panel ``(row, column)`` belongs to token ``row * gw + column`` (its title) and
    shows that token's similarity to every token, laid out on the same grid. One
    colour scale for all panels, from the smallest similarity to 1."""
    gh, gw = grid
    sim = position_similarity(pos_embed, grid, num_prefix_tokens)
    low = float(sim.min())
    # panels shrink on a large grid so that the figure fits the page's column
    side = min(0.6, 6.6 / max(gh, gw))
    fig, axes = plt.subplots(
        gh, gw, figsize=(side * gw + 1.8, (side + 0.05) * gh + 1.0), squeeze=False
    )
    for r in range(gh):
        for c in range(gw):
            ax = axes[r, c]
            im = ax.imshow(sim[r, c].numpy(), vmin=low, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(r * gw + c), fontsize=8, pad=1.5)
    for r in range(gh):
        axes[r, 0].set_ylabel(str(r), rotation=0, fontsize=8, labelpad=7)
    for c in range(gw):
        axes[-1, c].set_xlabel(str(c), fontsize=8)
    fig.supxlabel("column of the patch (panel title: its token number)", fontsize=9)
    fig.supylabel("row of the patch", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.6, label="cosine similarity")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_attention_weights(weights: torch.Tensor, tokens=None, title=None):
    """Attention weights as a heatmap, queries down and keys across, each weight
    written in its cell. ``weights``: ``(n, n)`` or ``(heads, n, n)`` (one panel per
    head, one colour scale from 0 to 1 for all)."""
    weights = weights.detach().float().cpu()
    if weights.ndim == 2:
        weights = weights[None]
    heads, n, _ = weights.shape
    tokens = [str(i) for i in range(n)] if tokens is None else list(tokens)
    fig, axes = plt.subplots(
        1,
        heads,
        figsize=(0.55 * n * heads + 1.4 * heads + 0.8, 0.55 * n + 1.2),
        squeeze=False,
    )
    for h, ax in enumerate(axes[0]):
        im = ax.imshow(weights[h].numpy(), cmap="Blues", vmin=0, vmax=1)
        for (i, j), w in np.ndenumerate(weights[h].numpy()):
            ax.text(
                j,
                i,
                f"{w:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if w > 0.6 else "black",
            )
        ax.set_xticks(range(n), tokens, fontsize=8, rotation=30 if n > 4 else 0)
        ax.set_yticks(range(n), tokens, fontsize=8)
        ax.set_xlabel("key (attended to)", fontsize=9)
        ax.set_ylabel("query (attending)", fontsize=9)
        if heads > 1:
            ax.set_title(f"head {h + 1}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="attention weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_vit_architecture(model, title: str | None = None):
    """ViT as a block diagram, patches -> tokens -> encoder -> head, with the shapes
    of one image going through ``model`` (measured on a zero image, so the diagram
    cannot drift from the code)."""
    embed = model.patch_embed
    (ih, iw), (ph, pw), c = embed.image_size, embed.patch_size, embed.channels
    x = torch.zeros(1, c, ih, iw)
    with torch.no_grad():
        tokens = model.embed(x)[0]  # (prefix + n, dim)
        encoded = model.forward_intermediates(x)[-1][0]
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)[0]
        logits = model(x)[0]
    block = model.blocks[0]
    pool = "class token" if model.pool == "cls" else "mean of tokens"
    boxes = [
        ("image", [f"{c} x {ih} x {iw}", "(c x H x W)"]),
        (
            "patches",
            [
                f"{embed.grid[0]} x {embed.grid[1]} = {embed.num_patches}",
                f"of {ph}x{pw} pixels",
                f"{c * ph * pw} numbers each",
            ],
        ),
        (
            "tokens",
            [shape_text(tokens.shape), "linear map E"]
            + (["+ class token"] if model.num_prefix_tokens else [])
            + ["+ position emb."],
        ),
        (
            "encoder",
            [
                f"{len(model.blocks)} x block",
                f"{block.attn.heads} heads, MLP {block.mlp.fc1.out_features}",
                shape_text(encoded.shape),
            ],
        ),
        ("pool", ["LayerNorm", pool, shape_text(pooled.shape)]),
        ("head", ["linear", f"{shape_text(logits.shape)} logits"]),
    ]
    return plot_pipeline(boxes, title or "ViT: one image on its way through")


def attention_rollout(maps: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each output token draws on
    each input token.

    ``maps`` holds one ``(b, heads, n, n)`` tensor per layer, first layer first. Heads
    are averaged, the residual connection is modelled as ``residual * I``, rows
    renormalized, and the layers multiplied in order. Returns ``(b, n, n)``.
    """
    if not maps:
        raise ValueError(
            "attention_rollout needs the attention maps of at least one layer"
        )
    rollout = None
    for weights in maps:
        a = weights.float().mean(dim=1)  # (b, n, n)
        a = residual * torch.eye(a.shape[-1], device=a.device) + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def _token_heat(weights_row: torch.Tensor, grid, size) -> np.ndarray:
    """A row of attention over the patch tokens, stretched to [0, 1] and upsampled to
    the image size.

    Each panel is stretched on its own (min to max), so it shows where a token looks
    most and least, not how peaked one layer is compared with another.
    """
    heat = weights_row.reshape(1, 1, *grid).float()
    heat = F.interpolate(heat, size=size, mode="nearest")[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    return heat.cpu().numpy()


def plot_attention(
    images: torch.Tensor,
    maps: list[torch.Tensor],
    grid,
    num_prefix_tokens: int = 1,
    titles=None,
    layers=None,
    caption: str | None = None,
):
    """What the class token looks at: per-layer attention (head mean) and the rollout
    through all layers.

    ``images``: ``(b, c, H, W)`` in [0, 1]. ``maps``: one ``(b, heads, n, n)`` per
    layer. With no class token (``num_prefix_tokens=0``) the query is the mean over all
    patch tokens.
    """
    layers = list(range(len(maps))) if layers is None else list(layers)
    rollout = attention_rollout(maps)  # (b, n, n)
    b = len(images)
    size = images.shape[-2:]

    def query_row(a):  # (b, n, n) -> (b, patches)
        row = a[:, 0] if num_prefix_tokens else a.mean(dim=1)
        return row[:, num_prefix_tokens:]

    columns = [("image", None)] + [
        (f"layer {i + 1}", query_row(maps[i].float().mean(1))) for i in layers
    ]
    columns.append(("rollout", query_row(rollout)))
    fig, axes = plt.subplots(
        b,
        len(columns),
        figsize=(1.7 * len(columns) + 0.6, 1.8 * b + 0.5),
        squeeze=False,
    )
    for i in range(b):
        img = to_image(images[i])
        for j, (name, rows) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray")
            if rows is not None:
                ax.imshow(
                    _token_heat(rows[i], grid, size),
                    cmap="inferno",
                    alpha=0.6,
                    vmin=0,
                    vmax=1,
                )
            if i == 0:
                ax.set_title(name, fontsize=9)
            ax.axis("off")
        if titles is not None:
            axes[i, 0].set_title(titles[i] if i else f"image\n{titles[i]}", fontsize=8)
    query = "class token" if num_prefix_tokens else "mean of the patch tokens"
    fig.suptitle(
        caption
        or f"attention of the {query} to each patch (mean of heads); "
        "each panel scaled to its own range",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    _relative_colorbar(fig, axes)
    return fig


def _relative_colorbar(fig, axes):
    """The colour bar of the attention overlays: 0 is a panel's smallest weight, 1 its
    largest."""
    bar = fig.colorbar(
        plt.cm.ScalarMappable(plt.Normalize(0, 1), "inferno"),
        ax=np.ravel(axes).tolist(),
        shrink=0.7,
        fraction=0.04,
    )
    bar.set_label("attention, panel min (0) to max (1)", fontsize=8)
    return bar


def plot_attention_heads(
    image: torch.Tensor,
    maps: list[torch.Tensor],
    grid,
    head: int = -1,
    num_prefix_tokens: int = 1,
    title: str | None = None,
):
    """One image: the class token's attention in each layer for one head (``head=-1``:
    mean of heads).

    ``maps``: one ``(heads, n, n)`` tensor per layer for this image. The last panel is
    the rollout through all layers (always over the mean of the heads, as Abnar &
    Zuidema define it).
    """
    heads = maps[0].shape[0]
    if not -1 <= head < heads:
        raise ValueError(f"head={head} must be -1 (mean) or in [0, {heads})")
    size = image.shape[-2:]
    rows = []
    for weights in maps:
        a = weights.float().mean(0) if head == -1 else weights[head].float()  # (n, n)
        row = a[0] if num_prefix_tokens else a.mean(0)
        rows.append(row[num_prefix_tokens:])
    rollout = attention_rollout([m[None] for m in maps])[0]
    rows.append(
        (rollout[0] if num_prefix_tokens else rollout.mean(0))[num_prefix_tokens:]
    )
    names = [f"layer {i + 1}" for i in range(len(maps))] + ["rollout"]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(1.9 * (len(rows) + 1), 2.3))
    img = to_image(image)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title(title or "image", fontsize=9)
    for ax, name, row in zip(axes[1:], names, rows):
        ax.imshow(img, cmap="gray")
        ax.imshow(
            _token_heat(row, grid, size), cmap="inferno", alpha=0.6, vmin=0, vmax=1
        )
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("mean of heads" if head == -1 else f"head {head}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    _relative_colorbar(fig, axes)
    return fig
