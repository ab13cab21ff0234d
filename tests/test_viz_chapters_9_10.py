"""Chapters 9 and 10's figures at the size the chapters draw them: BYOL's collapse
figure with its five runs and P = 128, BYOL's method diagram, and MP3's arrows for six
test images and its confusion figure on the 4x4 grid. tests/test_viz.py checks every
figure at a small example size; these check what was unreadable or wrong at the
chapters' size."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_viz import (  # noqa: E402
    COLUMN_PX,
    SMALLEST_TEXT_PX,
    _small_byol,
    smallest_text_px,
)

from vitbook import viz  # noqa: E402
from vitbook.train import History  # noqa: E402

# chapter 9's five runs, in its order, and its projection dimension
RUNS = (
    "BYOL",
    "BYOL, no predictor",
    "BYOL, tau = 0",
    "SimSiam",
    "SimSiam, no predictor",
)
P = 128


def _byol_runs(steps=100):
    """Curves of the shape chapter 9's short runs draw: the loss falls from about 4,
    the spread falls from 1/sqrt(P), the effective ranks fall from about 40 and 10."""
    runs = {}
    for j, name in enumerate(RUNS):
        rows = []
        for step in range(1, steps + 1):
            fall = math.exp(-step / (10 + 5 * j))
            rows.append(
                {
                    "step": step,
                    "loss": 0.5 + 3.5 * fall,
                    # every run starts at 1/sqrt(P), none above it
                    "std": (0.5 + 0.5 * fall - 0.02 * j) / math.sqrt(P),
                    "erank": 1 + 40 * fall + j,
                    "rep_erank": 2 + 8 * fall + 0.5 * j,
                }
            )
        runs[name] = History(steps=rows)
    return runs


def _drawn_tick_labels(axis):
    """The tick labels the axis draws: those of ticks inside its view (matplotlib
    keeps visible labels for ticks outside it, and does not draw them)."""
    low, high = sorted(axis.get_view_interval())
    margin = 1e-9 * (high - low)
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if low - margin <= tick.get_loc() <= high + margin:
            yield tick.label1


def _text_extents(fig):
    """(text, window extent) of every text the figure draws: titles, axis labels,
    drawn tick labels, texts on the panels, the legends' entries."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle, fig._supxlabel, fig._supylabel]
    texts += [t for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label]
        texts += [ax.yaxis.label, *ax.texts]
        texts += [*_drawn_tick_labels(ax.xaxis), *_drawn_tick_labels(ax.yaxis)]
        if ax.get_legend():
            texts += ax.get_legend().get_texts()
    return [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts
        if t is not None and t.get_visible() and t.get_text().strip()
    ]


def _overlapping_texts(fig):
    texts = _text_extents(fig)
    return [
        (a, b)
        for i, (a, box_a) in enumerate(texts)
        for b, box_b in texts[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def _readable(fig, name):
    px, text = smallest_text_px(fig)
    assert px >= SMALLEST_TEXT_PX, (
        f"{name}: {text!r} is {px:.1f} px tall in the {COLUMN_PX} px column"
    )


def test_byol_diagnostics_share_one_legend_under_the_panels():
    fig = viz.plot_byol_diagnostics(_byol_runs(), projection_dim=P)
    try:
        # no legend inside a panel, where it covered the curves of the first steps
        assert not [ax for ax in fig.axes if ax.get_legend()]
        assert len(fig.legends) == 1
        legend = fig.legends[0]
        labels = [t.get_text() for t in legend.get_texts()]
        # every run, and the dashed line named there rather than on the panel
        assert labels[: len(RUNS)] == list(RUNS), labels
        assert labels[len(RUNS) :] == [r"$1/\sqrt{P}$, P = 128"], labels
        assert not [t for ax in fig.axes for t in ax.texts], "a label on a panel"
        # the legend lies below every panel, their tick labels and axis labels
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert box.y1 < ax.get_tightbbox(renderer).y0, ax.get_ylabel()
        # the dashed line is inside the std panel, not on its top frame
        std = fig.axes[1]
        assert std.get_ylim()[1] >= 1.1 / math.sqrt(P)
        _readable(fig, "plot_byol_diagnostics")
        assert not _overlapping_texts(fig)
    finally:
        plt.close(fig)


def test_byol_method_names_the_momentum_tau_as_the_text_does():
    # chapter 9 starts the momentum at 0.99
    fig = viz.plot_byol_method(_small_byol(momentum=0.99))
    try:
        lines = [t.get_text() for t in fig.axes[0].texts]
        ema = [line for line in lines if line.startswith("EMA ")]
        assert ema == [r"EMA $\tau$: 0.99 -> 1.0"], lines
    finally:
        plt.close(fig)


def test_position_arrows_of_six_images_read_in_two_rows_of_three():
    torch.manual_seed(0)
    images = torch.rand(6, 1, 28, 28)
    predicted = torch.randint(0, 16, (6, 16))
    names = ["Ankle boot", "Pullover", "Trouser", "Trouser", "Shirt", "Trouser"]
    fig = viz.plot_position_arrows(images, predicted, (4, 4), titles=names)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 6
        rows = sorted({round(ax.get_position().y0, 3) for ax in panels})
        assert len(rows) == 2, rows
        _readable(fig, "plot_position_arrows")
        # the second row's titles clear the first row's labels
        assert not _overlapping_texts(fig)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [2, 5])
def test_position_arrows_hide_the_empty_places_of_the_last_row(n):
    fig = viz.plot_position_arrows(
        torch.rand(n, 1, 28, 28), torch.arange(16).repeat(n, 1), (4, 4)
    )
    try:
        assert len([ax for ax in fig.axes if ax.get_visible()]) == n
        # rows of up to three
        assert len(fig.axes) == min(3, n) * math.ceil(n / 3)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("side, chance", [(4, "6.25%"), (2, "25%"), (7, "2.04%")])
def test_position_confusion_title_gives_chance_as_the_text_does(side, chance):
    n = side * side
    fig = viz.plot_position_confusion(torch.arange(n).repeat(3, 1), (side, side))
    try:
        assert fig._suptitle.get_text().endswith(f"(chance {chance})")
    finally:
        plt.close(fig)
