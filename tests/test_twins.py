import pytest
import timm
import torch

from factories import randomize_
from factories import TIMM_TWINS, small_twins
from vitbook import record_attention
from vitbook.layers import Attention
from vitbook.models.twins import (
    PEG,
    GlobalSubsampledAttention,
    LocallyGroupedAttention,
    Twins,
    TwinsBlock,
    attention_flops,
    patchify,
)
from vitbook.reference import twins_from_timm

CONFIGS = {
    # the configuration (factories.TIMM_TWINS)
    "two-stages": TIMM_TWINS,
    # 12x12, 6x6, 3x3 maps; windows 5, 4, 2 divide none of them (LSA pads), sr 5 does
    # not divide 12 (the strided convolution drops the rest), an odd depth (LSA, GSA,
    # LSA), per-stage mlp ratios, grey images
    "three-stages-padded": dict(
        img_size=48,
        in_chans=1,
        embed_dims=[16, 32, 48],
        num_heads=[2, 2, 4],
        mlp_ratios=[4, 2, 2],
        depths=[2, 3, 2],
        wss=[5, 4, 2],
        sr_ratios=[5, 2, 1],
        num_classes=7,
    ),
    # a window as large as the map (LSA = full attention there), patch 2, sr 4
    "window-covers-map": dict(
        img_size=16,
        patch_size=2,
        embed_dims=[8, 16],
        num_heads=[2, 4],
        mlp_ratios=[3, 3],
        depths=[2, 2],
        wss=[8, 4],
        sr_ratios=[4, 2],
        num_classes=3,
    ),
}


def timm_twins(**cfg):
    model = timm.create_model("twins_svt_small", pretrained=False, **cfg)
    return randomize_(model).eval()


def images(cfg, n=3, dtype=torch.float32):
    size = cfg["img_size"]
    return torch.randn(n, cfg.get("in_chans", 3), size, size, dtype=dtype)


# --------------------------------------------------------------------------- parity with timm
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_logits_match_timm(name, dtype, tol):
    reference = timm_twins(**CONFIGS[name]).to(dtype)
    model = twins_from_timm(reference).eval()
    x = images(CONFIGS[name], dtype=dtype)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= tol


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_every_stage_map_matches_timm_intermediates(name, dtype, tol):
    cfg = CONFIGS[name]
    reference = timm_twins(**cfg).to(dtype)
    model = twins_from_timm(reference).eval()
    x = images(cfg, dtype=dtype)
    with torch.no_grad():
        ours = model.forward_intermediates(x)
        theirs = reference.forward_intermediates(x, norm=True, intermediates_only=True)
    assert len(ours) == len(theirs) == len(cfg["depths"])
    for a, b in zip(ours, theirs):  # unnormalized maps grow: the bound scales with them
        assert a.shape == b.shape
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0)


def test_parity_configs_cover_padding_sub_sampling_and_full_gsa():
    padded = twins_from_timm(timm_twins(**CONFIGS["three-stages-padded"]))
    assert padded.resolutions == [(12, 12), (6, 6), (3, 3)]
    lsa = [s.blocks[0].attn for s in padded.stages]
    assert all(r[0] % a.window_size[0] for r, a in zip(padded.resolutions, lsa))
    kinds = [[b.kind for b in s.blocks] for s in padded.stages]
    assert kinds == [["LSA", "GSA"], ["LSA", "GSA", "LSA"], ["LSA", "GSA"]]
    ratios = [s.blocks[1].attn.sr_ratio for s in padded.stages]
    assert ratios == [5, 2, 1] and padded.stages[2].blocks[1].attn.sr is None


def test_converter_refuses_a_model_without_lsa():
    pcpvt = timm.create_model(
        "twins_pcpvt_small",
        pretrained=False,
        img_size=32,
        embed_dims=[16, 32],
        num_heads=[1, 2],
        mlp_ratios=[4, 4],
        depths=[2, 2],
        sr_ratios=[2, 1],
    )
    with pytest.raises(ValueError, match="only Twins-SVT converts"):
        twins_from_timm(pcpvt)


