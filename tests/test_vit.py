from functools import partial

import pytest
import timm
import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import ResPostBlock, VisionTransformer

from factories import randomize_
from vitbook import ViT, record_attention
from vitbook.models.vit import vit_at_image_size
from vitbook.reference import vit_from_timm

CONFIGS = [
    dict(
        img_size=32,
        patch_size=4,
        in_chans=3,
        num_classes=10,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
    ),
    dict(
        img_size=(28, 20),
        patch_size=(7, 5),
        in_chans=1,
        num_classes=7,
        embed_dim=48,
        depth=3,
        num_heads=3,
        mlp_ratio=3.0,
    ),
]


def timm_vit(dtype=torch.float32, **cfg):
    # drawn in dtype: float64 weights a float32 copy would round
    return randomize_(VisionTransformer(**cfg).to(dtype)).eval()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["square", "non-square"])
def test_logits_match_timm_in_float32(cfg):
    reference = timm_vit(**cfg)
    model = vit_from_timm(reference).eval()
    x = torch.randn(4, cfg["in_chans"], *timm.layers.to_2tuple(cfg["img_size"]))
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cfg", CONFIGS, ids=["square", "non-square"])
def test_logits_match_timm_in_float64(cfg):
    reference = timm_vit(torch.float64, **cfg)
    weight = reference.head.weight
    assert not torch.equal(weight, weight.float().double()), "weights float32 can hold"
    model = vit_from_timm(reference).eval()
    assert model.head.weight.dtype == torch.float64
    x = torch.randn(
        3, cfg["in_chans"], *timm.layers.to_2tuple(cfg["img_size"]), dtype=torch.float64
    )
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-10


def test_features_match_timm_token_for_token():
    reference = timm_vit(**CONFIGS[0])
    model = vit_from_timm(reference).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x),
            reference.forward_features(x),
            atol=1e-5,
            rtol=1e-5,
        )


# an 8x6 patch grid: a transposed map or a square-grid assumption would show
SMALL = dict(
    img_size=(32, 24), patch_size=4, num_classes=5, embed_dim=32, depth=3, num_heads=2
)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(init_values=1e-5), r"init_values \(LayerScale\)"),
        (dict(qk_norm=True), "qk_norm=True"),
        (dict(pos_embed="none"), "pos_embed='none'"),
        (dict(act_layer="gelu_tanh"), r"act_layer \(GELUTanh\(\)\)"),
        (dict(act_layer="quick_gelu"), r"act_layer \(QuickGELU\(\)\)"),
        (dict(reg_tokens=2), "reg_tokens=2"),
        (dict(pre_norm=True), "pre_norm=True"),
        (dict(fc_norm=True), "fc_norm=True"),
        (dict(global_pool="avg"), "fc_norm=True"),  # timm's default for 'avg'
        (dict(global_pool="avg", fc_norm=False), "global_pool='avg' with class_token"),
        (dict(global_pool="map"), "global_pool='map'"),
        (dict(global_pool=""), "global_pool=''"),
        (dict(final_norm=False), "final_norm=False"),
        (dict(proj_bias=False), "proj_bias=False"),
        (dict(scale_attn_norm=True), "scale_attn_norm=True"),
        (dict(scale_mlp_norm=True), "scale_mlp_norm=True"),
        (dict(drop_rate=0.1), "drop_rate=0.1"),
        (dict(patch_drop_rate=0.1), "patch_drop_rate"),
        (dict(dynamic_img_size=True, dynamic_img_pad=True), "dynamic_img_pad=True"),
        (
            dict(norm_layer=partial(torch.nn.LayerNorm, eps=1e-5)),
            r"norm_layer \(norm has eps=1e-05\)",
        ),
        (dict(norm_layer="rmsnorm"), r"norm_layer \(norm is RmsNorm\)"),
        (
            dict(norm_layer=partial(torch.nn.LayerNorm, eps=1e-6, bias=False)),
            r"norm_layer \(norm has no weight or no bias\)",
        ),
        (dict(embed_norm_layer="layernorm"), "embed_layer / embed_norm_layer"),
        (dict(attn_layer="diff"), "attn_layer=DiffAttention"),
        (dict(block_fn=ResPostBlock), "block_fn=ResPostBlock"),
        (dict(mlp_layer=timm.layers.SwiGLUPacked), "mlp_layer=GluMlp"),
    ],
)
def test_converter_refuses_every_timm_option_vitbook_does_not_compute(options, field):
    reference = VisionTransformer(**{**SMALL, **options})
    with pytest.raises(ValueError, match=f"cannot convert timm {field}"):
        vit_from_timm(reference)


