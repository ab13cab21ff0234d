"""Weight converters from the reference implementations to vitbook's models.

They serve two purposes: the parity tests (same weights, same input, same logits as
timm), and loading pretrained weights on a machine that can download them (Colab)::

    model =
    vitbook.reference.pretrained_vit("vit_tiny_patch16_224.augreg_in21k_ft_in1k")

timm is an optional dependency (``pip install vitbook[reference]``), imported only here.
"""

from __future__ import annotations

import torch
from torch import nn

from .models.vit import ViT


def conv_patch_kernel_to_linear(kernel: torch.Tensor) -> torch.Tensor:
    """A strided-convolution patch embedding ``(dim, c, ph, pw)`` as the paper's linear
    map of a flattened patch, ``(dim, ph*pw*c)``, in the ``(p1 p2 c)`` order vitbook's
    einops patterns use."""
    return kernel.permute(0, 2, 3, 1).reshape(kernel.shape[0], -1)


def _timm_vit_config(timm_vit: nn.Module) -> dict:
    """vitbook ``ViT`` keyword arguments that describe a timm ``VisionTransformer``."""
    if getattr(timm_vit, "global_pool", "token") not in ("token", "avg"):
        raise ValueError(
            f"cannot convert timm global_pool={timm_vit.global_pool!r}; vitbook has "
            "'cls' and 'mean'"
        )
    has_cls = getattr(timm_vit, "cls_token", None) is not None
    if timm_vit.global_pool == "token" and not has_cls:
        raise ValueError("timm model pools the class token but has none")
    if timm_vit.global_pool == "avg":
        raise ValueError(
            "timm's average pooling normalizes after pooling (fc_norm); vitbook's "
            "'mean' pool "
            "normalizes the tokens first, so only global_pool='token' converts exactly"
        )
    if getattr(timm_vit, "reg_token", None) is not None or getattr(
        timm_vit, "no_embed_class", False
    ):
        raise ValueError(
            "register tokens and no_embed_class are not part of vitbook's ViT"
        )
    block = timm_vit.blocks[0]
    if not isinstance(block.ls1, nn.Identity):
        raise ValueError("LayerScale (init_values) is not part of vitbook's ViT")
    pe = timm_vit.patch_embed
    return dict(
        image_size=tuple(pe.img_size),
        patch_size=tuple(pe.patch_size),
        channels=pe.proj.in_channels,
        num_classes=timm_vit.num_classes,
        dim=timm_vit.embed_dim,
        depth=len(timm_vit.blocks),
        heads=block.attn.num_heads,
        mlp_dim=block.mlp.fc1.out_features,
        qkv_bias=block.attn.qkv.bias is not None,
        pool="cls",
    )