def test_init_follows_the_official_code():
    torch.manual_seed(0)
    model = Twins(
        image_size=64,
        num_classes=10,
        dims=(64, 128),
        depths=(2, 2),
        heads=(2, 4),
        window_sizes=4,
        sr_ratios=(4, 2),
    )
    stage = model.stages[0]
    # convolutions: He normal over the fan-out k*k*out/groups
    expected = {
        "patch": (2 / (16 * 64)) ** 0.5,
        "sr": (2 / (16 * 64)) ** 0.5,
        "peg": (2 / 9) ** 0.5,
    }
    measured = {
        "patch": stage.patch_embed.proj.weight.std().item(),
        "sr": stage.blocks[1].attn.sr.weight.std().item(),
        "peg": stage.peg.proj.weight.std().item(),
    }
    for key in expected:
        assert abs(measured[key] - expected[key]) < 0.1 * expected[key], key
    assert abs(stage.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.001
    assert stage.blocks[1].attn.qkv.bias.abs().max() == 0


# --------------------------------------------------------------------------- the paper, not the seed
def test_peg_runs_right_after_the_first_block_of_every_stage():
    # the seed (vit-pytorch TwinsSVT) runs its PEG after an LSA and a GSA block
    model = small_twins().eval()
    order = []
    for name, module in model.named_modules():
        if isinstance(module, (TwinsBlock, PEG)):
            module.register_forward_hook(lambda m, i, o, name=name: order.append(name))
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    expected = []
    for s, depth in enumerate((4, 2)):
        blocks = [f"stages.{s}.blocks.{i}" for i in range(depth)]
        expected += blocks[:1] + [f"stages.{s}.peg"] + blocks[1:]
    assert order == expected


def test_blocks_alternate_lsa_and_gsa_starting_with_lsa():
    model = small_twins()
    kinds = [[b.kind for b in s.blocks] for s in model.stages]
    assert kinds == [["LSA", "GSA", "LSA", "GSA"], ["LSA", "GSA"]]


def test_gsa_sub_samples_with_kernel_equal_to_stride_then_layer_norm():
    # the seed: keys and values straight from a 7x7 convolution, no normalization
    attn = randomize_(GlobalSubsampledAttention(8, 2, sr_ratio=3))
    assert isinstance(attn.norm, torch.nn.LayerNorm)
    x = torch.randn(2, 7, 9, 8)  # 7 rows: the convolution keeps 2 patches, drops 1
    patches = x[:, :6].unfold(1, 3, 3).unfold(2, 3, 3)  # (b, 2, 3, c, 3, 3)
    patches = patches.permute(0, 1, 2, 4, 5, 3).reshape(2, 6, 72)  # (p1 p2 c)
    expected = attn.norm(attn.sr(patches))
    torch.testing.assert_close(attn.summary(x), expected)
    assert attn.summary(x).shape == (2, 2 * 3, 8)  # (7 // 3) * (9 // 3) keys


def test_queries_keys_and_values_have_biases_and_heads_follow_the_stage():
    # the seed: 8 heads of 64 in every stage, no bias on q, k, v
    model = small_twins()
    for stage, heads, dim in zip(model.stages, (2, 4), (16, 32)):
        for block in stage.blocks:
            assert block.attn.qkv.bias is not None
            assert block.attn.heads * block.attn.dim_head == dim
            assert block.attn.heads == heads


def test_the_last_stage_keeps_a_grid_of_keys_at_224():
    # the seed's fixed 7x7 sub-sampling leaves one key on the last 7x7 map at 224;
    # Twins-SVT's sr_ratios (8, 4, 2, 1) leave 7x7 = 49 keys in every stage
    model = Twins(
        image_size=224, num_classes=0, dims=(8,) * 4, depths=(2,) * 4, heads=(1,) * 4
    ).eval()
    assert model.resolutions == [(56, 56), (28, 28), (14, 14), (7, 7)]
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(1, 3, 224, 224))
    keys = [maps[f"stages.{i}.blocks.1.attn"][0].shape[-1] for i in range(4)]
    assert keys == [49, 49, 49, 49]


def test_peg_is_a_depthwise_3x3_convolution_with_a_residual():
    peg = randomize_(PEG(6))
    assert peg.proj.kernel_size == (3, 3) and peg.proj.groups == 6
    assert sum(p.numel() for p in peg.parameters()) == 6 * 9 + 6
    x = torch.zeros(1, 5, 5, 6)
    torch.testing.assert_close(peg(x), peg.proj.bias.expand(1, 5, 5, 6))
    with torch.no_grad():
        peg.proj.weight.zero_()
        peg.proj.bias.zero_()
    x = torch.randn(1, 5, 5, 6)
    torch.testing.assert_close(peg(x), x)  # a zero convolution leaves the identity


