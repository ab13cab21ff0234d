"""Every converter of vitbook.reference builds its model in the reference's dtype and
on its device before loading, and carries timm's pretrained_cfg; the hierarchical
models' forward_intermediates against timm's Swin."""

import pytest
import timm
import torch

from factories import randomize_
from factories import TIMM_TWINS
from vitbook import ViT
from vitbook.reference import swin_from_timm, twins_from_timm, vit_from_timm

SWIN = dict(
    img_size=32,
    patch_size=4,
    in_chans=3,
    num_classes=7,
    embed_dim=24,
    depths=(2, 2, 2),
    num_heads=(3, 3, 6),
    window_size=4,
)


def in_float64(model):
    """``model`` with every weight drawn in float64: values float32 cannot hold, so a
    conversion that rounds through float32 shows."""
    model = randomize_(model.double()).eval()
    weight = next(model.parameters())
    assert not torch.equal(weight, weight.float().double())
    return model


def swin64():
    return in_float64(timm.models.swin_transformer.SwinTransformer(**SWIN))


def twins64():
    return in_float64(
        timm.create_model("twins_svt_small", pretrained=False, **TIMM_TWINS)
    )


@pytest.mark.parametrize(
    "make, convert", [(swin64, swin_from_timm), (twins64, twins_from_timm)]
)
def test_float64_references_convert_without_rounding(make, convert):
    reference = make()
    model = convert(reference).eval()
    assert model.head.weight.dtype == torch.float64
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-10


def test_a_float64_mae_converts_without_rounding():
    from test_mae import transformers_mae
    from vitbook.reference import mae_from_transformers

    theirs = transformers_mae(norm_pix_loss=True, dtype=torch.float64)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.requires_grad:  # the fixed sin-cos tables stay
                p.normal_(0.0, 0.5)
    ours = mae_from_transformers(theirs).eval()
    images = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    noise = torch.rand(3, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(pixel_values=images, noise=noise)
        loss, prediction, _ = ours.forward_all(images, noise)
    assert (prediction - expected.logits).abs().max().item() <= 1e-10
    assert (loss - expected.loss).abs().item() <= 1e-10


def test_a_reference_with_two_dtypes_is_refused():
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=3
    )
    reference.head.double()
    with pytest.raises(ValueError, match=r"2 \(dtype, device\) kinds"):
        vit_from_timm(reference)


@pytest.mark.parametrize(
    "name, convert, options",
    [
        ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", vit_from_timm, dict(depth=1)),
        (
            "swin_tiny_patch4_window7_224.ms_in1k",
            swin_from_timm,
            dict(depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1)),
        ),
        (
            "twins_svt_small.in1k",
            twins_from_timm,
            dict(depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 16], num_heads=[1] * 4),
        ),
    ],
)
def test_converted_models_carry_timms_pretrained_cfg(name, convert, options):
    # what pretrained_* returns, without downloading the weights
    reference = timm.create_model(name, pretrained=False, **options)
    model = convert(reference)
    assert model.pretrained_cfg == dict(reference.pretrained_cfg)
    assert model.pretrained_cfg is not reference.pretrained_cfg
    assert model.pretrained_cfg["mean"] == reference.pretrained_cfg["mean"]
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_a_model_built_here_has_no_pretrained_cfg():
    model = ViT(image_size=16, patch_size=4, num_classes=2, dim=8, depth=1, heads=2)
    assert model.pretrained_cfg is None


@pytest.mark.parametrize("norm", [False, True])
def test_pyramid_intermediates_match_timms_swin(norm):
    reference = swin64()
    model = swin_from_timm(reference).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        final, ours = model.forward_intermediates(
            x, indices=[0, 2], norm=norm, intermediates_only=False
        )
        their_final, theirs = reference.forward_intermediates(
            x, indices=[0, 2], norm=norm
        )
        nhwc = model.forward_intermediates(x, indices=[0, 2], output_fmt="NHWC")
        nchw = model.forward_intermediates(x)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-10 * b.abs().max().item()
    # timm's final features are (b, h, w, d), vitbook's (b, d, h, w)
    their_final = their_final.permute(0, 3, 1, 2)
    assert (final - their_final).abs().max().item() <= 1e-10
    assert torch.equal(nhwc[1], nchw[2].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="output_fmt='NLC' is not one of"):
        model.forward_intermediates(x, output_fmt="NLC")
