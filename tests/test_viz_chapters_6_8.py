"""Chapters 6-8's figures at the sizes the chapters draw them: readable in the book's
688 px column (the example sizes of test_viz.py hide what only the chapter's size
shows), on one colour scale where two figures are compared, with the reference lines
the prose reads them against."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
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


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_multicrop_numbers_and_titles_do_not_overlap_at_the_chapters_crops():
    # chapter 7's Fashion-MNIST call (its first global box covers the image's corner
    # where the second one's number went too) and its photo call
    from vitbook.ssl import MultiCrop

    image = torch.rand(1, 28, 28)
    crops = MultiCrop(28, 14, num_local=4, seed=0, local_scale=(0.1, 0.4))
    photo_crops = MultiCrop(112, 48, num_local=4, sigma=(0.5, 2.0), seed=1)
    for fig in (
        viz.plot_multicrop(image, crops, title="t"),
        viz.plot_multicrop(torch.rand(3, 224, 224), photo_crops, title="t"),
    ):
        try:
            fig.canvas.draw()
            shrink = column_shrink(fig)
            numbers = fig.axes[0].texts
            assert [t.get_text() for t in numbers] == [str(i) for i in range(1, 7)]
            for t in numbers:
                # at least 9 px in the column, on a white box
                assert t.get_fontsize() * fig.dpi / 72 * shrink >= SMALLEST_TEXT_PX
                assert t.get_bbox_patch().get_facecolor()[:3] == (1.0, 1.0, 1.0)
            boxes = [t.get_bbox_patch().get_window_extent() for t in numbers]
            for i in range(len(boxes)):
                for j in range(i):
                    assert not _overlap(boxes[i], boxes[j]), f"{i + 1} on {j + 1}"
            # a view's title stays off the view above it
            views = fig.axes[1:]
            for ax in views:
                title = ax.title.get_window_extent()
                for other in views:
                    if other is not ax:
                        assert not _overlap(title, other.get_window_extent())
        finally:
            plt.close(fig)


def test_attention_figures_share_the_colour_scale_they_are_given():
    from test_viz import _IMAGES, _small_vit

    figs = [
        viz.plot_class_token_attention(_small_vit(), _IMAGES, vmax=0.5)
        for _ in range(2)
    ]
    try:
        for fig in figs:
            # the attention maps (the images' own panels are grey)
            maps = [i for ax in fig.axes for i in ax.images]
            maps = [m for m in maps if m.get_cmap().name == "inferno"]
            assert len(maps) == 2 * 2  # 2 images x 2 heads
            assert all(m.get_clim() == (0, 0.5) for m in maps)
    finally:
        for fig in figs:
            plt.close(fig)
    with pytest.raises(ValueError, match="vmax"):
        viz.plot_class_token_attention(_small_vit(), _IMAGES, vmax=0.0)


def test_esvit_entropy_panel_draws_log_k_as_chapter_7s_does():
    rows = [
        {"step": i, "view": 6.0, "region": 5.0, "entropy": 6.0, "std": 0.1, "erank": 9}
        for i in range(20)
    ]
    fig = viz.plot_esvit_diagnostics(History(steps=rows), max_entropy=math.log(1024))
    try:
        entropy = fig.axes[1]
        assert entropy.get_title() == "teacher entropy"
        legend = [t.get_text() for t in entropy.get_legend().get_texts()]
        assert legend == ["entropy", "log K = 6.93 (uniform)"], legend
        dashed = [ln for ln in entropy.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and dashed[0].get_ydata()[0] == math.log(1024)
        # the line is in view: the panel's y-axis reaches it
        assert entropy.get_ylim()[1] >= math.log(1024)
        px, text = smallest_text_px(fig)
        assert px >= SMALLEST_TEXT_PX, f"{text!r} is {px:.1f} px tall"
    finally:
        plt.close(fig)
