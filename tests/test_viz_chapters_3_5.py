"""Chapter 5's figures at the sizes the chapter draws them: the photos and the batch
readable in the page's 688 px column, the pipeline's image titles apart from each
other, and a colour for each of the explorer's 24 images."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import vitbook  # noqa: E402
from vitbook import viz  # noqa: E402
from vitbook.packing import pack  # noqa: E402
from vitbook.viz.navit import PADDING  # noqa: E402

COLUMN_PX = 688
SMALLEST_TEXT_PX = 9
# the sizes of chapter 5's batch (VariableResolutionLoader(train_set, 8, seed=0)) and
# of its four photos (long side 224, multiples of 16)
BATCH = [(42, 28), (42, 35), (35, 21), (14, 21), (35, 21), (42, 42), (28, 35), (35, 21)]
PHOTOS = [(224, 224), (144, 224), (144, 224), (144, 224)]


def smallest_text_px(fig) -> float:
    """The smallest visible text's height in pixels once the saved figure (cropped to
    what is drawn, at 100 dpi as the book saves it) is shrunk to the page's column."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width_px = fig.get_tightbbox(renderer).width * fig.dpi
    shrink = min(1.0, COLUMN_PX / width_px)
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure() is fig
    ]
    return min(sizes) * fig.dpi / 72 * shrink


def overlapping_titles(fig) -> list[tuple[str, str]]:
    """The pairs of axes titles whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [
        (ax.title.get_text(), ax.title.get_window_extent(renderer))
        for ax in fig.axes
        if ax.title.get_text()
    ]
    return [
        (a, b) for (a, p), (b, q) in itertools.combinations(boxes, 2) if p.overlaps(q)
    ]


@pytest.mark.parametrize(
    "sizes, channels, scale, suptitle",
    [
        (BATCH, 1, 0.05, "one batch of variable-resolution Fashion-MNIST"),
        (PHOTOS, 3, 0.012, "native aspect ratios, each its own number of patches"),
    ],
)
def test_chapter_5_sizes_figures_are_readable_in_the_column(
    sizes, channels, scale, suptitle
):
    images = [torch.rand(channels, h, w) for h, w in sizes]
    titles = [f"T-shirt/top {i}" for i in range(len(images))]
    fig = viz.plot_sizes(images, titles, suptitle=suptitle, scale=scale)
    try:
        px = smallest_text_px(fig)
        assert px >= SMALLEST_TEXT_PX, f"titles {px:.1f} px tall at {COLUMN_PX} px"
        assert not overlapping_titles(fig)
        # one pixel scale for every image: a small image looks small
        inches = [ax.get_position().width * fig.get_figwidth() for ax in fig.axes]
        per_pixel = [x / w for x, (_, w) in zip(inches, sizes)]
        assert max(per_pixel) == pytest.approx(min(per_pixel))
        assert per_pixel[0] == pytest.approx(scale)
    finally:
        plt.close(fig)


def test_plot_sizes_refuses_a_scale_that_is_not_positive():
    with pytest.raises(ValueError, match="scale must be positive, got 0"):
        viz.plot_sizes([torch.rand(1, 8, 8)], scale=0)


def test_pipeline_image_titles_do_not_overlap_on_chapter_5_batch():
    vitbook.seed_everything(0)
    model = vitbook.NaViT(
        max_image_size=42, patch_size=7, num_classes=10, channels=1, dim=32, depth=2,
        heads=2, token_budget=64,
    )  # fmt: skip
    fig = viz.plot_navit_pipeline(model, [torch.rand(1, h, w) for h, w in BATCH])
    try:
        assert not overlapping_titles(fig)
        assert smallest_text_px(fig) >= SMALLEST_TEXT_PX
    finally:
        plt.close(fig)


def test_explorer_gives_each_of_24_images_its_own_colour_and_none_grey():
    lengths = [4, 6, 9, 12, 15, 16, 20, 25, 30, 36] * 2 + [8, 10, 18, 24]
    fig = viz.plot_packing(pack(lengths, 64, "ffd"))
    try:
        ax = fig.axes[0]
        grey = mcolors.to_hex(PADDING)
        # the padding bars are drawn first, one per sequence, then one bar per image
        bars = ax.patches[-len(lengths) :]
        colours = [mcolors.to_hex(b.get_facecolor()) for b in bars]
        assert len(set(colours)) == len(lengths)
        for c in colours:
            r, g, b = mcolors.to_rgb(c)
            # a grey (equal channels) reads as padding
            assert max(r, g, b) - min(r, g, b) > 0.05, c
        assert grey not in colours
    finally:
        plt.close(fig)
