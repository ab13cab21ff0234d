import pytest
import timm
import torch

from conftest import randomize_
from vitbook import ViT, record_attention
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


def timm_vit(**cfg):
    return randomize_(timm.models.vision_transformer.VisionTransformer(**cfg)).eval()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["square", "non-square"])
def test_logits_match_timm_in_float32(cfg):
    reference = timm_vit(**cfg)
    model = vit_from_timm(reference).eval()
    x = torch.randn(4, cfg["in_chans"], *timm.layers.to_2tuple(cfg["img_size"]))
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cfg", CONFIGS, ids=["square", "non-square"])
def test_logits_match_timm_in_float64(cfg):
    reference = timm_vit(**cfg).double()
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


def test_converter_refuses_what_vitbook_does_not_have():
    layer_scale = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2, init_values=1e-5
    )
    with pytest.raises(ValueError, match="LayerScale"):
        vit_from_timm(layer_scale)


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