def test_peg_tells_positions_apart_that_the_same_content_would_not():
    # one constant image: without PEG every token of stage 1 would be identical
    model = randomize_(small_twins(depths=(1, 1)), std=0.3).eval()
    x = torch.ones(1, 1, 16, 16)
    stage = model.stages[0]
    with torch.no_grad():
        tokens = stage.blocks[0](stage.patch_embed(x.permute(0, 2, 3, 1)))
        after = stage.peg(tokens)
    assert tokens.std(dim=(1, 2)).max() < 1e-4  # all the same before
    corner, centre = after[0, 0, 0], after[0, 4, 4]
    assert (corner - centre).abs().max() > 1e-2  # the border is seen


# --------------------------------------------------------------------------- invariants
def test_gsa_with_ratio_one_is_full_attention():
    torch.manual_seed(0)
    gsa = randomize_(GlobalSubsampledAttention(12, 3, sr_ratio=1), std=0.3)
    full = Attention(12, 3)
    full.load_state_dict(gsa.state_dict())
    x = torch.randn(2, 5, 6, 12)
    expected = full(x.reshape(2, 30, 12)).reshape(2, 5, 6, 12)
    torch.testing.assert_close(gsa(x), expected)


def test_gsa_keys_summarize_the_whole_map():
    gsa = randomize_(GlobalSubsampledAttention(8, 2, sr_ratio=2), std=0.3).eval()
    with record_attention(gsa) as maps:
        gsa(torch.randn(1, 6, 8, 8))
    (weights,) = maps[""]
    assert weights.shape == (1, 2, 48, 12)  # every query, (6/2)*(8/2) keys
    assert (weights > 0).all()  # every query reaches every part of the map


