"""Every explorer in `vitbook.widgets` shows its static figure first, and a slider redraws it.

Each case builds an explorer on small real inputs (attention maps recorded from a real model),
shows it the way a notebook does (the static figure goes out through `display(..., display_id=True)`),
moves one control as a reader would, and checks that the figure changed and that the displayed
output was updated in place. `test_every_explorer_has_a_case` fails when an explorer is added to
`vitbook.widgets` without a case here.
"""

from __future__ import annotations

import inspect

import matplotlib.figure
import numpy as np
import pytest
import torch

import vitbook
from vitbook import widgets


def pixels(figure: matplotlib.figure.Figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(
        figure
    )  # the explorer closed the figure: draw it on a canvas of our own
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def vit_attention_case():
    images = torch.rand(3, 1, 28, 28)
    model = vitbook.ViT(
        image_size=28,
        patch_size=7,
        num_classes=10,
        dim=32,
        depth=2,
        heads=4,
        channels=1,
    ).eval()
    with torch.no_grad(), vitbook.record_attention(model) as recorded:
        model(images)
    maps = [calls[0] for calls in recorded.values()]  # one (b, heads, n, n) per layer
    explorer = widgets.attention_explorer(
        images, maps, grid=(4, 4), titles=["a", "b", "c"]
    )
    return explorer, {"index": 2, "head": 1}


def swin_window_case():
    # a 12x12 patch grid: windows of 2, 3, 4 and 6 all divide it; the reader widens the window, then shifts
    explorer = widgets.window_explorer(torch.rand(1, 24, 24), patch_size=2)
    return explorer, {"window_size": 6, "shift": 1}


def mae_case():
    from vitbook.ssl import MAE

    backbone = vitbook.ViT(
        image_size=28, patch_size=7, num_classes=0, dim=16, depth=1, heads=2,
        channels=1, pos_embed="sincos",
    )  # fmt: skip
    mae = MAE(backbone, decoder_dim=8, decoder_depth=1, decoder_heads=2)
    explorer = widgets.mae_explorer(mae, torch.rand(2, 1, 28, 28))
    return explorer, {"mask_ratio": 0.25}


# explorer factory name -> (builds an explorer, the control values a reader moves to)
CASES = {
    "patch_explorer": lambda: (
        widgets.patch_explorer(torch.rand(1, 28, 28)),
        {"patch_size": 4},
    ),
    "attention_explorer": vit_attention_case,
    "window_explorer": swin_window_case,
    # a 16x16 patch grid: the reader moves the query and coarsens GSA's sub-sampling
    "receptive_field_explorer": lambda: (
        widgets.receptive_field_explorer(torch.rand(3, 32, 32), patch_size=2),
        {"row": 9, "col": 3, "sr_ratio": 8},
    ),
    # a 16x16 patch grid: the reader moves the query across a window border and
    # widens SSA's keys
    "scalable_receptive_field_explorer": lambda: (
        widgets.scalable_receptive_field_explorer(torch.rand(3, 32, 32), patch_size=2),
        {"row": 7, "col": 8, "c_ratio": 2.0},
    ),
    # ten images of mixed sizes; the reader switches to the seed's greedy packing
    "packing_explorer": lambda: (
        widgets.packing_explorer(
            [(28, 28), (14, 42), (42, 42), (14, 14), (21, 35)] * 2, patch_size=7
        ),
        {"strategy": "greedy", "dropout": 0.25},
    ),
    "mae_explorer": mae_case,
}


def explorer_factories() -> list[str]:
    return sorted(
        name
        for name, obj in vars(widgets).items()
        if inspect.isfunction(obj)
        and obj.__module__ == widgets.__name__
        and inspect.signature(obj).return_annotation in (widgets.Explorer, "Explorer")
    )


def test_every_explorer_has_a_case():
    factories = explorer_factories()
    assert factories, "found no explorer factories in vitbook.widgets"
    missing = sorted(set(factories) - set(CASES))
    assert not missing, (
        f"explorers without a test case in tests/test_widgets.py: {missing}"
    )


class FakeHandle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, obj):
        self.shown.append(("update", obj))


@pytest.mark.parametrize("name", sorted(CASES))
def test_explorer_shows_its_figure_first_and_a_slider_redraws_it(name, monkeypatch):
    import IPython.display

    shown = []

    def fake_display(obj, display_id=None, **kwargs):
        shown.append(("display", obj))
        return FakeHandle(shown) if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    if not hasattr(widgets, name):
        pytest.skip(f"vitbook.widgets has no {name} (yet)")
    explorer, move = CASES[name]()
    first = explorer.figure
    assert isinstance(first, matplotlib.figure.Figure)
    before = pixels(first)

    explorer._ipython_display_()  # what a notebook does with the explorer as a cell's value
    figures = [obj for kind, obj in shown if isinstance(obj, matplotlib.figure.Figure)]
    assert figures == [first], (
        f"{name}: the static figure is not displayed (displayed: {shown})"
    )

    old_values = explorer.values
    explorer.set(**move)
    assert explorer.values != old_values, f"{name}: setting {move} changed no control"
    assert explorer.figure is not first, f"{name}: moving {move} did not redraw"
    after = pixels(explorer.figure)
    assert before.shape != after.shape or not np.array_equal(before, after), (
        f"{name}: moving {move} drew the same picture"
    )
    assert shown[-1] == ("update", explorer.figure), (
        f"{name}: the displayed figure was not updated in place"
    )


def test_unknown_control_is_refused():
    explorer = widgets.patch_explorer(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="no control named 'size'"):
        explorer.set(size=7)


def test_scalable_explorer_starts_at_the_chapters_c_ratio():
    # chapter 4's figure draws ScalableViT-S's c = 1.25 (C' = 80 for C = 64); the
    # explorer's first frame must be the same figure, not c = 1 (C' = 64)
    explorer = widgets.scalable_receptive_field_explorer(
        torch.rand(3, 32, 32), patch_size=2
    )
    assert explorer.controls["c_ratio"].value == 1.25
    texts = [t.get_text() for t in explorer.figure.findobj(matplotlib.text.Text)]
    assert any("C' = 1.25 x 64 = 80" in t for t in texts)