def test_converter_refuses_blocks_timms_options_cannot_build_but_a_module_can_hold():
    reference = VisionTransformer(**SMALL)
    reference.blocks[1].attn = timm.layers.Attention(32, 2, qkv_bias=True, gated=True)
    with pytest.raises(ValueError, match="cannot convert timm a gated attention"):
        vit_from_timm(reference)
    reference = VisionTransformer(**SMALL)
    reference.blocks[0].mlp.drop1.p = 0.3
    with pytest.raises(ValueError, match=r"timm proj_drop \(different rates"):
        vit_from_timm(reference)
    reference = VisionTransformer(**SMALL, drop_path_rate=0.2)
    reference.blocks[1].drop_path1.drop_prob = 0.15
    with pytest.raises(ValueError, match="per-block drop path rates"):
        vit_from_timm(reference)


def test_converter_refuses_a_distilled_deit():
    with pytest.raises(ValueError, match="VisionTransformerDistilled"):
        vit_from_timm(VisionTransformerDistilled(**SMALL))


EXACT = {
    # timm's mean pooling without fc_norm and without a class token is vitbook's
    "avg": dict(class_token=False, global_pool="avg", fc_norm=False),
    # the class token without a position: vitbook's gets a zero row
    "no-embed-class": dict(no_embed_class=True),
    "avg-no-embed-class": dict(
        class_token=False, global_pool="avg", fc_norm=False, no_embed_class=True
    ),
    "no-qkv-bias": dict(qkv_bias=False),
}


@pytest.mark.parametrize("options", EXACT.values(), ids=EXACT)
def test_pooling_and_position_options_convert_exactly(options):
    reference = timm_vit(torch.float64, **SMALL, **options)
    model = vit_from_timm(reference).eval()
    x = torch.randn(3, 3, 32, 24, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-10
        features = model.forward_features(x) - reference.forward_features(x)
        assert features.abs().max().item() <= 1e-10


def test_dropout_stochastic_depth_and_dynamic_size_carry_over():
    options = dict(
        drop_path_rate=0.2,
        proj_drop_rate=0.1,
        attn_drop_rate=0.05,
        pos_drop_rate=0.15,
        dynamic_img_size=True,
    )
    reference = VisionTransformer(**{**SMALL, **options})
    model = vit_from_timm(reference)
    rates = [block.drop_path1.drop_prob for block in reference.blocks[1:]]
    assert [block.drop_path.p for block in model.blocks] == [0.0] + rates
    assert rates[-1] == pytest.approx(0.2)
    block = model.blocks[0]
    assert block.attn.proj_drop.p == block.mlp.drop.p == 0.1
    assert block.attn.attn_drop == 0.05 and model.pos_drop.p == 0.15
    assert model.patch_embed.dynamic


# grids 4x10 and 6x4: each shrinks the 8x6 grid along a side, where antialiasing counts
@pytest.mark.parametrize("size", [(16, 40), (24, 16)])
def test_a_dynamic_size_model_matches_timm_at_other_image_sizes(size):
    reference = timm_vit(**SMALL, dynamic_img_size=True)
    model = vit_from_timm(reference).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [(16, 40), (24, 16)])
def test_a_vit_moved_to_another_size_is_timms_set_input_size(size):
    reference = timm_vit(**SMALL)
    model = vit_at_image_size(vit_from_timm(reference).eval(), size)
    reference.set_input_size(img_size=size)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.equal(model.pos_embed, reference.pos_embed)
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_set_image_size_at_the_own_size_keeps_the_very_table():
    model = small_vit()
    table = model.pos_embed
    model.set_image_size(28)
    assert model.pos_embed is table


# ------------------------------------------------------------------ timm's habits
@pytest.mark.parametrize(
    "indices, norm, output_fmt",
    [
        (None, False, "NCHW"),
        (2, True, "NCHW"),
        ([0, -1], False, "NLC"),
        ([-1, 0], True, "NLC"),
    ],
)
def test_forward_intermediates_match_timms(indices, norm, output_fmt):
    reference = timm_vit(torch.float64, **SMALL)
    model = vit_from_timm(reference).eval()
    x = torch.randn(2, 3, 32, 24, dtype=torch.float64)
    options = dict(indices=indices, norm=norm, output_fmt=output_fmt)
    with torch.no_grad():
        final, ours = model.forward_intermediates(
            x, **options, intermediates_only=False, return_prefix_tokens=True
        )
        their_final, theirs = reference.forward_intermediates(
            x, **options, return_prefix_tokens=True
        )
        only = model.forward_intermediates(x, **options)
    assert len(ours) == len(theirs) == len(only)
    assert (final - their_final).abs().max().item() <= 1e-10
    for (patches, prefix), (their_patches, their_prefix), alone in zip(
        ours, theirs, only
    ):
        assert patches.shape == their_patches.shape and prefix.shape == (2, 1, 32)
        assert (patches - their_patches).abs().max().item() <= 1e-10
        assert (prefix - their_prefix).abs().max().item() <= 1e-10
        assert torch.equal(alone, patches)


