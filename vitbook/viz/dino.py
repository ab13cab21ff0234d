"""DINO's figures: the multi-crop views, the class token's attention per head, and the
collapse diagnostics of several runs side by side."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..layers import record_attention
from .common import (
    moving_average,
    plot_branches,
    to_image,
    uniform_entropy_line,
)


def _label_spots(boxes, size, gap: float = 0.14) -> list[tuple]:
    """For each box ``(x1, y1, x2, y2)``, where its number goes: ``(x, y, ha, va)`` at
    one of its inner corners, the first that is at least ``gap`` of the image's
    ``size`` (h, w) from every number placed before it (or else the farthest one).
    Boxes often share a corner (a global crop of the whole image has the image's):
    numbers at the same corner would sit on top of each other."""
    h, w = size
    inset = 0.02 * max(h, w)
    placed, spots = [], []
    for x1, y1, x2, y2 in boxes:
        corners = [
            (x1 + inset, y1 + inset, "left", "top"),
            (x2 - inset, y2 - inset, "right", "bottom"),
            (x2 - inset, y1 + inset, "right", "top"),
            (x1 + inset, y2 - inset, "left", "bottom"),
        ]

        def clearance(spot):
            # how far, in units of the image's size, the nearest placed number is
            return min(
                (max(abs(spot[0] - x) / w, abs(spot[1] - y) / h) for x, y in placed),
                default=1.0,
            )

        spot = next((c for c in corners if clearance(c) >= gap), None)
        spot = spot or max(corners, key=clearance)
        placed.append(spot[:2])
        spots.append(spot)
    return spots


def plot_multicrop(image: torch.Tensor, multicrop, title: str | None = None):
    """One image ``(c, h, w)`` in [0, 1], the boxes ``multicrop`` cut from it (global
    in blue, local in orange), each numbered inside a corner, and the views themselves,
    in the order DINO feeds them."""
    # [global 1, global 2, local 1, ...], each (1, c, ., .)
    views = multicrop(image[None])
    boxes = [b[0].tolist() for b in multicrop.last_boxes]
    n = len(views)
    # the image on the left; the views to its right in two rows, to fit the column
    per_row = -(-n // 2)
    fig = plt.figure(figsize=(2.8 + 1.2 * per_row, 3.9), layout="constrained")
    grid = fig.add_gridspec(2, per_row + 2)
    image_ax = fig.add_subplot(grid[:, :2])
    image_ax.imshow(to_image(image), cmap="gray")
    spots = _label_spots(boxes, image.shape[-2:])
    for i, ((x1, y1, x2, y2), (x, y, ha, va)) in enumerate(zip(boxes, spots)):
        color = "tab:blue" if i < 2 else "tab:orange"
        image_ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=1.5)
        )
        # on a white box, so that it reads over any image and off the box's edge
        white = dict(boxstyle="round,pad=0.15", fc="white", ec=color, lw=1)
        image_ax.text(
            x,
            y,
            str(i + 1),
            color=color,
            fontsize=10,
            fontweight="bold",
            ha=ha,
            va=va,
            bbox=white,
        )
    image_ax.set_title("image and crop boxes", fontsize=10)
    image_ax.axis("off")
    for i, view in enumerate(views):
        ax = fig.add_subplot(grid[i // per_row, 2 + i % per_row])
        kind = "global" if i < 2 else "local"
        h, w = view.shape[-2:]
        ax.imshow(to_image(view[0]), cmap="gray")
        ax.set_title(f"{i + 1}: {kind}\n{h}x{w}", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


@torch.no_grad()
def class_token_attention(backbone, images: torch.Tensor, layer: int = -1):
    """The class token's attention over the patches in one layer, every head: ``(b,
    heads, gh, gw)``, recorded from ``backbone`` (a ViT with a class token) in eval
    mode."""
    was_training = backbone.training
    backbone.eval()
    with record_attention(backbone) as maps:
        backbone.forward_features(images)
    backbone.train(was_training)
    names = [name for name in maps if maps[name]]
    weights = maps[names[layer]][0]  # (b, heads, n, n)
    prefix = backbone.num_prefix_tokens
    if prefix == 0:
        raise ValueError("class_token_attention needs a backbone with a class token")
    row = weights[:, :, 0, prefix:]  # (b, heads, patches)
    gh, gw = backbone.grid
    return row.reshape(*row.shape[:2], gh, gw).float().cpu()


def plot_class_token_attention(
    backbone,
    images: torch.Tensor,
    shown: torch.Tensor | None = None,
    titles=None,
    layer: int = -1,
    title: str | None = None,
    vmax: float | None = None,
):
    """The paper's figure at this scale: where the class token of the last layer looks,
    head by head. ``images`` are what the backbone takes (normalized); ``shown`` the
    same images in [0, 1] for display (default: ``images``). The colour is the
    attention weight on each patch (a row sums to 1 over the patches and the class
    token), from 0 to ``vmax`` (default: the largest weight drawn); give two figures
    the same ``vmax`` to compare them by colour."""
    att = class_token_attention(backbone, images, layer)  # (b, heads, gh, gw)
    shown = images if shown is None else shown
    b, heads = att.shape[:2]
    fig, axes = plt.subplots(
        b, heads + 1, figsize=(1.6 * (heads + 1) + 0.8, 1.6 * b + 0.4), squeeze=False
    )
    if vmax is None:
        vmax = float(att.max())
    elif not vmax > 0:
        raise ValueError(f"vmax must be a positive attention weight, got {vmax}")
    for i in range(b):
        axes[i, 0].imshow(to_image(shown[i]), cmap="gray")
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=8)
        for h in range(heads):
            im = axes[i, h + 1].imshow(
                att[i, h].numpy(), cmap="inferno", vmin=0, vmax=vmax
            )
            if i == 0:
                axes[i, h + 1].set_title(f"head {h + 1}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.7, label="attention of [class] on the patch")
    fig.suptitle(title or "class-token attention, last layer, per head", fontsize=10)
    return fig


# DINO computes std and effective rank on the teacher's output distributions (softmax
# over the K outputs), not on the backbone's embedding
DIAGNOSTICS = (
    ("entropy", "teacher entropy (nats)"),
    ("kl", "KL(teacher || student) (nats)"),
    ("std", "std of teacher distribution"),
    ("erank", "effective rank of teacher distribution"),
)


def plot_collapse_diagnostics(histories: dict, smooth: int = 5, max_entropy=None):
    """The four collapse diagnostics over training, one line per run (``histories``
    maps a run's name to its ``fit`` History, whose steps hold ``entropy``, ``kl``,
    ``std``, ``erank``). ``max_entropy`` (``log K``) is drawn as a dashed line: a
    teacher output at it is uniform, at 0 it is one-hot; both are collapse."""
    # 2 x 2 panels fit the page's column
    fig, axes = plt.subplots(2, 2, figsize=(8.2, 6.0))
    for ax, (key, label) in zip(axes.ravel(), DIAGNOSTICS):
        for j, (name, history) in enumerate(histories.items()):
            rows = [r for r in history.steps if key in r]
            steps = [r["step"] for r in rows]
            values = np.asarray([r[key] for r in rows])
            ax.plot(steps, moving_average(values, smooth), color=f"C{j}", label=name)
        if key == "entropy" and max_entropy is not None:
            uniform_entropy_line(ax, max_entropy)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        # each panel says which run is which: a reader looks at one at a time
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _size(size) -> str:
    return f"{size[0]}x{size[1]}"


def _crops(multicrop, local: bool = True) -> list[str]:
    """The views a multi-crop makes, as a diagram's lines."""
    lines = [f"2 global {_size(multicrop.global_size)}"]
    if local and multicrop.num_local:
        lines.append(f"{multicrop.num_local} local {_size(multicrop.local_size)}")
    return lines


