"""Weight converters from the reference implementations to vitbook's models.

They serve two purposes: the parity tests (same weights, same input, same logits as timm),
and loading pretrained weights on a machine that can download them (Colab)::

    model = vitbook.reference.pretrained_vit("vit_tiny_patch16_224.augreg_in21k_ft_in1k")

timm is an optional dependency (``pip install vitbook[reference]``), imported only here.
"""
from __future__ import annotations

import torch
from torch import nn

from .models.vit import ViT


def _timm_vit_config(timm_vit: nn.Module) -> dict:
    """vitbook ``ViT`` keyword arguments that describe a timm ``VisionTransformer``."""
    if getattr(timm_vit, "global_pool", "token") not in ("token", "avg"):
        raise ValueError(f"cannot convert timm global_pool={timm_vit.global_pool!r}; vitbook has 'cls' and 'mean'")
    has_cls = getattr(timm_vit, "cls_token", None) is not None
    if timm_vit.global_pool == "token" and not has_cls:
        raise ValueError("timm model pools the class token but has none")
    if timm_vit.global_pool == "avg":
        raise ValueError("timm's average pooling normalizes after pooling (fc_norm); vitbook's 'mean' pool "
                     "normalizes the tokens first, so only global_pool='token' converts exactly")
    if getattr(timm_vit, "reg_token", None) is not None or getattr(timm_vit, "no_embed_class", False):
        raise ValueError("register tokens and no_embed_class are not part of vitbook's ViT")
    block = timm_vit.blocks[0]
    if not isinstance(block.ls1, nn.Identity):
        raise ValueError("LayerScale (init_values) is not part of vitbook's ViT")
    pe = timm_vit.patch_embed
    return dict(image_size=tuple(pe.img_size), patch_size=tuple(pe.patch_size), channels=pe.proj.in_channels,
                num_classes=timm_vit.num_classes, dim=timm_vit.embed_dim, depth=len(timm_vit.blocks),
                heads=block.attn.num_heads, mlp_dim=block.mlp.fc1.out_features,
                qkv_bias=block.attn.qkv.bias is not None, pool="cls")


def vit_state_dict_from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape a timm ViT state dict into vitbook's layout.

    The only reshape: timm's patch embedding is a convolution ``(dim, c, ph, pw)``; vitbook's is
    the paper's linear map of a flattened ``(ph pw c)`` patch, so the kernel is permuted to match.
    """
    out = {}
    for key, value in state_dict.items():
        if key == "patch_embed.proj.weight":
            value = value.permute(0, 2, 3, 1).reshape(value.shape[0], -1)  # (dim, ph*pw*c), matching '(p1 p2 c)'
        elif key.startswith(("fc_norm.", "norm_pre.")) or ".ls" in key:
            raise ValueError(f"timm weight {key!r} has no counterpart in vitbook's ViT")
        out[key] = value
    return out


def vit_from_timm(timm_vit: nn.Module) -> ViT:
    """A vitbook ``ViT`` with the same architecture and weights as a timm ``VisionTransformer``."""
    model = ViT(**_timm_vit_config(timm_vit))
    model.load_state_dict(vit_state_dict_from_timm(timm_vit.state_dict()))
    return model.to(next(timm_vit.parameters()).dtype)


def pretrained_vit(name: str = "vit_tiny_patch16_224.augreg_in21k_ft_in1k") -> ViT:
    """Download a pretrained timm ViT and convert it (needs a network, e.g. on Colab)."""
    import timm

    return vit_from_timm(timm.create_model(name, pretrained=True)).eval()
