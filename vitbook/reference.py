"""Weight converters from the reference implementations to vitbook's models.

They serve two purposes: the parity tests (same weights, same input, same logits as
timm), and loading pretrained weights on a machine that can download them (Colab)::

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    model = vitbook.reference.pretrained_vit(name)

timm is an optional dependency (``pip install vitbook[reference]``), imported only here.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .models.vit import ViT


def conv_patch_kernel_to_linear(kernel: torch.Tensor) -> torch.Tensor:
    """A strided-convolution patch embedding ``(dim, c, ph, pw)`` as the paper's linear
    map of a flattened patch, ``(dim, ph*pw*c)``, in the ``(p1 p2 c)`` order vitbook's
    einops patterns use."""
    return kernel.permute(0, 2, 3, 1).reshape(kernel.shape[0], -1)


def _dtype_and_device(reference: nn.Module) -> dict:
    """The one dtype and device of ``reference``'s weights: a converter builds the
    vitbook model there before loading, since loading float64 weights into a float32
    model rounds them."""
    kinds = {
        (p.dtype, p.device) for p in reference.parameters() if p.is_floating_point()
    }
    if len(kinds) != 1:
        raise ValueError(
            f"the reference's weights have {len(kinds)} (dtype, device) kinds "
            f"{sorted(map(str, kinds))}; move it to one first (e.g. .float())"
        )
    ((dtype, device),) = kinds
    return dict(dtype=dtype, device=device)


def _pretrained_cfg(reference: nn.Module) -> dict | None:
    """A copy of timm's ``pretrained_cfg`` (mean, std, input size) of ``reference``."""
    cfg = getattr(reference, "pretrained_cfg", None)
    return None if cfg is None else copy.deepcopy(dict(cfg))


def _refuse(field: str, why: str):
    raise ValueError(f"cannot convert timm {field}: {why}")


def _check_layer_norm(norm: nn.Module, where: str) -> None:
    from timm.layers import LayerNorm

    if type(norm) not in (nn.LayerNorm, LayerNorm):
        _refuse(
            f"norm_layer ({where} is {type(norm).__name__})",
            "vitbook's ViT normalizes with LayerNorm",
        )
    if norm.eps != 1e-6:
        _refuse(
            f"norm_layer ({where} has eps={norm.eps})",
            "vitbook's LayerNorms have eps=1e-6",
        )
    if norm.weight is None or norm.bias is None:
        _refuse(
            f"norm_layer ({where} has no weight or no bias)",
            "vitbook's LayerNorms have both",
        )


def _check_timm_block(block: nn.Module, i: int) -> None:
    """Refuse, naming timm's field, anything in block ``i`` that vitbook's ``Block``
    does not compute."""
    from timm.layers import Attention, Mlp
    from timm.layers.activations import GELU
    from timm.models.vision_transformer import Block

    if type(block) is not Block:
        _refuse(
            f"block_fn={type(block).__name__}",
            "vitbook's Block is timm's pre-norm Block",
        )
    if not (isinstance(block.ls1, nn.Identity) and isinstance(block.ls2, nn.Identity)):
        _refuse("init_values (LayerScale)", "LayerScale is not part of vitbook's ViT")
    _check_layer_norm(block.norm1, f"blocks.{i}.norm1")
    _check_layer_norm(block.norm2, f"blocks.{i}.norm2")
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        _refuse(
            f"attn_layer={type(attn).__name__}",
            "vitbook's Attention is timm's plain one",
        )
    if not isinstance(attn.q_norm, nn.Identity):
        _refuse("qk_norm=True", "vitbook's ViT does not normalize queries and keys")
    if not isinstance(attn.norm, nn.Identity):
        _refuse("scale_attn_norm=True", "vitbook's Attention has no norm before proj")
    if getattr(attn, "gate", None) is not None:
        _refuse("a gated attention", "vitbook's Attention has no output gate")
    if type(mlp) is not Mlp or not isinstance(mlp.fc1, nn.Linear):
        _refuse(
            f"mlp_layer={type(mlp).__name__}",
            "vitbook's FeedForward is timm's Linear-GELU-Linear Mlp",
        )
    if not isinstance(mlp.norm, nn.Identity):
        _refuse("scale_mlp_norm=True", "vitbook's FeedForward has no norm inside")
    if any(layer.bias is None for layer in (attn.proj, mlp.fc1, mlp.fc2)):
        _refuse("proj_bias=False", "vitbook's projections and MLP have biases")
    exact = type(mlp.act) is GELU or (
        type(mlp.act) is nn.GELU and mlp.act.approximate == "none"
    )
    if not exact:
        _refuse(
            f"act_layer ({mlp.act!r})",
            "vitbook's MLP uses the exact GELU (act_layer='gelu')",
        )
    if len({attn.proj_drop.p, mlp.drop1.p, mlp.drop2.p}) != 1:
        _refuse(
            "proj_drop (different rates in attention and MLP)",
            "vitbook's ViT has one dropout rate for both",
        )


