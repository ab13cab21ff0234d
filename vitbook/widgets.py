"""Interactive explorers: each a thin live wrapper around one ``viz`` figure.

An explorer is one output with two faces. With a live kernel (JupyterLab, Colab) it is
ipywidgets controls above the figure, redrawn for any value a reader picks. Without one
(the HTML book, a notebook opened from disk) it is the page :mod:`vitbook.frames`
builds: the figure precomputed for every stored combination of the controls' values,
swapped by a few lines of inline JavaScript. The first frame is the figure the chapter
discusses. Scripts and tests drive the live face with ``explorer.set(...)``.
"""

from __future__ import annotations

import io
from typing import Callable

import matplotlib.pyplot as plt
import torch

from . import frames as pages
from .frames import grid


class Explorer:
    """``draw(**values) -> Figure`` plus one ipywidgets control per keyword of
    ``draw``. ``stored`` lists the value combinations the page keeps (each a dict; a
    control it leaves out keeps its first value); by default every combination."""

    def __init__(self, draw: Callable, stored: list[dict] | None = None, **controls):
        import ipywidgets  # optional at import time of vitbook, needed here

        for name, control in controls.items():
            if not isinstance(control, ipywidgets.ValueWidget):
                raise TypeError(
                    f"control {name!r} must be an ipywidgets value widget, got "
                    f"{type(control).__name__}"
                )
        self.draw, self.controls = draw, controls
        first = self.values
        if stored is None:
            stored = grid(
                **{n: [v for _, v in pages.choices(c)] for n, c in controls.items()}
            )
        for frame in stored:
            unknown = set(frame) - set(controls)
            if unknown:
                raise ValueError(
                    f"stored frame {frame} names {sorted(unknown)}; this explorer's "
                    f"controls are {tuple(controls)}"
                )
        # the chapter's figure comes first, then each stored combination once
        complete = [first] + [{**first, **frame} for frame in stored]
        self.stored = list({tuple(f.items()): f for f in complete}.values())
        self.axes = pages.axes_for(controls, self.stored)
        self.image = ipywidgets.Image(format="png")
        self.widget = ipywidgets.VBox(
            [ipywidgets.HBox(list(controls.values())), self.image]
        )
        self.figure = self._draw()
        for control in controls.values():
            control.observe(self._changed, names="value")

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values) -> "Explorer":
        """Move the controls as a reader would; the figure redraws."""
        for name, value in values.items():
            if name not in self.controls:
                raise ValueError(
                    f"no control named {name!r}; this explorer has "
                    f"{tuple(self.controls)}"
                )
            self.controls[name].value = value
        return self

    def key(self, values: dict) -> tuple[int, ...]:
        """The page's index of each control's value in ``values``."""
        return tuple(axis.values.index(values[axis.name]) for axis in self.axes)

    def frames(self) -> dict[tuple[int, ...], str]:
        """Every stored combination drawn and encoded for the page, the current one
        first (the figure already drawn)."""
        encoded = {self.key(self.values): pages.encode(self.figure)}
        for values in self.stored:
            key = self.key(values)
            if key not in encoded:
                figure = self.draw(**values)
                plt.close(figure)
                encoded[key] = pages.encode(figure)
        return encoded

    def page(self) -> str:
        """The self-contained HTML the book shows: controls, frames, script."""
        frames = self.frames()
        note = (
            f"{len(frames)} stored frames{self._stored_text()}. A combination not "
            "stored shows the nearest stored one; with a running kernel the explorer "
            "redraws for any value."
        )
        return pages.page(self.axes, frames, self.key(self.values), note)

    def _stored_text(self) -> str:
        """What the stored frames cover, in words: ", one per mask ratio" when one
        control has all its values stored, else each control's share of its values
        (" (image: 4 of 10 values; head: all 5 values)")."""
        (first, *others) = self.axes
        if not others and len(first.values) == first.offered:
            return f", one per {first.description}"
        shares = [
            f"{a.description}: "
            + (
                f"all {a.offered} values"
                if len(a.values) == a.offered
                else f"{len(a.values)} of {a.offered} values"
            )
            for a in self.axes
        ]
        return f" ({'; '.join(shares)})"

    def _draw(self):
        figure = self.draw(**self.values)
        # shown through the image widget and the page, not by the inline backend
        plt.close(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        self.image.value = buffer.getvalue()
        return figure

    def _changed(self, _change) -> None:
        self.figure = self._draw()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        # a frontend with a widget manager shows the live widget; the HTML book and a
        # notebook without a kernel show the page (the book's config ranks it first)
        return {
            "text/plain": f"Explorer({', '.join(self.controls)})",
            "text/html": self.page(),
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self.widget.model_id,
            },
        }


