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
from .swin import (
    measure_attention_cost,
    plot_attention_cost,
    plot_cyclic_shift,
    plot_relative_position_bias,
    plot_shift_masks,
    plot_windows,
)
from .mae import (
    masked_rgb,
    plot_finetuning,
    plot_masking_ratios,
    plot_pretraining,
    plot_reconstructions,
)
from .mp3 import plot_position_arrows, plot_position_confusion, position_confusion

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
    "masked_rgb",
    "plot_reconstructions",
    "plot_masking_ratios",
    "plot_pretraining",
    "plot_finetuning",
    "position_confusion",
    "plot_position_confusion",
    "plot_position_arrows",
]