def _drop_path_rate(blocks) -> float:
    """The ``drop_path_rate`` behind timm's per-block stochastic depth rates, which
    grow linearly from 0 to it, as vitbook's do."""
    # nn.Identity (no drop_prob) where the rate is 0
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in blocks]
    second = [getattr(block.drop_path2, "drop_prob", 0.0) for block in blocks]
    if rates != second or rates != torch.linspace(0, rates[-1], len(rates)).tolist():
        _refuse(
            f"per-block drop path rates {rates}",
            "vitbook's rates grow linearly from 0 to drop_path_rate",
        )
    return rates[-1]


def _timm_vit_config(timm_vit: nn.Module) -> dict:
    """vitbook ``ViT`` keyword arguments that describe a timm ``VisionTransformer``.

    Every timm option that changes what the model computes either maps to vitbook's
    (``class_token``/``global_pool`` to ``pool``, the dropout and stochastic depth
    rates, ``dynamic_img_size``) or is refused with a ValueError naming it: a
    converted model computes what the timm model does, or there is none.
    """
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    if type(timm_vit) is not VisionTransformer:
        _refuse(f"{type(timm_vit).__name__}", "only timm's VisionTransformer converts")
    pe = timm_vit.patch_embed
    if type(pe) is not PatchEmbed or not isinstance(pe.norm, nn.Identity):
        _refuse(
            "embed_layer / embed_norm_layer",
            "vitbook's patch embedding is timm's PatchEmbed without a norm",
        )
    if pe.dynamic_img_pad:
        _refuse(
            "dynamic_img_pad=True",
            "vitbook refuses an image the patch does not divide, timm pads it",
        )
    if not isinstance(timm_vit.norm_pre, nn.Identity) or pe.proj.bias is None:
        _refuse("pre_norm=True", "vitbook's ViT has no LayerNorm before the blocks")
    if timm_vit.pos_embed is None:
        _refuse("pos_embed='none'", "vitbook's ViT adds a position embedding")
    if timm_vit.reg_token is not None:
        _refuse(
            f"reg_tokens={timm_vit.num_reg_tokens}",
            "register tokens are not part of vitbook's ViT",
        )
    if not isinstance(timm_vit.patch_drop, nn.Identity):
        _refuse("patch_drop_rate", "vitbook's ViT does not drop patches")
    if timm_vit.head_drop.p:
        _refuse(
            f"drop_rate={timm_vit.head_drop.p}",
            "vitbook's ViT has no dropout before the head",
        )
    global_pool, has_cls = timm_vit.global_pool, timm_vit.cls_token is not None
    if timm_vit.attn_pool is not None or global_pool not in ("token", "avg"):
        _refuse(
            f"global_pool={global_pool!r}",
            "vitbook pools the class token ('token') or the mean of the tokens ('avg')",
        )
    if not isinstance(timm_vit.fc_norm, nn.Identity):
        _refuse(
            "fc_norm=True (the default for global_pool='avg')",
            "timm normalizes after pooling, vitbook the tokens before; build the "
            "timm model with fc_norm=False",
        )
    if isinstance(timm_vit.norm, nn.Identity):
        _refuse("final_norm=False", "vitbook's ViT ends with a LayerNorm")
    if global_pool == "avg" and has_cls:
        _refuse(
            "global_pool='avg' with class_token=True",
            "vitbook's mean pooling (pool='mean') has no class token; build the "
            "timm model with class_token=False",
        )
    _check_layer_norm(timm_vit.norm, "norm")
    for i, block in enumerate(timm_vit.blocks):
        _check_timm_block(block, i)
    block = timm_vit.blocks[0]
    return dict(
        image_size=tuple(pe.img_size),
        patch_size=tuple(pe.patch_size),
        channels=pe.proj.in_channels,
        num_classes=timm_vit.num_classes,
        dim=timm_vit.embed_dim,
        depth=len(timm_vit.blocks),
        heads=block.attn.num_heads,
        dim_head=block.attn.head_dim,
        mlp_dim=block.mlp.fc1.out_features,
        qkv_bias=block.attn.qkv.bias is not None,
        pool="cls" if has_cls else "mean",
        dropout=block.attn.proj_drop.p,
        attn_drop=block.attn.attn_drop.p,
        emb_dropout=timm_vit.pos_drop.p,
        drop_path=_drop_path_rate(timm_vit.blocks),
        dynamic_img_size=timm_vit.dynamic_img_size,
    )


