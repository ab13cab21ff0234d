"""Figures of chapter 6 (MAE): what the encoder sees, what the decoder paints, how the
masking ratio and pretraining change it, and fine-tuning against training from
scratch."""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import identity, moving_average, to_image

HIDDEN_RGB = (0.15, 0.35, 0.75)  # the colour hidden patches are painted in


def masked_rgb(image: torch.Tensor, mask: torch.Tensor, grid) -> np.ndarray:
    """A grey ``(1, h, w)`` image in [0, 1] as RGB ``(h, w, 3)``, hidden patches painted
    in one colour (``mask (n,)`` is 1 where a patch is hidden, patches row by row)."""
    gh, gw = grid
    h, w = image.shape[-2:]
    grey = np.repeat(to_image(image)[..., None], 3, axis=-1)  # (h, w, 3)
    hidden = mask.reshape(gh, gw).cpu().numpy().astype(bool)
    hidden = hidden.repeat(h // gh, axis=0).repeat(w // gw, axis=1)  # (h, w)
    grey[hidden] = HIDDEN_RGB
    return grey


def _image_rows(axes, columns, pictures, masked: int, mask, grid, titles) -> None:
    """Fill a grid of axes, one row per image: column ``j`` shows ``pictures[j][i]``
    in grey, column ``masked`` with the hidden patches (``mask``) painted; the
    columns' names on top, the images' ``titles`` on the left."""
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            if j == masked:
                ax.imshow(masked_rgb(pictures[j][i], mask[i], grid))
            else:
                ax.imshow(to_image(pictures[j][i]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
        row[0].set_ylabel(titles[i] if titles is not None else f"image {i}", fontsize=8)


def plot_reconstructions(
    images: torch.Tensor,
    out: dict,
    grid,
    to_pixels: Callable = identity,
    titles=None,
    title: str | None = None,
):
    """One row per image: the original, what the encoder sees (hidden patches in blue),
    the decoder's prediction for every patch, and the prediction with the visible
    patches pasted back (the paper's Figure 2). ``out`` is ``MAE.reconstruct(images)``;
    ``to_pixels`` maps the model's normalized images back to [0, 1]."""
    n = len(images)
    columns = ("original", "encoder input", "prediction", "visible pasted back")
    pictures = [
        to_pixels(images).cpu(),
        None,
        to_pixels(out["prediction"]).cpu(),
        to_pixels(out["pasted"]).cpu(),
    ]
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.75 * n + 0.6), squeeze=False)
    pictures[1] = pictures[0]  # drawn with its hidden patches painted
    _image_rows(axes, columns, pictures, 1, out["mask"], grid, titles)
    hidden = int(out["mask"][0].sum())
    suptitle = title or (
        f"{hidden} of {out['mask'].shape[1]} patches hidden "
        f"(blue); loss on hidden patches {out['loss']:.3f}"
    )
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_statistics_leak(
    images: torch.Tensor,
    pixels_out: dict,
    normalized_out: dict,
    grid,
    to_pixels: Callable = identity,
    titles=None,
):
    """Why the book's pictures come from a model that predicts pixels. One row per
    image, the same hidden patches in both models: the encoder input, the prediction
    of a model trained on pixels (``norm_pix_loss=False``: the picture is the model's
    alone), and the prediction of a model trained on normalized patches, mapped back
    with each hidden patch's *true* mean and standard deviation (the true image's
    brightness and contrast leak into the picture). ``*_out`` are
    ``MAE.reconstruct(images, noise=...)`` of the two models."""
    n = len(images)
    columns = ("encoder input", "pixel model", "normalized model\n+ true statistics")
    pictures = [
        to_pixels(images).cpu(),
        to_pixels(pixels_out["pasted"]).cpu(),
        to_pixels(normalized_out["pasted"]).cpu(),
    ]
    fig, axes = plt.subplots(n, 3, figsize=(5.4, 1.75 * n + 0.8), squeeze=False)
    _image_rows(axes, columns, pictures, 0, pixels_out["mask"], grid, titles)
    hidden = int(pixels_out["mask"][0].sum())
    fig.suptitle(
        f"{hidden} of {pixels_out['mask'].shape[1]} patches hidden (blue), visible "
        "ones pasted back",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_masking_ratios(
    mae,
    images: torch.Tensor,
    ratios=(0.25, 0.5, 0.75, 0.9),
    to_pixels: Callable = identity,
    seed: int = 0,
):
    """The trained model re-run at several masking ratios on the same images, with one
    noise draw per image: a higher ratio hides a superset of the patches a lower one
    hid. Top row per image: encoder input; bottom: prediction with the visible
    patches pasted back. The loss (per-pixel squared error on hidden patches) per
    ratio is in each column's title."""
    noise = torch.rand(
        len(images),
        mae.grid[0] * mae.grid[1],
        generator=torch.Generator().manual_seed(seed),
    ).to(images.device)
    outs = [mae.reconstruct(images, noise=noise, mask_ratio=r) for r in ratios]
    n = len(images)
    fig, axes = plt.subplots(
        2 * n,
        len(ratios),
        figsize=(1.8 * len(ratios), 1.8 * 2 * n + 0.6),
        squeeze=False,
    )
    originals = to_pixels(images).cpu()
    for j, (ratio, out) in enumerate(zip(ratios, outs)):
        pasted = to_pixels(out["pasted"]).cpu()
        for i in range(n):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            top.imshow(masked_rgb(originals[i], out["mask"][i], mae.grid))
            bottom.imshow(to_image(pasted[i]), cmap="gray", vmin=0, vmax=1)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if j == 0:
                top.set_ylabel(f"image {i}: input", fontsize=8)
                bottom.set_ylabel("reconstruction", fontsize=8)
        axes[0, j].set_title(f"mask {ratio:.0%}\nloss {out['loss']:.3f}", fontsize=9)
    fig.suptitle("one trained MAE, several masking ratios", fontsize=10)
    fig.tight_layout()
    return fig


def plot_pretraining(
    history, frames: list, to_pixels: Callable = identity, smooth: int = 20
):
    """Top: the MAE loss per step (smoothed), a marker where each snapshot was taken.
    Below it: the reconstructions (visible patches pasted back) of the same images with
    the same hidden patches at those steps, one row per snapshot. ``frames`` is a list
    of ``(step, pasted images (k, c, h, w))``."""
    steps = [r["step"] for r in history.steps]
    losses = [r["loss"] for r in history.steps]
    k = len(frames[0][1])
    # the snapshots get the column's full width below the curve, not a strip beside
    # it: six thumbnails beside the curve were about 50 px wide in the page's column
    thumb = 1.25
    fig = plt.figure(
        figsize=(max(6.0, thumb * k + 0.5), 3.2 + thumb * len(frames)),
        layout="constrained",
    )
    fig.get_layout_engine().set(wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(
        1 + len(frames), k, height_ratios=[2.6] + [thumb] * len(frames)
    )
    ax = fig.add_subplot(grid[0, :])
    ax.plot(steps, losses, color="C0", alpha=0.25, lw=0.8)
    smoothed = moving_average(losses, smooth)
    ax.plot(steps, smoothed, color="C0", label="loss on hidden patches")
    for i, (step, _) in enumerate(frames):
        at = min(max(step, 1), len(smoothed)) - 1
        label = "a snapshot below" if i == 0 else None
        ax.plot(step, smoothed[at], "o", color="C1", label=label)
    ax.set(xlabel="step", ylabel="MAE loss (smoothed)")
    ax.set_title("pretraining loss", fontsize=10)
    ax.legend()
    for row, (step, pictures) in enumerate(frames):
        pictures = to_pixels(pictures).cpu()
        for col in range(k):
            sub = fig.add_subplot(grid[1 + row, col])
            sub.imshow(to_image(pictures[col]), cmap="gray", vmin=0, vmax=1)
            sub.set_xticks([])
            sub.set_yticks([])
            if col == 0:
                sub.set_ylabel(f"step {step}", fontsize=10)
    fig.suptitle("the same hidden patches, reconstructed as pretraining goes")
    return fig


def plot_finetuning(histories: dict, smooth: int = 20):
    """Training loss and test accuracy of several runs on one pair of axes each, e.g.
    ``{"from MAE": h1, "from scratch": h2}`` over the same budget."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, (name, history) in enumerate(histories.items()):
        steps = [r["step"] for r in history.steps]
        losses = [r["loss"] for r in history.steps]
        left.plot(steps, moving_average(losses, smooth), color=f"C{i}", label=name)
        evals = [r for r in history.evals if "test_acc" in r]
        right.plot(
            [r["step"] for r in evals],
            [r["test_acc"] for r in evals],
            "o-",
            color=f"C{i}",
            label=f"{name}: {evals[-1]['test_acc']:.1%}" if evals else name,
        )
    left.set(xlabel="step", ylabel="training loss (smoothed)", title="loss")
    right.set(xlabel="step", ylabel="test accuracy", title="test accuracy")
    left.legend()
    right.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _blocks(n: int) -> str:
    return f"{n} block" if n == 1 else f"{n} blocks"


def plot_mae_method(mae, title: str | None = None):
    """MAE as a diagram drawn from ``mae`` (a :class:`vitbook.ssl.MAE`): the encoder
    sees only the visible patches, the decoder gets them back in place with mask
    tokens at the hidden positions, and the loss is taken on the hidden patches."""
    from .common import plot_pipeline

    n = mae.grid[0] * mae.grid[1]
    keep = int(n * (1 - mae.mask_ratio))
    (ph, pw), c = mae.patch_size, mae.channels
    encoder, decoder = mae.backbone, mae.decoder_blocks
    boxes = [
        ("patches", [f"{mae.grid[0]} x {mae.grid[1]} = {n}", f"of {ph}x{pw} pixels"]),
        (
            "mask",
            [
                f"hide {n - keep} at random",
                f"keep {keep}",
                f"(ratio {mae.mask_ratio:g})",
            ],
        ),
        (
            "encoder",
            [
                _blocks(len(encoder.blocks)),
                f"width {encoder.dim}",
                f"{keep} tokens only",
            ],
        ),
        (
            "decoder",
            [
                f"+ {n - keep} mask tokens",
                f"{n} tokens",
                _blocks(len(decoder)),
                f"width {mae.mask_token.shape[-1]}",
            ],
        ),
        (
            "loss",
            [
                f"{ph * pw * c} pixels per patch",
                "MSE, hidden only",
                "normalized" if mae.norm_pix_loss else "raw pixels",
            ],
        ),
    ]
    return plot_pipeline(
        boxes, title or "MAE: encode the visible, decode all", width=1.6
    )


__all__ = [
    "plot_mae_method",
    "masked_rgb",
    "plot_reconstructions",
    "plot_statistics_leak",
    "plot_masking_ratios",
    "plot_pretraining",
    "plot_finetuning",
]