def vit_state_dict_from_timm(
    state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename and reshape a timm ViT state dict into vitbook's layout.

    The only reshape: timm's patch embedding is a convolution ``(dim, c, ph, pw)``;
    vitbook's is the paper's linear map of a flattened ``(ph pw c)`` patch, so the
    kernel is permuted to match.
    """
    out = {}
    for key, value in state_dict.items():
        if key == "patch_embed.proj.weight":
            value = conv_patch_kernel_to_linear(value)
        elif key.startswith(("fc_norm.", "norm_pre.")) or ".ls" in key:
            raise ValueError(f"timm weight {key!r} has no counterpart in vitbook's ViT")
        out[key] = value
    return out


def vit_from_timm(timm_vit: nn.Module) -> ViT:
    """A vitbook ``ViT`` with the same architecture and weights as a timm
    ``VisionTransformer``."""
    model = ViT(**_timm_vit_config(timm_vit))
    model.load_state_dict(vit_state_dict_from_timm(timm_vit.state_dict()))
    return model.to(next(timm_vit.parameters()).dtype)


def pretrained_vit(name: str = "vit_tiny_patch16_224.augreg_in21k_ft_in1k") -> ViT:
    """Download a pretrained timm ViT and convert it (needs a network, e.g. on
    Colab)."""
    import timm

    return vit_from_timm(timm.create_model(name, pretrained=True)).eval()


# --------------------------------------------------------------------------- Swin
def _timm_swin_config(timm_swin: nn.Module) -> dict:
    """vitbook ``Swin`` keyword arguments that describe a timm ``SwinTransformer``."""
    if timm_swin.global_pool != "avg":
        raise ValueError(
            f"cannot convert timm global_pool={timm_swin.global_pool!r}; vitbook's "
            "Swin averages"
        )
    if timm_swin.dynamic_img_size:
        raise ValueError(
            "timm's dynamic_img_size changes the map size per input; vitbook's Swin is "
            "converted for the fixed img_size only (strict_img_size=True)"
        )
    windows = set(timm_swin._ref_window_sizes)
    if len(windows) != 1:
        raise ValueError(
            f"timm model has per-stage windows {timm_swin._ref_window_sizes}; "
            "vitbook's Swin has one M"
        )
    blocks = [stage.blocks[0] for stage in timm_swin.layers]
    if any(block.always_partition for block in blocks):
        raise ValueError(
            "timm's always_partition=True keeps windows larger than the map; vitbook "
            "clamps them"
        )
    dims = [block.attn.proj.out_features for block in blocks]
    if dims != [dims[0] * 2**i for i in range(len(dims))]:
        raise ValueError(
            f"stage widths {dims} do not double from stage to stage as in vitbook's "
            "Swin"
        )
    for block in blocks:
        if block.attn.qkv.out_features != 3 * block.attn.proj.out_features:
            raise ValueError(
                "timm model sets head_dim so that heads * head_dim != dim; vitbook's "
                "Swin does not"
            )
    mlp_ratios = {
        block.mlp.fc1.out_features / block.mlp.fc1.in_features for block in blocks
    }
    if len(mlp_ratios) != 1:
        raise ValueError(f"per-stage mlp ratios {sorted(mlp_ratios)} are not supported")
    pe = timm_swin.patch_embed
    if isinstance(pe.norm, nn.Identity):
        raise ValueError(
            "timm model has no patch-embedding LayerNorm (patch_norm); vitbook's Swin "
            "always has one"
        )
    return dict(
        image_size=tuple(pe.img_size),
        patch_size=tuple(pe.patch_size),
        channels=pe.proj.in_channels,
        num_classes=timm_swin.num_classes,
        dim=timm_swin.embed_dim,
        depths=tuple(len(stage.blocks) for stage in timm_swin.layers),
        heads=tuple(block.attn.num_heads for block in blocks),
        window_size=windows.pop(),
        mlp_ratio=mlp_ratios.pop(),
        qkv_bias=blocks[0].attn.qkv.bias is not None,
    )


def swin_state_dict_from_timm(
    state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename and reshape a timm Swin state dict into vitbook's layout.

    timm's stage ``i`` (``layers.i``) starts with its patch merging (``downsample``), as
    the paper's figure draws it; vitbook calls them ``stages.i`` and ``merge``. The
    patch embedding is permuted as for ViT; everything else (including the 2x2 merge
    order) is stored the same.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue  # buffers vitbook rebuilds (older timm versions saved them)
        if key == "patch_embed.proj.weight":
            value = conv_patch_kernel_to_linear(value)
        key = (
            key.replace("layers.", "stages.", 1)
            .replace(".downsample.", ".merge.")
            .replace("head.fc.", "head.")
        )
        out[key] = value
    return out


def _refuse_shifted_padding(model) -> None:
    """timm rolls a shifted block's map and then pads it; vitbook pads first and then
    rolls (the official detection code's order). The two agree unless a shifted block
    sees a map the window does not divide: then they are different models, and
    converting would be a lie."""
    for i, stage in enumerate(model.stages):
        (h, w), (wh, ww) = stage.resolution, stage.window_size
        if (h % wh or w % ww) and any(block.shifted for block in stage.blocks):
            raise ValueError(
                f"stage {i + 1} has a {h}x{w} map that window {wh}x{ww} does not "
                "divide, and shifted "
                "blocks: timm rolls before padding, vitbook pads before rolling, so "
                "the logits "
                "would differ. Choose img_size and window_size so that every stage "
                "with depth >= 2 "
                "has a map divisible by the window (or a window >= the map), then "
                "convert."
            )


def swin_from_timm(timm_swin: nn.Module):
    """A vitbook ``Swin`` with the same architecture and weights as a timm
    ``SwinTransformer``."""
    from .models.swin import Swin

    model = Swin(**_timm_swin_config(timm_swin))
    _refuse_shifted_padding(model)
    model.load_state_dict(swin_state_dict_from_timm(timm_swin.state_dict()))
    return model.to(next(timm_swin.parameters()).dtype)


def pretrained_swin(name: str = "swin_tiny_patch4_window7_224.ms_in1k"):
    """Download a pretrained timm Swin and convert it (needs a network, e.g. on
    Colab)."""
    import timm

    return swin_from_timm(timm.create_model(name, pretrained=True)).eval()


# --------------------------------------------------------------------------- Twins
def _timm_twins_config(timm_twins: nn.Module) -> dict:
    """vitbook ``Twins`` keyword arguments that describe a timm ``Twins`` (SVT)."""
    from timm.models.twins import GlobalSubSampleAttn, LocallyGroupedAttn

    if timm_twins.global_pool != "avg":
        raise ValueError(
            f"cannot convert timm global_pool={timm_twins.global_pool!r}; vitbook's "
            "Twins averages"
        )
    for k, stage in enumerate(timm_twins.blocks):
        kinds = [type(block.attn) for block in stage]
        expected = [
            GlobalSubSampleAttn if i % 2 else LocallyGroupedAttn
            for i in range(len(stage))
        ]
        if kinds != expected:
            raise ValueError(
                f"stage {k + 1} of the timm model does not alternate LSA and GSA "
                "(LSA first): only Twins-SVT converts (PCPVT and wss=1 have no LSA)"
            )
    first = [stage[0] for stage in timm_twins.blocks]
    gsa = [
        next((b.attn for b in stage if isinstance(b.attn, GlobalSubSampleAttn)), None)
        for stage in timm_twins.blocks
    ]
    pe = timm_twins.patch_embeds[0]
    return dict(
        image_size=tuple(pe.img_size),
        patch_size=tuple(pe.patch_size),
        channels=pe.proj.in_channels,
        num_classes=timm_twins.num_classes,
        dims=tuple(timm_twins.embed_dims),
        depths=tuple(timm_twins.depths),
        heads=tuple(block.attn.num_heads for block in first),
        window_sizes=tuple(block.attn.ws for block in first),
        sr_ratios=tuple(1 if a is None else a.sr_ratio for a in gsa),
        mlp_ratios=tuple(b.mlp.fc1.out_features / b.mlp.fc1.in_features for b in first),
    )


def twins_state_dict_from_timm(
    state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename and reshape a timm Twins-SVT state dict into vitbook's layout.

    timm keeps the stages' pieces in parallel lists (``patch_embeds.i``,
    ``blocks.i.j``, ``pos_block.i``); vitbook groups them per stage
    (``stages.i.patch_embed``, ``stages.i.blocks.j``, ``stages.i.peg``). The strided
    convolutions (patch embeddings, GSA's ``sr``) become linear maps of flattened
    patches; GSA's separate ``q`` and ``kv`` projections are stacked into the one
    ``qkv`` of vitbook's ``Attention``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "patch_embeds":
            key = f"stages.{parts[1]}.patch_embed." + ".".join(parts[2:])
            if key.endswith("proj.weight"):
                value = conv_patch_kernel_to_linear(value)
        elif parts[0] == "pos_block":  # pos_block.i.proj.0.weight
            key = f"stages.{parts[1]}.peg.proj.{parts[-1]}"
        elif parts[0] == "blocks":
            key = f"stages.{parts[1]}.blocks." + ".".join(parts[2:])
            if key.endswith("attn.sr.weight"):
                value = conv_patch_kernel_to_linear(value)
        out[key] = value
    for key in [k for k in out if k.endswith(".attn.q.weight")]:
        prefix = key[: -len("q.weight")]
        for name in ("weight", "bias"):
            q, kv = out.pop(prefix + "q." + name), out.pop(prefix + "kv." + name)
            out[prefix + "qkv." + name] = torch.cat([q, kv])
    return out


def twins_from_timm(timm_twins: nn.Module):
    """A vitbook ``Twins`` with the same architecture and weights as a timm ``Twins``
    built as Twins-SVT (``wss`` given)."""
    from .models.twins import Twins

    model = Twins(**_timm_twins_config(timm_twins))
    model.load_state_dict(twins_state_dict_from_timm(timm_twins.state_dict()))
    return model.to(next(timm_twins.parameters()).dtype)


def pretrained_twins(name: str = "twins_svt_small.in1k"):
    """Download a pretrained timm Twins-SVT and convert it (needs a network, e.g. on
    Colab)."""
    import timm

    return twins_from_timm(timm.create_model(name, pretrained=True)).eval()


# --------------------------------------------------------------------------- MAE
def _transformers_mae_config(config) -> tuple[dict, dict]:
    """vitbook ``ViT`` and ``MAE`` keyword arguments that describe a Hugging Face
    ``ViTMAEConfig``."""
    if config.hidden_act != "gelu":
        raise ValueError(
            f"hidden_act={config.hidden_act!r}: vitbook's blocks use the exact GELU "
            "('gelu')"
        )
    if config.layer_norm_eps != 1e-6:
        raise ValueError(
            f"layer_norm_eps={config.layer_norm_eps}: MAE's LayerNorms use 1e-6 "
            "(transformers defaults to 1e-12); build the config with "
            "layer_norm_eps=1e-6"
        )
    vit = dict(
        image_size=config.image_size,
        patch_size=config.patch_size,
        channels=config.num_channels,
        num_classes=0,
        dim=config.hidden_size,
        depth=config.num_hidden_layers,
        heads=config.num_attention_heads,
        mlp_dim=config.intermediate_size,
        qkv_bias=config.qkv_bias,
        pool="cls",
        pos_embed="sincos",
    )
    mae = dict(
        decoder_dim=config.decoder_hidden_size,
        decoder_depth=config.decoder_num_hidden_layers,
        decoder_heads=config.decoder_num_attention_heads,
        decoder_mlp_ratio=config.decoder_intermediate_size / config.decoder_hidden_size,
        mask_ratio=config.mask_ratio,
        norm_pix_loss=config.norm_pix_loss,
    )
    return vit, mae


_MAE_BLOCK_NAMES = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.o_proj.", "attn.proj."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
)
_MAE_NAMES = (
    ("vit.embeddings.cls_token", "backbone.cls_token"),
    ("vit.embeddings.patch_embeddings.projection.", "backbone.patch_embed.proj."),
    ("vit.layers.", "backbone.blocks."),
    ("vit.layernorm.", "backbone.norm."),
    ("decoder.decoder_layers.", "decoder_blocks."),
    ("decoder.", ""),
)


def mae_state_dict_from_transformers(
    state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a transformers 5.x ``ViTMAEForPreTraining`` state dict into vitbook's
    ``MAE``: separate q/k/v projections become one ``qkv``, the convolutional patch
    kernel the paper's linear map. The fixed sin-cos tables are not copied: vitbook
    builds its own, and the parity test proves both build the same."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        if key.endswith(("position_embeddings", "decoder_pos_embed")):
            continue
        if key == "vit.embeddings.patch_embeddings.projection.weight":
            value = conv_patch_kernel_to_linear(value)
        for theirs, ours in _MAE_NAMES:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                break
        else:
            raise ValueError(
                f"transformers weight {key!r} has no place in vitbook's MAE"
            )
        for theirs, ours in _MAE_BLOCK_NAMES:
            key = key.replace(theirs, ours)
        for part in ("q", "k", "v"):
            marker = f".attention.{part}_proj."
            if marker in key:
                stem, kind = key.split(marker)
                qkv.setdefault((stem, kind), {})[part] = value
                break
        else:
            out[key] = value
    for (stem, kind), parts in qkv.items():
        out[f"{stem}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in "qkv"])
    return out


def mae_from_transformers(hf_mae: nn.Module):
    """A vitbook ``MAE`` with the architecture and weights of a Hugging Face
    ``ViTMAEForPreTraining`` (transformers 5.x)."""
    from .models.vit import ViT
    from .ssl.mae import MAE

    vit_kwargs, mae_kwargs = _transformers_mae_config(hf_mae.config)
    model = MAE(ViT(**vit_kwargs), **mae_kwargs)
    model.load_state_dict(mae_state_dict_from_transformers(hf_mae.state_dict()))
    return model.to(next(hf_mae.parameters()).dtype)
