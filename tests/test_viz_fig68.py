"""Chapters 6-8's figures at the sizes the chapters draw them: readable in the book's
688 px column (the example sizes of test_viz.py hide what only the chapter's size
shows), on one colour scale where two figures are compared, with the reference lines
the prose reads them against."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from test_viz import COLUMN_PX, SMALLEST_TEXT_PX, smallest_text_px  # noqa: E402

from vitbook import viz  # noqa: E402
from vitbook.train import History  # noqa: E402


def column_shrink(fig) -> float:
    """How much the page's column scales the saved (tightly cropped) figure down."""
    fig.canvas.draw()
    width_px = fig.get_tightbbox(fig.canvas.get_renderer()).width * fig.dpi
    return min(1.0, COLUMN_PX / width_px)


def test_pretraining_snapshots_are_readable_at_the_chapters_six_images():
    # chapter 6: six test images, snapshots at steps 0, 50, 200 and the end (600)
    history = History(steps=[{"step": i, "loss": 1 / i} for i in range(1, 601)])
    frames = [(s, torch.rand(6, 1, 28, 28)) for s in (0, 50, 200, 600)]
    fig = viz.plot_pretraining(history, frames)
    try:
        px, text = smallest_text_px(fig)
        assert px >= SMALLEST_TEXT_PX, f"{text!r} is {px:.1f} px tall"
        shrink = column_shrink(fig)
        thumbs = [ax for ax in fig.axes if ax.images]
        assert len(thumbs) == 24
        widths = [ax.get_window_extent().width * shrink for ax in thumbs]
        # beside the loss curve they were about 50 px wide: too small to see a garment
        assert min(widths) >= 90, f"thumbnails {min(widths):.0f} px wide"
        # the step labels name the rows, in order
        labels = [ax.get_ylabel() for ax in thumbs if ax.get_ylabel()]
        assert labels == ["step 0", "step 50", "step 200", "step 600"]
    finally:
        plt.close(fig)
