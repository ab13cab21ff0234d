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
from .dino import (
    class_token_attention,
    plot_class_token_attention,
    plot_collapse_diagnostics,
    plot_multicrop,
)
from .byol import plot_byol_diagnostics
from .esvit import plot_esvit_diagnostics, plot_region_correspondences
from .swin import (
    measure_attention_cost,
    plot_attention_cost,
    plot_cyclic_shift,
    plot_relative_position_bias,
    plot_shift_masks,
    plot_swin_architecture,
    plot_windows,
)
from .twins import (
    attention_memory,
    dense_lsa_weights,
    gradient_reach,
    plot_gradient_reach,
    stack_kinds,
    measure_local_global_cost,
    plot_local_global_cost,
    plot_receptive_fields,
    receptive_fields,
)
from .scalable_vit import plot_scalable_receptive_fields, scalable_receptive_fields
from .navit import (
    plot_accuracy_vs_resolution,
    plot_packing,
    plot_packing_masks,
    plot_sizes,
    plot_utilization,
    utilization_table,
)
from .mae import (
    masked_rgb,
    plot_finetuning,
    plot_masking_ratios,
    plot_pretraining,
    plot_reconstructions,
)
from .mp3 import plot_position_arrows, plot_position_confusion, position_confusion
from .compare import plot_representation_comparison, plot_time_to_accuracy

__all__ = [
    "plot_byol_diagnostics",
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
    "dense_lsa_weights",
    "receptive_fields",
    "plot_receptive_fields",
    "stack_kinds",
    "gradient_reach",
    "plot_gradient_reach",
    "measure_local_global_cost",
    "plot_local_global_cost",
    "attention_memory",
    "scalable_receptive_fields",
    "plot_scalable_receptive_fields",
    "plot_sizes",
    "plot_packing",
    "plot_packing_masks",
    "utilization_table",
    "plot_utilization",
    "plot_accuracy_vs_resolution",
    "masked_rgb",
    "plot_reconstructions",
    "plot_masking_ratios",
    "plot_pretraining",
    "plot_finetuning",
    "plot_multicrop",
    "class_token_attention",
    "plot_class_token_attention",
    "plot_collapse_diagnostics",
    "plot_region_correspondences",
    "plot_esvit_diagnostics",
    "position_confusion",
    "plot_position_confusion",
    "plot_position_arrows",
    "plot_time_to_accuracy",
    "plot_representation_comparison",
]