def patch_explorer(
    image: torch.Tensor, patch_sizes=(4, 7, 14), patch_size: int | None = None
) -> Explorer:
    """Cut ``image`` into patches of a size chosen with a slider (each size must divide
    the image); ``patch_size`` is the first one shown (default: the largest)."""
    import ipywidgets

    from .viz import plot_patches

    h, w = image.shape[-2:]
    sizes = [p for p in patch_sizes if h % p == 0 and w % p == 0]
    if not sizes:
        raise ValueError(
            f"none of patch_sizes {patch_sizes} divides the image size {h}x{w}"
        )
    if patch_size is not None and patch_size not in sizes:
        raise ValueError(f"patch_size {patch_size} is not one of the sizes {sizes}")
    return Explorer(
        lambda patch_size: plot_patches(image, patch_size),
        patch_size=ipywidgets.SelectionSlider(
            options=sizes, value=patch_size or sizes[-1], description="patch size"
        ),
    )


def attention_explorer(
    images: torch.Tensor,
    maps: list[torch.Tensor],
    grid,
    num_prefix_tokens: int = 1,
    titles=None,
) -> Explorer:
    """Pick an image and a head; see what the class token attends to in every layer, and
    the rollout."""
    import ipywidgets

    from .viz import plot_attention_heads

    heads = maps[0].shape[1]
    return Explorer(
        lambda index, head: plot_attention_heads(
            images[index],
            [m[index] for m in maps],
            grid,
            head=head,
            num_prefix_tokens=num_prefix_tokens,
            title=titles[index] if titles is not None else None,
        ),
        index=ipywidgets.IntSlider(0, 0, len(images) - 1, description="image"),
        head=ipywidgets.IntSlider(-1, -1, heads - 1, description="head (-1: mean)"),
    )