def test_forward_intermediates_by_default_keep_the_class_token_in_place():
    model = small_vit().eval()
    x = torch.randn(2, 1, 28, 28)
    (tokens,) = model.forward_intermediates(x, indices=1)
    (patches,), (prefix,) = zip(
        *model.forward_intermediates(
            x, indices=1, output_fmt="NLC", return_prefix_tokens=True
        )
    )
    assert tokens.shape == (2, 17, 32)
    assert torch.equal(tokens, torch.cat((prefix, patches), dim=1))
    with pytest.raises(ValueError, match="output_fmt='NHWC' is not one of"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="return_prefix_tokens=True needs"):
        model.forward_intermediates(x, return_prefix_tokens=True)


@pytest.mark.parametrize("global_pool", ["avg", ""])
def test_reset_classifier_pools_as_timms(global_pool):
    reference = timm_vit(torch.float64, **SMALL)
    model = vit_from_timm(reference).eval()
    model.reset_classifier(4, global_pool)
    reference.reset_classifier(4, global_pool)
    with torch.no_grad():
        model.head.load_state_dict(reference.head.state_dict())
    x = torch.randn(2, 3, 32, 24, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert ours.shape == theirs.shape and model.global_pool == global_pool
    assert (ours - theirs).abs().max().item() <= 1e-10


def test_reset_classifier_refuses_a_pooling_the_vit_cannot_do():
    with pytest.raises(ValueError, match="global_pool='token' needs a class token"):
        small_vit(pool="mean").reset_classifier(3, "token")
    model = small_vit()
    with pytest.raises(ValueError, match=r"global_pool='max' is not one of \("):
        model.reset_classifier(3, "max")
    assert model.num_classes == 10 and model.global_pool == "token"


def small_vit(**kw):
    cfg = dict(
        image_size=28,
        patch_size=7,
        num_classes=10,
        dim=32,
        depth=2,
        heads=4,
        channels=1,
    )
    return ViT(**{**cfg, **kw})


@pytest.mark.parametrize(
    "pool, pos_embed, tokens",
    [
        ("cls", "learned", 17),
        ("mean", "learned", 16),
        ("cls", "sincos", 17),
        ("mean", "sincos", 16),
    ],
)
def test_every_pooling_and_position_variant_runs_and_has_its_token_count(
    pool, pos_embed, tokens
):
    model = small_vit(pool=pool, pos_embed=pos_embed)
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, tokens, 32)
    assert model(x).shape == (2, 10)
    assert (model.cls_token is None) == (pool == "mean")


def test_sincos_positions_are_fixed_and_not_saved_as_weights():
    model = small_vit(pos_embed="sincos")
    assert "pos_embed" not in model.state_dict()
    assert not any(p is model.pos_embed for p in model.parameters())


def test_output_depends_on_patch_order_only_through_positions():
    # without position information a transformer is permutation-equivariant: shuffling the
    # patches leaves the mean-pooled output unchanged. Positions are what break the symmetry.
    model = randomize_(small_vit(pool="mean")).eval()
    with torch.no_grad():
        model.pos_embed.zero_()
    x = torch.randn(1, 1, 28, 28)
    # swap two 7x7 patches
    y = x.clone()
    y[..., :7, :7], y[..., 7:14, 7:14] = x[..., 7:14, 7:14], x[..., :7, :7]
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(y), atol=1e-5, rtol=1e-5)
        model.pos_embed.normal_()
        assert (model(x) - model(y)).abs().max() > 1e-2


def test_attention_maps_cover_every_layer_and_token():
    model = small_vit().eval()
    x = torch.randn(3, 1, 28, 28)
    with record_attention(model) as maps:
        logits = model(x)
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn"]
    assert all(m[0].shape == (3, 4, 17, 17) for m in maps.values())
    torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patch_size=5), "image height 28 is not divisible by patch_size 5"),
        (dict(pool="max"), "pool='max' is not one of"),
        (dict(pos_embed="rope"), "pos_embed='rope' is not one of"),
        (dict(heads=3), "dim 32 is not divisible by heads 3"),
        (dict(depth=0), "depth=0 must be >= 1"),
    ],
)
def test_bad_configuration_is_rejected_with_the_rule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_vit(**kwargs)


def test_wrong_image_size_and_channels_are_named():
    model = small_vit()
    with pytest.raises(
        ValueError, match="image size 32x32 does not match the model's image_size 28x28"
    ):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(
        ValueError, match="image has 3 channels, the model was built with channels=1"
    ):
        model(torch.randn(1, 3, 28, 28))


def test_headless_model_returns_features():
    model = small_vit(num_classes=0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 32)
