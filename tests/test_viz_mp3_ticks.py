"""Chapter 10's grid figures number their ticks by whole patch positions: a position,
a patch row or a patch column is an integer, never 2.5 or -0.5."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vitbook import viz  # noqa: E402


def visible_ticks(axis, low, high):
    return [t for t in axis.get_ticklocs() if low <= t <= high]


@pytest.mark.parametrize("side", [2, 4])
def test_position_confusion_ticks_are_whole_positions(side):
    # matplotlib's default ticks of a 2x2 grid's 4 positions fall at 0.5, 1.5, ...
    n = side * side
    torch.manual_seed(0)
    predicted = torch.randint(0, n, (50, n))
    fig = viz.plot_position_confusion(predicted, (side, side))
    left, right = [ax for ax in fig.axes if ax.get_title()]
    fig.canvas.draw()
    for axis in (left.xaxis, left.yaxis):
        ticks = visible_ticks(axis, -0.5, n - 0.5)
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    # one tick per patch column and row of the grid, at 0, 1, ...
    assert list(right.get_xticks()) == list(range(side))
    assert list(right.get_yticks()) == list(range(side))
    plt.close(fig)


def test_position_arrows_number_the_grid():
    images = torch.rand(2, 1, 28, 28)
    predicted = torch.arange(16).repeat(2, 1)
    fig = viz.plot_position_arrows(images, predicted, (4, 4))
    fig.canvas.draw()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t.get_text() for t in axis.get_ticklabels()]
            assert labels == ["0", "1", "2", "3"], labels
        # the patch centres of 7-pixel patches: 3, 10, 17, 24
        assert list(ax.get_xticks()) == [3.0, 10.0, 17.0, 24.0]
    plt.close(fig)