def _backbone(model) -> str:
    return f"{type(model).__name__}, width {model.num_features}"


def plot_dino_method(dino, title: str | None = None):
    """DINO as a diagram drawn from ``dino`` (a :class:`vitbook.ssl.DINO`): the
    student sees every crop, the teacher (a moving average of the student) the two
    global ones; the teacher's output is centered and sharpened, and the loss is the
    cross-entropy from each teacher view to every other student view."""
    k = dino.center.shape[1]
    crops = dino.multicrop
    seen = 2 if dino.variant == "seed" else 2 + crops.num_local
    pairs = 2 * seen - (0 if dino.variant == "seed" else 2)
    student_views = (
        [f"{crops.num_local} local {_size(crops.local_size)}"]
        if dino.variant == "seed"
        else _crops(crops)
    )
    teacher = dino.teacher
    centering = f"minus center (EMA {dino.center_momentum})"
    top = [
        ("views", student_views),
        ("student", [_backbone(dino.student.backbone), f"head -> K = {k:,}"]),
        ("softmax", [f"$\\tau_s$ = {dino.student_temp}"]),
    ]
    bottom = [
        ("views", _crops(crops, local=False)),
        ("teacher", ["the same network,", f"EMA m: {teacher.base} -> {teacher.final}"]),
        (
            "center, softmax",
            [
                centering if dino.centering else "no centering",
                f"$\\tau_t$: {dino.warmup_teacher_temp} -> {dino.teacher_temp}",
            ],
        ),
    ]
    loss = (
        "cross-entropy",
        ["teacher view ->", "the other student", f"views: {pairs} pairs"],
    )
    return plot_branches(
        top, bottom, loss, link=(1, "EMA"), title=title or "DINO: self-distillation"
    )


__all__ = [
    "plot_dino_method",
    "plot_multicrop",
    "class_token_attention",
    "plot_class_token_attention",
    "plot_collapse_diagnostics",
]