_TIMM_VIT_KEY = re.compile(
    r"(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\."
    r"(weight|bias)|norm\.(weight|bias)|head\.(weight|bias))"
)


def vit_state_dict_from_timm(
    state_dict: dict[str, torch.Tensor], no_embed_class: bool = False
) -> dict[str, torch.Tensor]:
    """Rename and reshape a timm ViT state dict into vitbook's layout.

    timm's patch embedding is a convolution ``(dim, c, ph, pw)``; vitbook's is the
    paper's linear map of a flattened ``(ph pw c)`` patch, so the kernel is permuted
    to match. ``no_embed_class=True`` (timm's option: the class token gets no
    position) becomes a zero position row for the class token, which adds exactly
    nothing (it is a learned row in vitbook: fine-tuning may move it from zero, where
    timm has none). Any weight vitbook has no place for is refused by name.
    """
    out = {}
    for key, value in state_dict.items():
        if not _TIMM_VIT_KEY.fullmatch(key):
            raise ValueError(f"timm weight {key!r} has no counterpart in vitbook's ViT")
        if key == "patch_embed.proj.weight":
            value = conv_patch_kernel_to_linear(value)
        out[key] = value
    if no_embed_class and "cls_token" in out:
        pos = out["pos_embed"]
        # (1, 1 + n, dim)
        out["pos_embed"] = torch.cat((pos.new_zeros(1, 1, pos.shape[-1]), pos), 1)
    return out


def vit_from_timm(timm_vit: nn.Module) -> ViT:
    """A vitbook ``ViT`` with the same architecture and weights as a timm
    ``VisionTransformer``, in its dtype and on its device, with its
    ``pretrained_cfg``; a ValueError names any timm option vitbook cannot compute
    exactly."""
    model = ViT(**_timm_vit_config(timm_vit)).to(**_dtype_and_device(timm_vit))
    model.load_state_dict(
        vit_state_dict_from_timm(timm_vit.state_dict(), timm_vit.no_embed_class)
    )
    model.pretrained_cfg = _pretrained_cfg(timm_vit)
    return model


def pretrained_vit(name: str = "vit_tiny_patch16_224.augreg_in21k_ft_in1k") -> ViT:
    """Download a pretrained timm ViT and convert it (needs a network, e.g. on
    Colab). ``model.pretrained_cfg`` says how its images were normalized (``mean``,
    ``std``) and their size (``input_size``)."""
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
    ``SwinTransformer``, in its dtype and on its device, with its
    ``pretrained_cfg``."""
    from .models.swin import Swin

    model = Swin(**_timm_swin_config(timm_swin))
    _refuse_shifted_padding(model)
    model.to(**_dtype_and_device(timm_swin))
    model.load_state_dict(swin_state_dict_from_timm(timm_swin.state_dict()))
    model.pretrained_cfg = _pretrained_cfg(timm_swin)
    return model


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
    built as Twins-SVT (``wss`` given), in its dtype and on its device, with its
    ``pretrained_cfg``."""
    from .models.twins import Twins

    model = Twins(**_timm_twins_config(timm_twins))
    model.to(**_dtype_and_device(timm_twins))
    model.load_state_dict(twins_state_dict_from_timm(timm_twins.state_dict()))
    model.pretrained_cfg = _pretrained_cfg(timm_twins)
    return model


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
    ``ViTMAEForPreTraining`` (transformers 5.x), in its dtype and on its device."""
    from .models.vit import ViT
    from .ssl.mae import MAE

    vit_kwargs, mae_kwargs = _transformers_mae_config(hf_mae.config)
    model = MAE(ViT(**vit_kwargs), **mae_kwargs).to(**_dtype_and_device(hf_mae))
    model.load_state_dict(mae_state_dict_from_transformers(hf_mae.state_dict()))
    return model
