"""ScalableViT has no pip reference: its behaviour is pinned by invariants (what each
attention may read, what it reduces to in the limit) and by the official code's layout
(the order in which sub-layers run, the widths, the init)."""

import re

import pytest
import torch
import torch.nn.functional as F

from factories import randomize_
from factories import small_scalable_vit
from vitbook import record_attention
from vitbook.layers import Attention, FeedForward
from vitbook.models.scalable_vit import (
    InteractiveWindowAttention,
    OverlapPatchEmbed,
    ScalableAttention,
    ScalableViT,
    ScalableViTBlock,
    attention_flops,
)
from vitbook.models.twins import PEG


def window_of(h, w, k):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (ys // k * 100 + xs // k).flatten()  # (h*w,) a label per window


def neighbourhood(h, w, y, x, radius=1):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((ys - y).abs() <= radius) & ((xs - x).abs() <= radius)  # (h, w)


# ---------------------------------------------------------------- the official model
# tests/official_scalable_vit.py transcribes Yangr116/ScalableViT's classifier (plain
# head); its state dict converts to vitbook's names as a released checkpoint would.
OFFICIAL = dict(
    # 8x8, 4x4, 2x2 maps: windows 4, 2, 2 divide them (the official IWSA does not pad);
    # SSA reduces 4x4 and 2x2 cells, then is full attention (sr 1) with c_ratio 1.5 in
    # its scale; an odd depth (IWSA, SSA, IWSA), per-stage mlp ratios
    patch_size=4,
    in_chans=3,
    num_classes=10,
    embed_dims=(16, 32, 48),
    num_heads=(2, 2, 4),
    mlp_ratios=(4, 2, 3),
    depths=(2, 3, 2),
    sr_ratios=(4, 2, 1),
    wss=(4, 2, 2),
    c_ratios=(1.25, 0.5, 1.5),
)
OFFICIAL_IMAGE = 32


def official_scalable_vit(qkv_bias=True):
    from official_scalable_vit import ScalableViT as Official

    return Official(**OFFICIAL, qkv_bias=qkv_bias).eval()


def scalable_vit_from_official(official, image_size, qkv_bias=True) -> ScalableViT:
    """vitbook's ScalableViT holding the official model's weights."""
    c = OFFICIAL
    model = ScalableViT(
        image_size=image_size, num_classes=c["num_classes"],
        patch_size=c["patch_size"], dims=c["embed_dims"], depths=c["depths"],
        heads=c["num_heads"], window_sizes=c["wss"], sr_ratios=c["sr_ratios"],
        c_ratios=c["c_ratios"], mlp_ratios=c["mlp_ratios"], channels=c["in_chans"],
        qkv_bias=qkv_bias,
    )  # fmt: skip
    renames = [
        (r"^patch_embeds\.(\d+)\.", r"stages.\1.patch_embed."),
        (r"^pos_block\.(\d+)\.proj\.0\.", r"stages.\1.peg.proj."),
        (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
        (r"\.attn\.lim_func\.", ".attn.lim."),
        (r"\.attn\.reduction\.0\.", ".attn.spatial."),
        (r"\.attn\.reduction\.1\.", ".attn.channel."),
        (r"\.attn\.norm_act\.0\.", ".attn.norm."),
    ]
    state = {}
    for key, value in official.state_dict().items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        if ".attn.kv." in key:  # sr_ratio 1: one kv projection, keys first
            k, v = value.chunk(2)
            state[key.replace(".kv.", ".k.")], state[key.replace(".kv.", ".v.")] = k, v
        else:
            state[key] = value
    model.load_state_dict(state)  # strict: every parameter of both is used
    return model.to(next(official.parameters()).dtype).eval()


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_logits_match_the_official_model(qkv_bias, dtype, tol):
    official = randomize_(official_scalable_vit(qkv_bias), std=0.2).to(dtype)
    model = scalable_vit_from_official(official, OFFICIAL_IMAGE, qkv_bias)
    x = torch.randn(3, 3, OFFICIAL_IMAGE, OFFICIAL_IMAGE, dtype=dtype)
    with torch.no_grad():
        expected = official(x)
        assert expected.abs().max() > 0.1  # logits large enough for the bound to bite
        assert (model(x) - expected).abs().max().item() <= tol


def test_the_official_configuration_covers_both_ssa_kinds_and_an_odd_depth():
    model = scalable_vit_from_official(official_scalable_vit(), OFFICIAL_IMAGE)
    assert model.resolutions == [(8, 8), (4, 4), (2, 2)]
    kinds = [[b.kind for b in s.blocks] for s in model.stages]
    assert kinds == [["IWSA", "SSA"], ["IWSA", "SSA", "IWSA"], ["IWSA", "SSA"]]
    ssa = [s.blocks[1].attn for s in model.stages]
    assert [a.sr_ratio for a in ssa] == [4, 2, 1] and ssa[2].spatial is None
    assert ssa[2].scale == pytest.approx((12 * 1.5) ** -0.5)  # c_ratio at sr 1


# ---------------------------------------------------------------- SSA
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_ssa_with_reduction_one_and_c_ratio_one_is_full_attention(dtype, tol):
    ssa = randomize_(ScalableAttention(12, 3, sr_ratio=1, c_ratio=1), 0.3).to(dtype)
    full = Attention(12, 3).to(dtype)
    with torch.no_grad():
        full.qkv.weight.copy_(torch.cat([ssa.q.weight, ssa.k.weight, ssa.v.weight]))
        full.qkv.bias.copy_(torch.cat([ssa.q.bias, ssa.k.bias, ssa.v.bias]))
        full.proj.load_state_dict(ssa.proj.state_dict())
        x = torch.randn(2, 5, 6, 12, dtype=dtype)
        expected = full(x.reshape(2, 30, 12)).reshape(2, 5, 6, 12)
        assert (ssa(x) - expected).abs().max().item() <= tol


def test_ssa_reduces_keys_with_a_depthwise_conv_then_1x1_layernorm_gelu():
    # written out from the official code's operations, one after the other
    ssa = randomize_(ScalableAttention(8, 2, sr_ratio=2, c_ratio=1.5), 0.3).eval()
    assert ssa.spatial.groups == 8 and ssa.spatial.kernel_size == (2, 2)
    assert ssa.spatial.stride == (2, 2) and ssa.channel.kernel_size == (1, 1)
    x = torch.randn(2, 6, 4, 8)
    feat = x.permute(0, 3, 1, 2)  # (b, 8, 6, 4)
    reduced = F.conv2d(feat, ssa.spatial.weight, ssa.spatial.bias, 2, groups=8)
    reduced = F.conv2d(reduced, ssa.channel.weight, ssa.channel.bias)  # (b, 12, 3, 2)
    reduced = reduced.flatten(2).transpose(1, 2)  # (b, 6, 12)
    reduced = F.gelu(F.layer_norm(reduced, (12,), ssa.norm.weight, ssa.norm.bias))
    q = (x.reshape(2, 24, 8) @ ssa.q.weight.T + ssa.q.bias).reshape(2, 24, 2, 6)
    k = (reduced @ ssa.k.weight.T + ssa.k.bias).reshape(2, 6, 2, 6)
    v = (reduced @ ssa.v.weight.T + ssa.v.bias).reshape(2, 6, 2, 4)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (b, heads, n, d)
    weights = (q @ k.transpose(-2, -1) * (8 / 2 * 1.5) ** -0.5).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(2, 24, 8)
    expected = (out @ ssa.proj.weight.T + ssa.proj.bias).reshape(2, 6, 4, 8)
    torch.testing.assert_close(ssa(x), expected)


@pytest.mark.parametrize("c_ratio", [0.5, 1.25, 2.0])
def test_ssa_queries_and_keys_take_the_scaled_width_values_keep_the_block_width(
    c_ratio,
):
    ssa = ScalableAttention(16, 2, sr_ratio=2, c_ratio=c_ratio)
    width = int(16 * c_ratio)
    assert ssa.q.weight.shape == (width, 16)
    assert ssa.k.weight.shape == (width, width)
    assert ssa.v.weight.shape == (16, width)
    assert ssa.scale == pytest.approx((width / 2) ** -0.5)
    with torch.no_grad(), record_attention(ssa) as maps:
        out = ssa(torch.randn(1, 8, 6, 16))
    assert out.shape == (1, 8, 6, 16)
    assert maps[""][0].shape == (1, 2, 48, 4 * 3)  # every query, (8/2)(6/2) keys


def test_ssa_with_ratio_one_keeps_c_ratio_in_the_scale_only():
    # the official SSA at sr_ratio 1: q, k, v of the block's width, scale from c_ratio
    ssa = ScalableAttention(16, 2, sr_ratio=1, c_ratio=1.25)
    assert ssa.spatial is None and ssa.k.weight.shape == (16, 16)
    assert ssa.scale == pytest.approx((8 * 1.25) ** -0.5)


def test_an_ssa_token_depends_on_the_whole_map():
    block = randomize_(ScalableViTBlock(8, 2, sr_ratio=2), std=0.2).eval()
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    block(x)[0, 0, 0].sum().backward()
    assert (x.grad[0].abs().sum(-1) > 0).all()


# ---------------------------------------------------------------- IWSA
def dense_window_weights(weights, side, k):
    """Recorded ``(b * windows, heads, k*k, k*k)`` -> ``(b, heads, n, n)`` over the
    real tokens of a ``side x side`` map."""
    from vitbook.viz.twins import dense_lsa_weights

    return dense_lsa_weights(weights, side, side, k)


@pytest.mark.parametrize("side", [8, 10], ids=["divisible", "padded"])
def test_iwsa_never_attends_outside_its_window(side):
    k = 4
    iwsa = randomize_(InteractiveWindowAttention(8, 2, k), std=0.3).eval()
    with torch.no_grad(), record_attention(iwsa) as maps:
        iwsa(torch.randn(2, side, side, 8))
    (weights,) = maps[""]
    assert weights.shape == (2 * (-(-side // k)) ** 2, 2, k * k, k * k)
    dense = dense_window_weights(weights, side, k)
    label = window_of(side, side, k)
    outside = label[:, None] != label[None, :]
    assert dense.masked_select(outside).abs().max() == 0
    assert (dense.masked_select(~outside) > 0).all()


@pytest.mark.parametrize("side", [8, 10], ids=["divisible", "padded"])
def test_an_iwsa_token_reads_its_window_and_through_the_lim_its_3x3_neighbours(side):
    k, (y0, x0) = 4, (3, 4)  # a token at a window's corner: its 3x3 crosses windows
    iwsa = randomize_(InteractiveWindowAttention(8, 2, k), std=0.3).eval()
    x = torch.randn(1, side, side, 8, requires_grad=True)
    iwsa(x)[0, y0, x0].sum().backward()
    touched = x.grad[0].abs().sum(-1) > 0  # (side, side)
    window = window_of(side, side, k) == window_of(side, side, k)[y0 * side + x0]
    expected = window.reshape(side, side) | neighbourhood(side, side, y0, x0)
    assert torch.equal(touched, expected)
    # without the LIM, windows are blind to each other
    with torch.no_grad():
        iwsa.lim.weight.zero_()
    x.grad = None
    iwsa(x)[0, y0, x0].sum().backward()
    assert torch.equal(x.grad[0].abs().sum(-1) > 0, window.reshape(side, side))


def test_on_a_padded_map_the_lim_reads_zeros_past_the_border_not_the_padding():
    # 10x10 map, windows 4: padded to 12x12. The windows attend on the padded map (the
    # padded tokens are keys, as in Twins' LSA), but the LIM must read the real values
    # with zeros past the border, as on a map that needs no padding. A padded token's
    # value is the qkv bias, not zero: a LIM over the padded map would add it to every
    # query on the last row and the last column.
    iwsa = randomize_(InteractiveWindowAttention(8, 2, 4), std=0.3).eval()
    x = torch.randn(1, 10, 10, 8)
    with torch.no_grad():
        qkv = iwsa.qkv(F.pad(x, (0, 0, 0, 2, 0, 2)))  # (1, 12, 12, 24)
        # (qkv, b, windows, heads, tokens, d): 3x3 windows of 4x4 tokens, 2 heads
        q, k, v = qkv.view(1, 3, 4, 3, 4, 3, 2, 4).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = (t.reshape(1, 9, 2, 16, 4) for t in (q, k, v))
        out = (q @ k.transpose(-2, -1) * 4**-0.5).softmax(-1) @ v
        out = out.view(1, 3, 3, 2, 4, 4, 4).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(1, 12, 12, 8)[:, :10, :10]  # the real queries

        def lim(values):  # (1, h, w, 8) -> the depthwise 3x3, zero padding 1
            feat = values.permute(0, 3, 1, 2)
            feat = F.conv2d(feat, iwsa.lim.weight, iwsa.lim.bias, padding=1, groups=8)
            return feat.permute(0, 2, 3, 1)

        expected = iwsa.proj(out + lim(qkv[:, :10, :10, 16:]))
        over_padding = iwsa.proj(out + lim(qkv[..., 16:])[:, :10, :10])
        got = iwsa(x)
    border = torch.zeros(10, 10, dtype=torch.bool)
    border[-1], border[:, -1] = True, True
    gap = (over_padding - expected)[0].abs().amax(-1)  # (10, 10)
    assert gap[border].min() > 1e-3 and gap[~border].max() == 0  # where it shows
    torch.testing.assert_close(got[0, border], expected[0, border])
    torch.testing.assert_close(got, expected)


def test_the_lim_sees_only_a_3x3_neighbourhood_of_each_channel():
    iwsa = randomize_(InteractiveWindowAttention(6, 2, 4), std=0.3)
    v = torch.randn(1, 7, 9, 6, requires_grad=True)
    iwsa.local_interaction(v)[0, 3, 5, 2].backward()
    touched = v.grad[0] != 0  # (7, 9, 6)
    assert torch.equal(touched.any(-1), neighbourhood(7, 9, 3, 5))
    assert torch.equal(touched.any((0, 1)), torch.arange(6) == 2)  # its own channel


def test_the_lim_is_depthwise():
    # the seed's module is a full 3x3 convolution: C*C*9 + C parameters
    iwsa = InteractiveWindowAttention(16, 2, 4)
    assert iwsa.lim.groups == 16 and iwsa.lim.kernel_size == (3, 3)
    assert sum(p.numel() for p in iwsa.lim.parameters()) == 16 * 9 + 16


def test_the_lim_is_added_before_the_output_projection():
    iwsa = randomize_(InteractiveWindowAttention(8, 2, 4), std=0.3).eval()
    x = torch.randn(1, 4, 4, 8)  # one window: the attention is full attention
    with torch.no_grad():
        q, k, v = iwsa.qkv(x.reshape(1, 16, 8)).reshape(1, 16, 3, 2, 4).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (1, heads, 16, 4)
        weights = (q @ k.transpose(-2, -1) * 4**-0.5).softmax(-1)
        windows = (weights @ v).transpose(1, 2).reshape(1, 4, 4, 8)
        lim = iwsa.local_interaction(iwsa.qkv(x)[..., 16:])
        expected = iwsa.proj(windows + lim)
        torch.testing.assert_close(iwsa(x), expected)


# ---------------------------------------------------------------- the official order
def run_order(model, kinds, x):
    order = []
    for module in model.modules():
        for cls, name in kinds.items():
            if isinstance(module, cls):
                name = name(module) if callable(name) else name
                module.register_forward_hook(lambda m, i, o, n=name: order.append(n))
    with torch.no_grad():
        model(x)
    return order


def official_order(depths):
    """Per stage: IWSA, FF, PEG, SSA, FF, IWSA, FF, SSA, FF, ..."""
    order = []
    for depth in depths:
        for i in range(depth):
            order += ["SSA" if i % 2 else "IWSA", "FF"] + (["PEG"] if i == 0 else [])
    return order


def vitbook_order(model, x):
    kinds = {
        InteractiveWindowAttention: "IWSA",
        ScalableAttention: "SSA",
        FeedForward: "FF",
        PEG: "PEG",
    }
    return run_order(model.eval(), kinds, x)


def test_sub_layers_run_in_the_official_order():
    order = vitbook_order(small_scalable_vit(), torch.randn(1, 1, 16, 16))
    assert order[:9] == ["IWSA", "FF", "PEG", "SSA", "FF", "IWSA", "FF", "SSA", "FF"]
    assert order == official_order((4, 2))


def test_the_order_check_rejects_the_seeds_order():
    # the seed (vit-pytorch) builds [SSA, FF, PEG, FF, IWSA] per layer and unpacks it as
    # (ssa, ff1, peg, iwsa, ff2): two feed-forwards back to back, none after IWSA
    from vit_pytorch import scalable_vit as seed

    model = seed.ScalableViT(
        num_classes=10,
        dim=16,
        depth=(2, 1),
        heads=2,
        reduction_factor=(2, 1),
        window_size=4,
        channels=1,
    ).eval()
    kinds = {
        seed.ScalableSelfAttention: "SSA",
        seed.InteractiveWindowedSelfAttention: "IWSA",
        seed.FeedForward: "FF",
        seed.PEG: "PEG",
    }
    order = run_order(model, kinds, torch.randn(1, 1, 32, 32))
    assert order[:5] == ["SSA", "FF", "PEG", "FF", "IWSA"]
    assert order != official_order((4, 2))
    assert order[: len(official_order((2,)))] != official_order((2,))


def test_blocks_alternate_iwsa_and_ssa_starting_with_iwsa():
    model = small_scalable_vit(depths=(3, 2))
    kinds = [[b.kind for b in s.blocks] for s in model.stages]
    assert kinds == [["IWSA", "SSA", "IWSA"], ["IWSA", "SSA"]]


# ---------------------------------------------------------------- embedding, init
@pytest.mark.parametrize("patch, side", [(4, 32), (2, 14), (2, 7), (7, 28)])
def test_overlapping_patches_use_kernel_2p_minus_1_and_keep_ceil_h_over_p(patch, side):
    embed = OverlapPatchEmbed(patch, 3, 8)
    assert embed.proj.kernel_size == (2 * patch - 1,) * 2
    assert embed.proj.stride == (patch, patch)
    out = embed(torch.randn(1, side, side, 3))
    assert out.shape == (1, -(-side // patch), -(-side // patch), 8)


def test_neighbouring_patches_overlap():
    embed = randomize_(OverlapPatchEmbed(4, 1, 8), std=0.3)
    x = torch.randn(1, 16, 16, 1, requires_grad=True)
    embed(x)[0, 1, 1].sum().backward()
    rows = (x.grad[0, :, :, 0].abs().sum(1) > 0).nonzero().flatten().tolist()
    assert rows == list(range(1, 8))  # 7 rows: its own 4, and 3 of the patch above


def test_init_follows_the_official_code():
    model = ScalableViT(
        image_size=64,
        num_classes=10,
        dims=(64, 128),
        depths=(2, 2),
        heads=(2, 4),
        window_sizes=4,
        sr_ratios=(4, 1),
        c_ratios=(1.25, 1),
    )
    stage = model.stages[0]
    ssa = stage.blocks[1].attn
    expected = {  # He normal over the fan-out k*k*out/groups
        "patch": (2 / (49 * 64)) ** 0.5,
        "spatial": (2 / 16) ** 0.5,
        "channel": (2 / 80) ** 0.5,
        "lim": (2 / 9) ** 0.5,
        "peg": (2 / 9) ** 0.5,
    }
    measured = {
        "patch": stage.patch_embed.proj.weight.std().item(),
        "spatial": ssa.spatial.weight.std().item(),
        "channel": ssa.channel.weight.std().item(),
        "lim": stage.blocks[0].attn.lim.weight.std().item(),
        "peg": stage.peg.proj.weight.std().item(),
    }
    for key in expected:
        assert abs(measured[key] - expected[key]) < 0.15 * expected[key], key
    assert abs(ssa.q.weight.std().item() - 0.02) < 0.002
    assert ssa.k.bias.abs().max() == 0 and ssa.spatial.bias.abs().max() == 0


def test_peg_runs_after_the_first_block_and_is_left_out_of_weight_decay():
    model = small_scalable_vit()
    names = model.no_weight_decay()
    assert "stages.0.peg.proj.weight" in names
    assert "stages.0.blocks.0.attn.lim.weight" not in names


# ---------------------------------------------------------------- shapes and sizes
def test_features_are_a_map_and_every_stage_can_be_returned():
    model = small_scalable_vit(
        depths=(2, 2, 2),
        dims=(8, 16, 24),
        heads=(2, 2, 4),
        sr_ratios=(2, 1, 1),
        c_ratios=1,
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    assert model.forward_features(x).shape == (2, 24, 2, 2)
    shapes = [tuple(m.shape) for m in model.forward_intermediates(x)]
    assert shapes == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 24, 2, 2)]


def test_odd_maps_round_up_and_other_sizes_run():
    model = small_scalable_vit(image_size=28, patch_size=4).eval()  # 7x7 then 4x4
    assert model.resolutions == [(7, 7), (4, 4)]
    for size in (12, 28, 36):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


def test_the_default_is_scalable_vit_s_with_a_7x7_grid_of_ssa_keys_at_224():
    model = ScalableViT(
        image_size=224,
        num_classes=0,
        dims=(8,) * 4,
        depths=(2,) * 4,
        heads=(1,) * 4,
        c_ratios=(1.25, 1.25, 1.25, 1),
    ).eval()
    assert model.resolutions == [(56, 56), (28, 28), (14, 14), (7, 7)]
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(1, 3, 224, 224))
    keys = [maps[f"stages.{i}.blocks.1.attn"][0].shape[-1] for i in range(4)]
    assert keys == [49, 49, 49, 49]


def test_recorded_attention_gives_the_same_logits_as_sdpa():
    model = randomize_(small_scalable_vit(image_size=20), std=0.2).eval()
    x = torch.randn(2, 1, 20, 20)  # 10x10 tokens, windows 4: padded
    with torch.no_grad():
        plain = model(x)
        with record_attention(model) as maps:
            recorded = model(x)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert len(maps) == 6 and all(len(v) == 1 for v in maps.values())


def test_attention_flops_follow_the_formulas():
    h = w = 56
    n, c = h * w, 64
    assert attention_flops(h, w, c) == 4 * n * c**2 + 2 * n * n * c
    iwsa = attention_flops(h, w, c, window=7)
    assert iwsa == 4 * n * c**2 + 2 * 49 * n * c + 9 * n * c
    m, cc = 49, 80
    ssa = attention_flops(h, w, c, sr_ratio=8, c_ratio=1.25)
    projections = n * c * cc + m * cc * cc + m * cc * c + n * c * c
    assert ssa == projections + n * c + m * c * cc + n * m * cc + n * m * c
    assert attention_flops(h, w, c, sr_ratio=1) == attention_flops(h, w, c)
    with pytest.raises(ValueError, match="not both"):
        attention_flops(h, w, c, window=7, sr_ratio=2)


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(c_ratios=(1.1, 1)), r"c_ratios\[0\].*c_ratio=1.1.*17.6.*heads 2"),
        (dict(c_ratios=(1.25, 0)), r"c_ratios\[1\].*c_ratio=0.*> 0"),
        (dict(sr_ratios=(2, 8)), r"4x4 map.*sr_ratios\[1\]=8"),
        (dict(dims=(16, 30)), r"dim 30, not divisible by heads 4"),
        (dict(window_sizes=(4, 0)), r"window_sizes\[1\]=0 must be >= 1"),
        (dict(image_size=15), r"image height 15 is not divisible by patch_size 2"),
        (dict(c_ratios=(1, 1, 1)), r"c_ratios=\(1, 1, 1\).*one value per stage"),
        (dict(heads=(2,)), r"same number"),
    ],
)
def test_bad_arguments_name_the_argument_the_value_and_the_rule(kw, message):
    with pytest.raises(ValueError, match=message):
        small_scalable_vit(**kw)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(sr_ratios=(2.5, 1)), ValueError, r"sr_ratios\[0\]=2.5 must be a whole"),
        (dict(window_sizes=(4, 1.5)), ValueError, r"window_sizes\[1\]=1.5 must be"),
        (dict(window_sizes=None), TypeError, r"window_sizes\[0\]=None must be a"),
    ],
)
def test_fractional_sub_sampling_and_windows_are_refused_not_truncated(
    kw, error, message
):
    with pytest.raises(error, match=message):
        small_scalable_vit(**kw)
    with pytest.raises(ValueError, match=r"sr_ratio=2.5 must be a whole number"):
        ScalableAttention(8, 2, sr_ratio=2.5, c_ratio=1)
    with pytest.raises(ValueError, match=r"window_size=3.5 must be a whole number"):
        InteractiveWindowAttention(8, 2, window_size=3.5)


