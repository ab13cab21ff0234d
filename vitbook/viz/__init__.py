"""Every figure the book draws: one function each, each returning its matplotlib Figure."""
from .common import image_grid, plot_history, to_image
from .vit import attention_rollout, plot_attention, plot_attention_heads, plot_patches, plot_position_similarity

__all__ = ["image_grid", "plot_history", "to_image", "plot_patches", "plot_position_similarity",
           "attention_rollout", "plot_attention", "plot_attention_heads"]
