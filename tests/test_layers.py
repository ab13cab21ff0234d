import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vitbook.layers import (
    Attention,
    Block,
    DropPath,
    PatchEmbed,
    attention_weights,
    pair,
    patch_grid,
    posemb_sincos_2d,
    record_attention,
    renamed,
    resample_pos_embed,
    sdpa_falls_back,
)


def test_sdpa_path_equals_recorded_softmax_path():
    attn = Attention(dim=32, heads=4).eval()
    x = torch.randn(3, 10, 32)
    fast = attn(x)
    with record_attention(attn) as maps:
        slow = attn(x)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    assert maps[""][0].shape == (3, 4, 10, 10)


def test_sdpa_path_equals_recorded_path_with_mask_and_bias():
    attn = Attention(dim=32, heads=4).eval()
    x = torch.randn(2, 9, 32)
    mask = torch.rand(2, 1, 9, 9) > 0.3
    mask[..., 0] = True  # every query may attend somewhere
    bias = torch.randn(1, 4, 9, 9)
    fast = attn(x, mask=mask, bias=bias)
    with record_attention(attn) as maps:
        slow = attn(x, mask=mask, bias=bias)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    weights = maps[""][0]
    assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0), (
        "a masked key received attention"
    )
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))


def test_recorded_weights_are_softmax_of_scaled_logits():
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
    torch.testing.assert_close(attention_weights(q, k), expected)


def test_recording_stops_when_the_context_ends():
    block = Block(16, heads=2, mlp_dim=32)
    with record_attention(block) as maps:
        block(torch.randn(1, 4, 16))
    block(torch.randn(1, 4, 16))
    assert len(maps["attn"]) == 1 and block.attn.recorded is None


def test_record_attention_rejects_a_model_without_attention():
    with pytest.raises(ValueError, match="no vitbook.layers.Attention"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass


def test_mask_must_be_boolean():
    attn = Attention(dim=8, heads=2)
    with pytest.raises(TypeError, match="bool"):
        attn(torch.randn(1, 3, 8), mask=torch.ones(1, 1, 3, 3))


def test_heads_must_divide_dim_unless_dim_head_is_given():
    with pytest.raises(ValueError, match="dim 30 is not divisible by heads 4"):
        Attention(dim=30, heads=4)
    assert Attention(dim=30, heads=4, dim_head=8).qkv.out_features == 3 * 32


def test_patch_embed_is_a_linear_map_of_row_major_flattened_patches():
    embed = PatchEmbed(image_size=(4, 6), patch_size=2, channels=3, dim=5)
    img = torch.randn(1, 3, 4, 6)
    tokens = embed(img)
    assert tokens.shape == (1, 6, 5)
    # token 4 is row 1, column 1 of the 2x3 patch grid: pixels [2:4, 2:4]
    patch = img[0, :, 2:4, 2:4].permute(1, 2, 0).reshape(-1)  # (p1 p2 c)
    torch.testing.assert_close(tokens[0, 4], embed.proj(patch))


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            (2, 3, 30, 32),
            "image size 30x32 does not match the model's image_size 32x32",
        ),
        ((2, 1, 32, 32), "image has 1 channels, the model was built with channels=3"),
        ((3, 32, 32), "expected images of shape"),
    ],
)
def test_patch_embed_names_what_is_wrong_with_the_input(shape, message):
    embed = PatchEmbed(32, 4, channels=3, dim=8)
    with pytest.raises(ValueError, match=message):
        embed(torch.randn(*shape))


def test_patch_size_must_divide_the_image():
    with pytest.raises(
        ValueError, match="image height 30 is not divisible by patch_size 4"
    ):
        PatchEmbed((30, 32), 4, channels=3, dim=8)
    with pytest.raises(
        ValueError, match="image width 30 is not divisible by patch_size 4"
    ):
        PatchEmbed((32, 30), 4, channels=3, dim=8)


def test_patch_grid_is_the_one_rule_every_patch_embedding_checks():
    assert patch_grid((28, 20), (7, 5)) == (4, 4)
    assert patch_grid(16, 4) == (4, 4)
    with pytest.raises(
        ValueError, match="image width 10 is not divisible by patch_size 4"
    ):
        patch_grid((16, 10), 4)
    # 0 is divisible by anything, yet leaves no patch
    with pytest.raises(
        ValueError, match="max_image_size height 0 is smaller than patch_size 4"
    ):
        patch_grid((0, 16), 4, name="max_image_size")
    with pytest.raises(ValueError, match="patch_size 0 must be >= 1"):
        patch_grid(16, (4, 0))


def test_a_resized_patch_embedding_keeps_the_rule_and_its_grid():
    embed = PatchEmbed(32, 4, channels=1, dim=8)
    embed.set_image_size((16, 24))
    assert embed.image_size == (16, 24) and embed.grid == (4, 6)
    with pytest.raises(ValueError, match="image height 18 is not divisible"):
        embed.set_image_size((18, 24))