def window_of(h, w, k):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (ys // k * 100 + xs // k).flatten()  # (h*w,) a label per sub-window


@pytest.mark.parametrize("side", [8, 10], ids=["divisible", "padded"])
def test_lsa_never_attends_outside_its_sub_window(side):
    from vitbook.viz.twins import dense_lsa_weights

    k = 4
    lsa = randomize_(LocallyGroupedAttention(8, 2, k), std=0.3).eval()
    with torch.no_grad(), record_attention(lsa) as maps:
        lsa(torch.randn(2, side, side, 8))
    (weights,) = maps[""]
    windows = (-(-side // k)) ** 2
    assert weights.shape == (2 * windows, 2, k * k, k * k)
    dense = dense_lsa_weights(weights, side, side, k)  # (b, heads, n, n), real tokens
    label = window_of(side, side, k)
    outside = label[:, None] != label[None, :]
    assert outside.any()
    assert dense.masked_select(outside).abs().max() == 0
    inside = dense.masked_select(~outside)
    assert (inside > 0).all()  # every key of the window is seen ...
    if side % k == 0:  # ... and, without padding, they carry all the weight
        torch.testing.assert_close(dense.sum(-1), torch.ones(2, 2, side * side))


@pytest.mark.parametrize("side", [8, 10], ids=["divisible", "padded"])
def test_an_lsa_token_depends_only_on_its_sub_window(side):
    k = 4
    block = randomize_(TwinsBlock(8, 2, window_size=k), std=0.2).eval()
    x = torch.randn(1, side, side, 8, requires_grad=True)
    y0, x0 = side - 1, 5  # in the padded case, a window cut by the border
    block(x)[0, y0, x0].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).flatten()
    label = window_of(side, side, k)
    assert torch.equal(touched, label == label[y0 * side + x0])


def test_a_gsa_token_depends_on_the_whole_map():
    block = randomize_(TwinsBlock(8, 2, sr_ratio=2), std=0.2).eval()
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    block(x)[0, 0, 0].sum().backward()
    assert (x.grad[0].abs().sum(-1) > 0).all()


def test_recorded_attention_gives_the_same_logits_as_sdpa():
    model = randomize_(small_twins(image_size=20), std=0.2).eval()
    x = torch.randn(2, 1, 20, 20)  # 10x10 tokens, windows 4: padded
    with torch.no_grad():
        plain = model(x)
        with record_attention(model) as maps:
            recorded = model(x)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert len(maps) == 6 and all(len(v) == 1 for v in maps.values())


def test_patchify_matches_a_strided_convolution():
    conv = torch.nn.Conv2d(3, 5, 3, stride=3)
    x = torch.randn(2, 3, 10, 8)
    expected = conv(x).permute(0, 2, 3, 1)  # (b, 3, 2, 5)
    linear = conv.weight.permute(0, 2, 3, 1).reshape(5, -1)
    got = patchify(x.permute(0, 2, 3, 1), 3) @ linear.T + conv.bias
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- shapes and sizes
def test_features_are_a_map_and_every_stage_can_be_returned():
    model = small_twins(
        depths=(2, 2, 2), dims=(8, 16, 24), heads=(2, 2, 4), sr_ratios=(2, 1, 1)
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    assert model.forward_features(x).shape == (2, 24, 2, 2)
    shapes = [tuple(m.shape) for m in model.forward_intermediates(x)]
    assert shapes == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 24, 2, 2)]


def test_other_image_sizes_run_without_a_position_table():
    model = small_twins().eval()
    for size in (12, 18, 32):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


def test_peg_is_left_out_of_weight_decay_as_in_the_official_code():
    model = small_twins()
    names = model.no_weight_decay()
    assert "stages.0.peg.proj.weight" in names
    assert "stages.0.blocks.0.attn.qkv.weight" not in names


def test_attention_flops_follow_the_formulas():
    h = w = 56
    n, c = h * w, 64
    assert attention_flops(h, w, c) == 4 * n * c**2 + 2 * n * n * c
    assert attention_flops(h, w, c, window=7) == 4 * n * c**2 + 2 * 49 * n * c
    gsa = attention_flops(h, w, c, sr_ratio=8)
    assert gsa == 3 * n * c**2 + 2 * 49 * c**2 + 2 * n * 49 * c
    assert attention_flops(h, w, c, sr_ratio=1) == attention_flops(h, w, c)
    with pytest.raises(ValueError, match="not both"):
        attention_flops(h, w, c, window=7, sr_ratio=2)


# --------------------------------------------------------------------------- figures
def test_receptive_fields_count_the_keys_each_kind_reads():
    from vitbook.viz.twins import receptive_fields

    # a 8x8 map, windows of 4, shift 2, query at (1, 1): its shifted window wrapped
    # around both edges, so the mask leaves it the 2x2 corner region of that window
    fields = receptive_fields((8, 8), (1, 1), window_size=4, sr_ratio=2)
    counts = {name: (int(mask.sum()), n) for name, (mask, n) in fields.items()}
    assert counts == {
        "full": (64, 64),
        "swin W-MSA": (16, 16),
        "swin SW-MSA": (4, 4),
        "LSA": (16, 16),
        "GSA": (64, 16),  # every token is read, through 16 keys
    }
    mask, _ = fields["swin SW-MSA"]
    assert mask[:2, :2].all() and mask.sum() == 4


def test_every_twins_figure_draws_and_the_cost_is_measured():
    import matplotlib.figure

    from vitbook.viz import twins as figures

    photo = torch.rand(3, 64, 64)
    drawn = [
        figures.plot_receptive_fields(photo, 4, (3, 10), window_size=4, sr_ratio=4),
        figures.plot_receptive_fields(photo, 4, (0, 0), window_size=8, sr_ratio=3),
    ]
    cost = figures.measure_local_global_cost(
        sides=(8, 16), dim=8, heads=2, window_size=4, sr_ratio=4, repeats=2
    )
    assert all(t > 0 for ts in cost["seconds"].values() for t in ts)
    assert cost["logits"]["full"][-1] > cost["logits"]["GSA"][-1]
    assert cost["flops"]["LSA"] == cost["flops"]["swin"]
    drawn.append(figures.plot_local_global_cost(cost))
    assert all(isinstance(f, matplotlib.figure.Figure) for f in drawn)
    with pytest.raises(ValueError, match="window_size 5 must divide the 16x16"):
        figures.plot_receptive_fields(photo, 4, (0, 0), window_size=5)
    with pytest.raises(ValueError, match=r"query \(16, 0\) is outside"):
        figures.plot_receptive_fields(photo, 4, (16, 0))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(image_size=15), "image height 15 is not divisible by patch_size 2"),
        (dict(heads=(3, 4)), "stage 1 has dim 16, not divisible by heads 3"),
        (dict(depths=(2, 2, 2)), "must name the same number"),
        (dict(sr_ratios=(2, 1, 1)), r"sr_ratios=\(2, 1, 1\) must give one value"),
        (dict(sr_ratios=(2, 8)), r"4x4 map, smaller than sr_ratios\[1\]=8"),
        (dict(window_sizes=0), r"window_sizes\[0\]=0 must be >= 1"),
        (dict(depths=(2, 0)), r"depths\[1\]=0 must be >= 1"),
        (dict(mlp_ratios=(4, 0)), "mlp_ratio=0 must be > 0"),
    ],
)
def test_bad_configurations_are_refused_with_the_rule(kw, message):
    with pytest.raises(ValueError, match=message):
        small_twins(**kw)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(sr_ratios=(2.5, 1)), ValueError, r"sr_ratios\[0\]=2.5 must be a whole"),
        (dict(window_sizes=(4, 2.5)), ValueError, r"window_sizes\[1\]=2.5 must be"),
        # one stage's (height, width) pair
        (dict(window_sizes=((4, 4.5), 4)), ValueError, r"\(4, 4.5\) must be whole"),
        (dict(sr_ratios=("2", 1)), TypeError, r"sr_ratios\[0\]='2' must be a whole"),
    ],
)
def test_fractional_sub_sampling_and_windows_are_refused_not_truncated(
    kw, error, message
):
    # int() would make a ratio of 2.5 a ratio of 2 without a word
    with pytest.raises(error, match=message):
        small_twins(**kw)


