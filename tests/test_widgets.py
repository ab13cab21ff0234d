"""Every explorer in `vitbook.widgets` has two faces: the page (its figure stored for
every stored combination of its controls, `vitbook/frames.py`) and the live widget.

Each case builds an explorer on small real inputs (attention maps recorded from a real
model), asks for what a notebook shows (`_repr_mimebundle_`), checks the page's frames
(the first is the explorer's figure, each is the figure for its values), moves one
control as a reader would, and checks that the live figure and image changed. `test_every_explorer_has_a_case` fails when an explorer is added to
`vitbook.widgets` without a case here.
"""

from __future__ import annotations

import inspect
import json
import re

import matplotlib.figure
import numpy as np
import pytest
import torch

import vitbook
from vitbook import frames, widgets


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


def stored_frames(page: str) -> dict:
    """The frames an explorer's page carries, by key."""
    data = re.search(r'<script type="application/json" class="vbx-data">(.*?)</script>',
                     page, re.DOTALL)  # fmt: skip
    assert data, "the page carries no frame data"
    return json.loads(data.group(1).replace("<\\/", "</"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_explorer_page_stores_its_frames_and_the_live_face_redraws(name):
    if not hasattr(widgets, name):
        pytest.skip(f"vitbook.widgets has no {name} (yet)")
    explorer, move = CASES[name]()
    first = explorer.figure
    assert isinstance(first, matplotlib.figure.Figure)
    before = pixels(first)

    # what a notebook shows for the explorer as a cell's value
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == (
        explorer.widget.model_id
    ), f"{name}: the live face is not the explorer's widget"
    page = bundle["text/html"]
    assert "<script src" not in page and not re.search(r"\w+://", page), (
        f"{name}: the page loads something from elsewhere"
    )
    data = stored_frames(page)
    assert len(data["frames"]) == len(explorer.stored), (
        f"{name}: {len(data['frames'])} frames on the page, {len(explorer.stored)} stored"
    )
    # the chapter's figure comes first, as the image a reader sees before moving
    first_key = ",".join(map(str, explorer.key(explorer.values)))
    assert data["first"] == [int(i) for i in first_key.split(",")]
    assert f'src="{data["frames"][first_key]}"' in page
    assert data["frames"][first_key] == frames.encode(first), (
        f"{name}: the first frame is not the explorer's figure"
    )
    # each control changes the picture somewhere on the page (two settings may draw
    # the same one: the two packing strategies agree on some batches)
    keys = [tuple(map(int, k.split(","))) for k in data["frames"]]
    for axis, control in enumerate(data["names"]):
        assert any(
            a[axis] != b[axis]
            and all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != axis)
            and data["frames"][",".join(map(str, a))]
            != data["frames"][",".join(map(str, b))]
            for a in keys
            for b in keys
        ), f"{name}: moving {control} changes no stored frame"

    old_values, old_image = explorer.values, explorer.image.value
    explorer.set(**move)
    assert explorer.values != old_values, f"{name}: setting {move} changed no control"
    assert explorer.figure is not first, f"{name}: moving {move} did not redraw"
    after = pixels(explorer.figure)
    assert before.shape != after.shape or not np.array_equal(before, after), (
        f"{name}: moving {move} drew the same picture"
    )
    assert explorer.image.value != old_image, f"{name}: the live image was not updated"
    # where the page stores the reader's new setting, it is the figure drawn live
    stored = {tuple(v.items()) for v in explorer.stored}
    if tuple(explorer.values.items()) in stored:
        key = ",".join(map(str, explorer.key(explorer.values)))
        assert data["frames"][key] == frames.encode(explorer.figure), (
            f"{name}: the stored frame for {move} is not the live figure"
        )


def test_stored_values_must_be_values_of_the_control():
    import ipywidgets

    with pytest.raises(ValueError, match="stored values \\[5\\] for control 'n'"):
        widgets.Explorer(
            lambda n: matplotlib.figure.Figure(),
            stored=[{"n": 5}],
            n=ipywidgets.IntSlider(1, 0, 3),
        )
    with pytest.raises(ValueError, match="names \\['m'\\]"):
        widgets.Explorer(
            lambda n: matplotlib.figure.Figure(),
            stored=[{"m": 1}],
            n=ipywidgets.IntSlider(1, 0, 3),
        )


def test_the_page_stores_what_the_explorer_says():
    # the receptive-field explorer: 3 rows x 3 columns x 3 windows at the first
    # ratio, and the 2 other ratios at the first query and window
    explorer = widgets.receptive_field_explorer(
        torch.rand(3, 32, 32), patch_size=2, query=(5, 6)
    )
    assert len(explorer.stored) == 3 * 3 * 3 + 2
    assert {v["row"] for v in explorer.stored} == set(widgets.spread(16, 5))
    assert 5 in widgets.spread(16, 5) and len(widgets.spread(16, 5)) == 3
    # the window explorer stores each window's shifts, none past the window
    explorer = widgets.window_explorer(torch.rand(1, 24, 24), patch_size=2)
    assert all(v["shift"] < v["window_size"] for v in explorer.stored)
    assert len(explorer.stored) == 2 + 3 + 4 + 6


def test_the_page_says_in_words_what_its_frames_cover():
    import ipywidgets

    def draw(n, m=0):
        fig = matplotlib.figure.Figure(figsize=(1, 1))
        fig.add_subplot().plot([n, m])
        return fig

    every = widgets.Explorer(
        draw,
        stored=[{"n": v} for v in range(4)],
        n=ipywidgets.IntSlider(1, 0, 3, description="patch size"),
    )
    assert every._stored_text() == ", one per patch size"
    assert "4 stored frames, one per patch size." in every.page()
    some = widgets.Explorer(
        draw,
        stored=[{"n": 2, "m": 0}, {"n": 2, "m": 1}],
        n=ipywidgets.IntSlider(1, 0, 3, description="image"),
        m=ipywidgets.IntSlider(0, 0, 1, description="head"),
    )
    assert some._stored_text() == " (image: 2 of 4 values; head: all 2 values)"


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
