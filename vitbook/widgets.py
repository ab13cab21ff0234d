"""Interactive explorers: each a thin live wrapper around one ``viz`` figure.

An explorer first shows its figure as a plain image output, so the HTML book, a notebook
opened without a kernel and CI all see it. With a live kernel the sliders redraw that
same output in place (``display_id``). Scripts and tests drive it with
``explorer.set(...)``.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import torch


class Explorer:
    """``draw(**values) -> Figure`` plus one ipywidgets control per keyword of
    ``draw``."""

    def __init__(self, draw: Callable, **controls):
        import ipywidgets  # optional at import time of vitbook, needed here

        for name, control in controls.items():
            if not isinstance(control, ipywidgets.ValueWidget):
                raise TypeError(
                    f"control {name!r} must be an ipywidgets value widget, got "
                    f"{type(control).__name__}"
                )
            control.observe(self._changed, names="value")
        self.draw, self.controls = draw, controls
        self.box = ipywidgets.HBox(list(controls.values()))
        self._handle = None
        self.figure = self._draw()

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

    def _draw(self):
        figure = self.draw(**self.values)
        # shown through display(), not by the inline backend a second time
        plt.close(figure)
        return figure

    def _changed(self, _change) -> None:
        self.figure = self._draw()
        if self._handle is not None:
            self._handle.update(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)
        self._handle = display(self.figure, display_id=True)


def patch_explorer(image: torch.Tensor, patch_sizes=(4, 7, 14)) -> Explorer:
    """Cut ``image`` into patches of a size chosen with a slider (each size must divide
    the image)."""
    import ipywidgets

    from .viz import plot_patches

    h, w = image.shape[-2:]
    sizes = [p for p in patch_sizes if h % p == 0 and w % p == 0]
    if not sizes:
        raise ValueError(
            f"none of patch_sizes {patch_sizes} divides the image size {h}x{w}"
        )
    return Explorer(
        lambda patch_size: plot_patches(image, patch_size),
        patch_size=ipywidgets.SelectionSlider(
            options=sizes, value=sizes[-1], description="patch size"
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
    shift = ipywidgets.IntSlider(
        window.value // 2, 0, window.value - 1, description="shift"
    )

    # registered before the explorer's own observer: the shift is valid when it redraws
    def fit_shift(change):
        shift.max = change.new - 1

    window.observe(fit_shift, names="value")
    return Explorer(
        lambda window_size, shift: plot_cyclic_shift(
            image, patch_size, window_size, shift
        ),
        window_size=window,
        shift=shift,
    )


def receptive_field_explorer(
    image: torch.Tensor, patch_size: int, window_sizes=(2, 4, 8), sr_ratios=(2, 4, 8)
) -> Explorer:
    """The keys one query reads under full attention, Swin, LSA and GSA: move the
    query, change the window size and GSA's sub-sampling ratio."""
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
    return Explorer(
        lambda row, col, window_size, sr_ratio: plot_receptive_fields(
            image, patch_size, (row, col), window_size, sr_ratio
        ),
        row=ipywidgets.IntSlider(h // 3, 0, h - 1, description="query row"),
        col=ipywidgets.IntSlider(w // 3, 0, w - 1, description="query col"),
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
    the query, change the window, SSA's reduction ratio and its channel ratio."""
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
    return Explorer(
        lambda row, col, window_size, sr_ratio, c_ratio: plot_scalable_receptive_fields(
            image, patch_size, (row, col), window_size, sr_ratio, c_ratio, dim
        ),
        row=ipywidgets.IntSlider(max(h // 4 - 1, 0), 0, h - 1, description="query row"),
        col=ipywidgets.IntSlider(w // 4, 0, w - 1, description="query col"),
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
    superset of what a lower one hid."""
    import ipywidgets

    from .viz import plot_reconstructions

    noise = torch.rand(
        len(images),
        mae.grid[0] * mae.grid[1],
        generator=torch.Generator().manual_seed(seed),
    ).to(images.device)

    def draw(mask_ratio):
        out = mae.reconstruct(images, noise=noise, mask_ratio=mask_ratio)
        return plot_reconstructions(
            images, out, mae.grid, to_pixels=to_pixels or (lambda x: x), titles=titles
        )

    return Explorer(
        draw,
        mask_ratio=ipywidgets.FloatSlider(
            value=mae.mask_ratio,
            min=0.05,
            max=0.95,
            step=0.05,
            description="mask ratio",
        ),
    )