def test_whole_floats_are_kept_and_the_layers_refuse_fractions_too():
    model = small_twins(sr_ratios=(2.0, 1), window_sizes=4.0)
    assert model.stages[0].blocks[1].attn.sr_ratio == 2
    assert model.stages[0].blocks[0].attn.window_size == (4, 4)
    with pytest.raises(ValueError, match=r"sr_ratio=1.5 must be a whole number"):
        GlobalSubsampledAttention(8, 2, sr_ratio=1.5)
    with pytest.raises(ValueError, match=r"window_size=3.5 must be a whole number"):
        LocallyGroupedAttention(8, 2, window_size=3.5)


@pytest.mark.parametrize(
    "build, size, message",
    [
        # 6x6 and 2x2 images make 3x3 and 1x1 maps, where sr 4 has no whole cell: the
        # GSA returned the projection's bias for every token at 6x6, and raised a
        # ZeroDivisionError inside einops at 2x2
        (dict(patch_size=2, sr_ratios=(4, 1)), 6, r"stage 1 has a 3x3 map.*\[0\]=4"),
        (dict(patch_size=2, sr_ratios=(4, 1)), 2, r"stage 1 has a 1x1 map.*\[0\]=4"),
        # a 4x4 image, patch 4: stage 2 would halve a 1x1 map to nothing
        (dict(patch_size=4, sr_ratios=(1, 1)), 4, r"stage 2 has a 0x0 map.*\[1\]=1"),
    ],
)
def test_an_image_too_small_for_a_stage_is_refused_as_the_constructor_refuses_it(
    build, size, message
):
    model = small_twins(image_size=32, channels=3, **build).eval()
    with pytest.raises(ValueError, match=message + ": GSA would have no key") as raised:
        model(torch.randn(1, 3, size, size))
    with pytest.raises(ValueError) as built:
        small_twins(image_size=size, channels=3, **build)
    assert str(raised.value) == str(built.value)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 10)  # large enough: runs


def test_bad_images_are_refused_with_the_rule():
    model = small_twins()
    with pytest.raises(ValueError, match="3 channels, the model was built with"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="image width 15 is not divisible by"):
        model(torch.randn(1, 1, 16, 15))


def test_gsa_reaches_the_whole_map_after_one_lsa_gsa_pair():
    # the reason Twins needs no shift: one GSA block after an LSA block makes every
    # output depend on every input, where LSA alone never leaves its window and Swin's
    # shifted windows grow the reach a ring of windows at a time
    from vitbook import viz

    reach = {
        name: [float(r.float().mean()) for r in viz.gradient_reach(blocks, 16, 16, (7, 7))]
        for name, blocks in viz.stack_kinds(side=16, window_size=4, sr_ratio=4).items()
    }
    assert reach["LSA alone"] == [1 / 16] * 4
    assert reach["Twins (LSA, GSA)"] == [1 / 16, 1.0, 1.0, 1.0]
    swin = reach["Swin (W-MSA, SW-MSA)"]
    assert swin[0] == 1 / 16 and swin == sorted(swin) and swin[1] < 1.0