@pytest.mark.parametrize("size, side", [(6, 3), (2, 1)])
def test_an_image_too_small_for_a_stage_is_refused_as_the_constructor_refuses_it(
    size, side
):
    # built for 32 with sr 4 in stage 1: a 6x6 (2x2) image makes a 3x3 (1x1) map,
    # which the depthwise 4x4 reduction cannot cover (it raised Conv2d's own error)
    build = dict(image_size=32, channels=3, sr_ratios=(4, 1))
    model = small_scalable_vit(**build).eval()
    message = rf"stage 1 has a {side}x{side} map.*\[0\]=4: SSA would have no key"
    with pytest.raises(ValueError, match=message) as raised:
        model(torch.randn(1, 3, size, size))
    with pytest.raises(ValueError) as built:
        small_scalable_vit(**{**build, "image_size": size})
    assert str(raised.value) == str(built.value)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 10)  # large enough: runs


# ---------------------------------------------------------------- figures
def test_receptive_fields_count_window_lim_and_ssa_keys():
    from vitbook.viz.scalable_vit import scalable_receptive_fields

    # 8x8 map, windows 4, query (3, 4) at a window corner: its 3x3 reaches 3 windows
    fields = scalable_receptive_fields((8, 8), (3, 4), window_size=4, sr_ratio=2)
    (window, k2), (lim, n_lim), (covered, keys) = fields.values()
    assert (k2, n_lim, keys) == (16, 9, 16)
    assert int((lim & ~window).sum()) == 5 and covered.all()
    assert window[:4, 4:].all() and not window[4:].any()


