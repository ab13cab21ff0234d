"""Every figure the book draws: one function each, each returning its matplotlib
Figure."""

from .common import image_grid, patch_grid, plot_confusion, plot_history, to_image
from .vit import (
    attention_rollout,
    plot_attention,
    plot_attention_heads,
    plot_patches,
    plot_position_similarity,
    position_similarity,
)
from .esvit import plot_esvit_diagnostics, plot_region_correspondences
from .swin import (
    measure_attention_cost,
    plot_attention_cost,
    plot_cyclic_shift,
    plot_relative_position_bias,
    plot_shift_masks,
    plot_windows,
)

__all__ = [
    "image_grid",
    "patch_grid",
    "plot_confusion",
    "plot_history",
    "to_image",
    "plot_patches",
    "plot_position_similarity",
    "position_similarity",
    "attention_rollout",
    "plot_attention",
    "plot_attention_heads",
    "plot_windows",
    "plot_cyclic_shift",
    "plot_shift_masks",
    "plot_relative_position_bias",
    "measure_attention_cost",
    "plot_attention_cost",
    "plot_region_correspondences",
    "plot_esvit_diagnostics",
]