def test_an_old_keyword_still_reaches_its_new_name_with_a_deprecation_warning():
    @renamed(attn_dropout="attn_drop")
    def build(dim, attn_drop=0.0):
        return dim, attn_drop

    assert build(8, attn_drop=0.1) == (8, 0.1)
    with pytest.warns(
        DeprecationWarning,
        match=r"build\(\): attn_dropout= is the old name of attn_drop=",
    ):
        assert build(8, attn_dropout=0.2) == (8, 0.2)
    with pytest.raises(TypeError, match="got attn_dropout= and attn_drop="):
        build(8, attn_dropout=0.2, attn_drop=0.2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'attn_dropuot'"):
        build(8, attn_dropuot=0.2)


def test_block_takes_mlp_ratio_as_every_model_does_and_mlp_dim_as_before():
    assert Block(16, 2).mlp.fc1.out_features == 64
    assert Block(16, 2, mlp_ratio=1.5).mlp.fc1.out_features == 24
    # the third argument stays the hidden width, for the callers that pass it so
    assert Block(16, 2, 40).mlp.fc1.out_features == 40
    with pytest.raises(ValueError, match=r"mlp_ratio=0.0 must be > 0"):
        Block(16, 2, mlp_ratio=0.0)
    with pytest.warns(DeprecationWarning, match="attn_dropout= is the old name"):
        assert Block(16, 2, attn_dropout=0.3).attn.attn_drop == 0.3


def test_sincos_embedding_gives_every_position_its_own_unit_scale_code():
    pos = posemb_sincos_2d(4, 6, 32)
    assert pos.shape == (24, 32)
    assert pos.abs().max() <= 1.0
    # sin^2 + cos^2 = 1 for each of the dim/4 frequencies of y and of x
    torch.testing.assert_close(pos.pow(2).sum(1), torch.full((24,), 16.0))
    assert torch.cdist(pos, pos).add(torch.eye(24)).min() > 0.1, (
        "two positions share an embedding"
    )
    # neighbours are more alike than distant positions
    assert torch.dist(pos[0], pos[1]) < torch.dist(pos[0], pos[5])


def test_sincos_needs_a_dim_divisible_by_four():
    with pytest.raises(ValueError, match="dim 30 must be divisible by 4"):
        posemb_sincos_2d(2, 2, 30)


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    drop = DropPath(0.5).train()
    x = torch.ones(4000, 3, 2)
    y = drop(x)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1)), (
        "a sample was only partly dropped"
    )
    assert abs(y.mean().item() - 1.0) < 0.06
    assert torch.equal(drop.eval()(x), x)


def test_drop_path_rejects_a_probability_of_one():
    with pytest.raises(ValueError, match=r"p=1.0 must be in \[0, 1\)"):
        DropPath(1.0)


def test_pair():
    assert pair(3) == (3, 3) and pair((2, 5)) == (2, 5)
    with pytest.raises(ValueError):
        pair((1, 2, 3))


def test_a_learned_bias_on_the_cpu_takes_the_explicit_path_with_sdpas_results():
    torch.manual_seed(0)
    attn = Attention(dim=32, heads=4).double()
    x = torch.randn(3, 10, 32, dtype=torch.float64)
    table = torch.randn(4, 10, 10, dtype=torch.float64, requires_grad=True)

    out = attn(x, bias=table[None])
    assert sdpa_falls_back(x, table)
    with torch.no_grad():
        assert not sdpa_falls_back(x, table)
    (grad_explicit,) = torch.autograd.grad(out.square().sum(), table)

    q, k, v = rearrange(attn.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=4)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=table[None])
    reference = attn.proj(rearrange(fused, "b h n d -> b n (h d)"))
    (grad_fused,) = torch.autograd.grad(reference.square().sum(), table)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_explicit, grad_fused, rtol=0, atol=1e-10)


@pytest.mark.parametrize("grid", [(3, 4), (9, 5)])
def test_position_embedding_is_resampled_as_timm_does(grid):
    from timm.layers import resample_abs_pos_embed

    table = torch.randn(1, 1 + 7 * 6, 16)  # a class token and a 7x6 grid
    ours = resample_pos_embed(table, grid, (7, 6), num_prefix_tokens=1)
    theirs = resample_abs_pos_embed(table, list(grid), [7, 6], num_prefix_tokens=1)
    assert ours.shape == (1, 1 + grid[0] * grid[1], 16)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert torch.equal(ours[:, :1], table[:, :1])


def test_resampling_to_the_own_grid_returns_the_table_itself():
    table = torch.randn(1, 12, 8)
    assert resample_pos_embed(table, (3, 4), (3, 4)) is table


def test_a_float64_table_is_resampled_in_float64():
    table = torch.randn(1, 7 * 6, 16, dtype=torch.float64)
    out = resample_pos_embed(table, (3, 4), (7, 6))
    in_float32 = resample_pos_embed(table.float(), (3, 4), (7, 6)).double()
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, in_float32, atol=1e-6, rtol=0)
    assert not torch.equal(out, out.float().double()), "rounded through float32"


def test_resample_pos_embed_refuses_a_table_of_another_grid():
    with pytest.raises(ValueError, match=r"pos_embed has 13 rows, but .* needs 12"):
        resample_pos_embed(torch.zeros(1, 13, 4), (2, 2), (3, 4))