def test_cost_measures_iwsa_and_ssa_and_says_where_memory_comes_from():
    from vitbook.viz.twins import attention_memory, measure_local_global_cost

    kinds = ("full", "LSA", "IWSA", "SSA")
    cost = measure_local_global_cost(
        sides=(8, 16), dim=8, heads=2, window_size=4, sr_ratio=4, repeats=1,
        kinds=kinds, c_ratio=0.5,
    )  # fmt: skip
    assert set(cost["seconds"]) == set(cost["memory"]) == set(kinds)
    assert ("measured" if torch.cuda.is_available() else "computed from shapes") in (
        cost["memory_source"]
    )
    # every head's logits: 2 heads x n queries x n / r^2 keys
    assert cost["logits"]["SSA"] == [2 * 64 * 4, 2 * 256 * 16]
    assert cost["logits"]["full"] == [2 * 64 * 64, 2 * 256 * 256]
    # the attention matrix is what grows: full attention holds heads * n^2 weights
    n = 256
    full = attention_memory("full", 16, 8, 2, 4, 4)
    assert full == 4 * (n * 8 * 6 + 2 * n * n)
    assert attention_memory("IWSA", 16, 8, 2, 4, 4) > attention_memory(
        "LSA", 16, 8, 2, 4, 4
    )  # the LIM's output
    with pytest.raises(ValueError, match="subset of"):
        measure_local_global_cost(kinds=("full", "PVT"))