def window_explorer(
    image: torch.Tensor, patch_size: int, window_sizes=(2, 3, 4, 6)
) -> Explorer:
    """Swin's windows on ``image``: pick the window size M and the shift (0 = W-MSA's
    regular windows)."""
    import ipywidgets

    from .viz import plot_cyclic_shift

    h, w = image.shape[-2:]
    grid = (h // patch_size, w // patch_size)
    sizes = [m for m in window_sizes if grid[0] % m == 0 and grid[1] % m == 0]
    if not sizes:
        raise ValueError(
            f"none of window_sizes {window_sizes} divides the {grid[0]}x{grid[1]} "
            "patch grid"
        )
    window = ipywidgets.SelectionSlider(
        options=sizes, value=sizes[len(sizes) // 2], description="window M"
    )
    # the page stores every shift of every window, so the slider spans the widest
    # window's shifts while the explorer is built, and the current window's after
    shift = ipywidgets.IntSlider(
        window.value // 2, 0, max(sizes) - 1, description="shift"
    )

    # registered before the explorer's own observer: the shift is valid when it redraws
    def fit_shift(change):
        shift.max = change.new - 1

    window.observe(fit_shift, names="value")
    explorer = Explorer(
        lambda window_size, shift: plot_cyclic_shift(
            image, patch_size, window_size, shift
        ),
        stored=[{"window_size": m, "shift": s} for m in sizes for s in range(m)],
        window_size=window,
        shift=shift,
    )
    shift.max = window.value - 1
    return explorer


def spread(n: int, first: int, count: int = 3) -> list[int]:
    """``count`` positions spread over ``range(n)``, ``first`` among them: the query
    positions an explorer's page stores."""
    positions = sorted({round((2 * i + 1) * n / (2 * count)) for i in range(count)})
    nearest = min(positions, key=lambda p: abs(p - first))
    return sorted({first, *(p for p in positions if p != nearest)})


def receptive_field_explorer(
    image: torch.Tensor,
    patch_size: int,
    window_sizes=(2, 4, 8),
    sr_ratios=(2, 4, 8),
    query: tuple[int, int] | None = None,
) -> Explorer:
    """The keys one query reads under full attention, Swin, LSA and GSA: move the
    query (first at ``query``), change the window size and GSA's sub-sampling ratio.
    The page stores three rows x three columns x every window at the middle ratio,
    and every ratio at the first query and window."""
    import ipywidgets

    from .viz import plot_receptive_fields

    h, w = image.shape[-2] // patch_size, image.shape[-1] // patch_size
    sizes = [m for m in window_sizes if h % m == 0 and w % m == 0]
    ratios = [r for r in sr_ratios if 1 <= r <= min(h, w)]
    if not sizes or not ratios:
        raise ValueError(
            f"window_sizes {window_sizes} must include one that divides the {h}x{w} "
            f"patch grid, and sr_ratios {sr_ratios} one in [1, {min(h, w)}]"
        )
    row, col = query if query is not None else (h // 3, w // 3)
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query {query} is outside the {h}x{w} patch grid")
    return Explorer(
        lambda row, col, window_size, sr_ratio: plot_receptive_fields(
            image, patch_size, (row, col), window_size, sr_ratio
        ),
        stored=grid(row=spread(h, row), col=spread(w, col), window_size=sizes)
        + grid(sr_ratio=ratios),
        row=ipywidgets.IntSlider(row, 0, h - 1, description="query row"),
        col=ipywidgets.IntSlider(col, 0, w - 1, description="query col"),
        window_size=ipywidgets.SelectionSlider(
            options=sizes, value=sizes[len(sizes) // 2], description="window"
        ),
        sr_ratio=ipywidgets.SelectionSlider(
            options=ratios, value=ratios[len(ratios) // 2], description="sr ratio"
        ),
    )


def scalable_receptive_field_explorer(
    image: torch.Tensor,
    patch_size: int,
    window_sizes=(2, 4, 8),
    sr_ratios=(2, 4, 8),
    c_ratios=(0.25, 0.5, 1.0, 1.25, 2.0),
    dim: int = 64,
) -> Explorer:
    """The keys one query reads under ScalableViT's IWSA (window + LIM) and SSA: move
    the query, change the window, SSA's reduction ratio and its channel ratio. The page
    stores three rows x three columns x every window at the first ratios, and every
    reduction ratio and every channel ratio at the first query and window."""
    import ipywidgets

    from .viz import plot_scalable_receptive_fields

    h, w = image.shape[-2] // patch_size, image.shape[-1] // patch_size
    sizes = [m for m in window_sizes if 1 <= m <= min(h, w)]
    ratios = [r for r in sr_ratios if 1 <= r <= min(h, w)]
    if not sizes or not ratios or not c_ratios:
        raise ValueError(
            f"window_sizes {window_sizes} and sr_ratios {sr_ratios} must include one "
            f"in [1, {min(h, w)}] (the {h}x{w} patch grid), c_ratios {c_ratios} one "
            "value"
        )
    row, col = max(h // 4 - 1, 0), w // 4
    return Explorer(
        lambda row, col, window_size, sr_ratio, c_ratio: plot_scalable_receptive_fields(
            image, patch_size, (row, col), window_size, sr_ratio, c_ratio, dim
        ),
        stored=grid(row=spread(h, row), col=spread(w, col), window_size=sizes)
        + grid(sr_ratio=ratios)
        + grid(c_ratio=list(c_ratios)),
        row=ipywidgets.IntSlider(row, 0, h - 1, description="query row"),
        col=ipywidgets.IntSlider(col, 0, w - 1, description="query col"),
        window_size=ipywidgets.SelectionSlider(
            options=sizes, value=sizes[len(sizes) // 2], description="window"
        ),
        sr_ratio=ipywidgets.SelectionSlider(
            options=ratios, value=ratios[len(ratios) // 2], description="sr ratio"
        ),
        # ScalableViT-S's c = 1.25 first, as the chapter's figure draws it
        c_ratio=ipywidgets.SelectionSlider(
            options=list(c_ratios),
            value=1.25 if 1.25 in c_ratios else list(c_ratios)[len(c_ratios) // 2],
            description="c ratio",
        ),
    )


def packing_explorer(
    sizes, patch_size: int, budgets=(64, 100, 144, 196, 256)
) -> Explorer:
    """Pack images of the given ``(height, width)`` sizes: choose the token budget,
    the token dropout rate and the packing strategy; see the sequences."""
    import ipywidgets

    from .packing import pack
    from .viz import plot_packing

    def draw(budget, dropout, strategy):
        lengths = [
            max(1, round((h // patch_size) * (w // patch_size) * (1 - dropout)))
            for h, w in sizes
        ]
        return plot_packing(pack(lengths, budget, strategy, sizes))

    largest = max((h // patch_size) * (w // patch_size) for h, w in sizes)
    options = [b for b in budgets if b >= largest]
    if not options:
        raise ValueError(
            f"no budget in {budgets} holds the largest image's {largest} tokens"
        )
    return Explorer(
        draw,
        budget=ipywidgets.SelectionSlider(options=options, description="budget"),
        dropout=ipywidgets.FloatSlider(
            value=0.0, min=0.0, max=0.75, step=0.25, description="token dropout"
        ),
        strategy=ipywidgets.Dropdown(
            options=[("first-fit decreasing", "ffd"), ("greedy (seed)", "greedy")],
            description="packing",
        ),
    )


def mae_explorer(
    mae, images: torch.Tensor, to_pixels=None, titles=None, seed: int = 0
) -> Explorer:
    """Re-run a trained MAE live at the masking ratio a slider sets, on ``images``; the
    hidden patches come from one fixed noise draw per image, so a higher ratio hides a
    superset of what a lower one hid. The slider moves one patch at a time (``k`` of
    the ``n`` patches hidden, ``k / n``): finer ratios would hide the same patches."""
    import ipywidgets

    from .viz import plot_reconstructions

    n = mae.grid[0] * mae.grid[1]
    noise = torch.rand(
        len(images), n, generator=torch.Generator().manual_seed(seed)
    ).to(images.device)

    def draw(mask_ratio):
        # MAE keeps int(n * (1 - ratio)) patches, a floor: a quarter patch below k / n
        # hides exactly k whatever the rounding of k / n
        out = mae.reconstruct(images, noise=noise, mask_ratio=mask_ratio - 0.25 / n)
        return plot_reconstructions(
            images, out, mae.grid, to_pixels=to_pixels or (lambda x: x), titles=titles
        )

    hidden = n - int(n * (1 - mae.mask_ratio))  # what the trained ratio hides
    return Explorer(
        draw,
        mask_ratio=ipywidgets.SelectionSlider(
            options=[(f"{k / n:.0%} ({k} of {n})", k / n) for k in range(1, n)],
            value=hidden / n,
            description="mask ratio",
        ),
    )
