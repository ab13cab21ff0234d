"""Every figure the book draws: one function each, each returning its matplotlib
Figure."""

from .common import (
    image_grid,
    patch_grid,
    plot_confusion,
    plot_history,
    plot_pipeline,
    shape_text,
    to_image,
)
from .vit import (
    attention_rollout,
    plot_attention,
    plot_attention_heads,
    plot_attention_weights,
    plot_patches,
    plot_position_similarity,
    plot_vit_architecture,
    position_similarity,
)
from .swin import (
    measure_attention_cost,
    plot_attention_cost,
    plot_cyclic_shift,
    plot_relative_position_bias,
    plot_shift_masks,
    plot_swin_architecture,
    plot_windows,
)

__all__ = [
    "image_grid",
    "patch_grid",
    "plot_confusion",
    "plot_history",
    "plot_pipeline",
    "shape_text",
    "to_image",
    "plot_patches",
    "plot_position_similarity",
    "position_similarity",
    "attention_rollout",
    "plot_attention",
    "plot_attention_heads",
    "plot_attention_weights",
    "plot_vit_architecture",
    "plot_windows",
    "plot_cyclic_shift",
    "plot_shift_masks",
    "plot_relative_position_bias",
    "plot_swin_architecture",
    "measure_attention_cost",
    "plot_attention_cost",
]
