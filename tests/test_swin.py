import pytest
import timm
import torch

from factories import randomize_
from vitbook import record_attention
from vitbook.models.swin import (
    MASK_FILL,
    PatchMerging,
    Swin,
    SwinBlock,
    relative_position_index,
    shift_mask,
    window_partition,
    window_reverse,
)
from vitbook.reference import swin_from_timm

CONFIGS = {
    # 16x16 then 8x8 tokens, window 4: both stages have a W-MSA and an SW-MSA block
    "two-stages-shifted": dict(
        img_size=32,
        patch_size=2,
        in_chans=3,
        num_classes=10,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=4,
    ),
    # third stage is 2x2 < window 4: clamped to 2x2 and unshifted; grey input, mlp_ratio 2
    "three-stages-clamped": dict(
        img_size=32,
        patch_size=4,
        in_chans=1,
        num_classes=7,
        embed_dim=24,
        depths=(2, 2, 2),
        num_heads=(3, 3, 6),
        window_size=4,
        mlp_ratio=2.0,
    ),
    # 12x12 and 6x6 maps with window 5: padded to 15x15 and 10x10 (unshifted blocks only: timm rolls
    # before padding, the official detection code and vitbook pad first; they agree without shifts)
    "padded": dict(
        img_size=24,
        patch_size=2,
        in_chans=3,
        num_classes=5,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=5,
    ),
    # a non-square window (4 rows, 2 columns) on a non-square image
    "non-square": dict(
        img_size=(32, 16),
        patch_size=2,
        in_chans=3,
        num_classes=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 2),
        window_size=(4, 2),
    ),
}


def timm_swin(**cfg):
    return randomize_(timm.models.swin_transformer.SwinTransformer(**cfg)).eval()


def images(cfg, n=4, dtype=torch.float32):
    return torch.randn(
        n, cfg["in_chans"], *timm.layers.to_2tuple(cfg["img_size"]), dtype=dtype
    )


# --------------------------------------------------------------------------- parity with timm
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_timm_in_float32(name):
    reference = timm_swin(**CONFIGS[name])
    model = swin_from_timm(reference).eval()
    x = images(CONFIGS[name])
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_timm_in_float64(name):
    reference = timm_swin(**CONFIGS[name]).double()
    model = swin_from_timm(reference).eval()
    x = images(CONFIGS[name], n=2, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-10


def test_parity_config_has_shifted_and_unshifted_blocks_in_every_stage():
    model = swin_from_timm(timm_swin(**CONFIGS["two-stages-shifted"]))
    for stage in model.stages:
        assert [block.shifted for block in stage.blocks] == [False, True]
        assert stage.blocks[1].shift_size == (2, 2)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_every_stage_map_matches_timm_intermediates(dtype, tol):
    cfg = CONFIGS["three-stages-clamped"]
    reference = timm_swin(**cfg).to(dtype)
    model = swin_from_timm(reference).eval()
    x = images(cfg, dtype=dtype)
    with torch.no_grad():
        ours = model.forward_intermediates(x)
        # NCHW, only the last one normalized
        theirs = reference.forward_intermediates(x, norm=True, intermediates_only=True)
    assert [tuple(m.shape) for m in ours] == [
        (4, 24, 8, 8),
        (4, 48, 4, 4),
        (4, 96, 2, 2),
    ]
    for a, b in zip(
        ours, theirs
    ):  # unnormalized maps reach ~50: the bound scales with them
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0)


def test_converter_refuses_a_shifted_block_on_a_padded_map():
    # 12x12 tokens, window 5: padded to 15x15, and the second block shifts. timm rolls then
    # pads, vitbook pads then rolls: different models (logits differ by ~0.4), so no conversion.
    cfg = dict(
        img_size=24,
        patch_size=2,
        window_size=5,
        depths=(2, 2),
        embed_dim=16,
        num_heads=(2, 2),
        num_classes=5,
    )
    reference = timm_swin(**cfg)
    with pytest.raises(
        ValueError, match="timm rolls before padding, vitbook pads before rolling"
    ):
        swin_from_timm(reference)


def test_converter_accepts_a_padded_map_without_shifted_blocks():
    model = swin_from_timm(timm_swin(**CONFIGS["padded"]))
    stage = model.stages[0]
    assert stage.resolution == (12, 12) and stage.window_size == (5, 5)
    assert not any(block.shifted for s in model.stages for block in s.blocks)


def test_converter_refuses_what_vitbook_does_not_have():
    always = timm.models.swin_transformer.SwinTransformer(
        img_size=32,
        patch_size=4,
        embed_dim=16,
        depths=(2,),
        num_heads=(2,),
        window_size=16,
        always_partition=True,
    )
    with pytest.raises(ValueError, match="always_partition"):
        swin_from_timm(always)
    per_stage = timm.models.swin_transformer.SwinTransformer(
        img_size=32,
        patch_size=2,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 2),
        window_size=((4, 4), (2, 2)),
    )
    with pytest.raises(ValueError, match="per-stage windows"):
        swin_from_timm(per_stage)


# ---------------------------------------------------- parity with the detection code
# Maps the window does not divide, with shifted blocks: vitbook pads then rolls, as the
# official detection code (tests/official_swin_det.py transcribes its stage). Every
# stage of these models is padded and shifted, and on every one timm's roll-then-pad
# gives another output (test below), so the parity says which order vitbook runs.
DETECTION_CONFIGS = {
    # 12x12 then 6x6 tokens, window 5, shift 2: padded by 3, then by 4
    "12x12-window-5": dict(image_size=24, window_size=5),
    # 9x14 then 5x7 tokens, window 4, shift 2: padded by 3 rows, then 3 rows, 1 column
    "9x14-window-4": dict(image_size=(18, 28), window_size=4),
}


def detection_pair(name, dtype):
    """A vitbook Swin (random weights) and, per stage, the detection code's layer
    holding the same block weights."""
    from official_swin_det import BasicLayer

    kw = DETECTION_CONFIGS[name]
    model = small_swin(channels=3, **kw)
    model = randomize_(model, std=0.3).to(dtype).eval()
    layers = []
    for stage in model.stages:
        (m, _), heads = stage.window_size, stage.blocks[0].attn.heads
        layer = BasicLayer(stage.blocks[0].norm1.normalized_shape[0], 2, heads, m)
        for official, ours in zip(layer.blocks, stage.blocks):
            official.load_state_dict(ours.state_dict())
        layers.append(layer.to(dtype))
    return model, layers


@pytest.mark.parametrize("name", DETECTION_CONFIGS)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_padded_shifted_stages_match_the_official_detection_code(name, dtype, tol):
    model, layers = detection_pair(name, dtype)
    x = model.embed(torch.randn(2, 3, *pair_of(model.image_size), dtype=dtype))
    with torch.no_grad():
        for stage, layer in zip(model.stages, layers):
            assert stage.blocks[1].shifted
            merged = stage.merge(x)  # (b, h, w, c): the detection layer's input
            b, h, w, c = merged.shape
            assert h % stage.window_size[0] or w % stage.window_size[1]  # padded
            theirs = layer(merged.reshape(b, h * w, c), h, w).reshape(b, h, w, c)
            x = stage(x)
            assert (x - theirs).abs().max().item() <= tol


def pair_of(size):
    return size if isinstance(size, tuple) else (size, size)


def timm_order_stage(stage, x):
    """The stage's blocks run by timm's block, which rolls the map, then pads it."""
    from timm.models.swin_transformer import SwinTransformerBlock

    for block in stage.blocks:
        reference = SwinTransformerBlock(
            x.shape[-1], x.shape[1:3], block.attn.heads,
            window_size=block.window_size, shift_size=block.shift_size,
        ).to(x.dtype).eval()  # fmt: skip
        missing, unexpected = reference.load_state_dict(
            block.state_dict(), strict=False
        )
        assert not unexpected and all("index" in k for k in missing)  # buffers only
        x = reference(x)
    return x


@pytest.mark.parametrize(
    "height, width, window, differ",
    [(12, 12, 5, True), (9, 14, 4, True), (6, 6, 5, True), (5, 7, 4, True),
     (10, 10, 4, False), (10, 14, 4, False)],
)  # fmt: skip
def test_rolling_before_padding_is_another_model_on_these_maps(
    height, width, window, differ
):
    # the parity above means something only where the two orders differ. They agree
    # where the padding equals the shift and the window is twice the shift (10x10 and
    # 10x14 with window 4): the padded and the wrapped rows then swap places, each a
    # region of its own, and the real tokens see the same keys
    from vitbook.models.swin import Stage

    stage = Stage(16, 16, 2, 2, (height, width), window, False, [0.0, 0.0])
    stage = randomize_(stage, std=0.3).double().eval()
    x = torch.randn(2, height, width, 16, dtype=torch.float64)
    with torch.no_grad():
        gap = (stage(x) - timm_order_stage(stage, x)).abs().max().item()
    assert (gap > 0.1) if differ else (gap < 1e-10)


# --------------------------------------------------------------------------- windows
@pytest.mark.parametrize("window", [2, (3, 2), (6, 4)])
def test_window_partition_then_reverse_is_identity(window):
    x = torch.randn(2, 6, 8, 5)
    windows = window_partition(x, window)
    wh, ww = (window, window) if isinstance(window, int) else window
    assert windows.shape == (2 * (6 // wh) * (8 // ww), wh * ww, 5)
    assert torch.equal(window_reverse(windows, window, 6, 8), x)


def test_window_partition_has_the_official_layout():
    # the official code: view into (b, H/M, M, W/M, M, c), permute to windows, flatten, batch-major
    x = torch.randn(2, 8, 12, 3)
    official = x.view(2, 2, 4, 3, 4, 3).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, 3)
    assert torch.equal(window_partition(x, 4), official)


def test_shift_mask_matches_the_hand_derived_pattern():
    # a 4x4 map, window 2, shift 1: after the roll, the last row and the last column wrapped around.
    # window 0 (top-left) holds neighbours only; window 1 (top-right) splits by column (col 2 | col 3);
    # window 2 (bottom-left) by row; window 3 (corner) into four regions, so each token sees itself.
    # tokens in a window are numbered row-major: 0 1 / 2 3
    o, x = 0.0, MASK_FILL
    expected = torch.tensor(
        [
            [[o, o, o, o], [o, o, o, o], [o, o, o, o], [o, o, o, o]],
            [[o, x, o, x], [x, o, x, o], [o, x, o, x], [x, o, x, o]],
            [[o, o, x, x], [o, o, x, x], [x, x, o, o], [x, x, o, o]],
            [[o, x, x, x], [x, o, x, x], [x, x, o, x], [x, x, x, o]],
        ]
    )
    assert torch.equal(shift_mask(4, 4, 2, 1), expected)


def official_three_slice_mask(h, w, m, s):
    """The official construction, written out: three slices per axis, a counter per region."""
    labels = torch.zeros(h, w)
    count = 0
    for rows in (slice(0, -m), slice(-m, -s), slice(-s, None)):
        for cols in (slice(0, -m), slice(-m, -s), slice(-s, None)):
            labels[rows, cols] = count
            count += 1
    windows = labels.view(h // m, m, w // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize(
    "h, w, m, s",
    [(4, 4, 2, 1), (8, 8, 4, 2), (14, 14, 7, 3), (12, 18, 6, 3), (9, 9, 3, 1)],
)
def test_two_labels_per_axis_give_the_official_three_slice_mask(h, w, m, s):
    assert torch.equal(shift_mask(h, w, m, s), official_three_slice_mask(h, w, m, s))


def test_relative_index_depends_only_on_the_offset():
    wh, ww = 3, 4
    index = relative_position_index((wh, ww))
    pos = [(i // ww, i % ww) for i in range(wh * ww)]
    by_offset = {}
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            by_offset.setdefault((yi - yj, xi - xj), set()).add(index[i, j].item())
    assert all(
        len(rows) == 1 for rows in by_offset.values()
    )  # one table row per offset ...
    assert (
        len({r for rows in by_offset.values() for r in rows})
        == len(by_offset)
        == (2 * wh - 1) * (2 * ww - 1)
    )


@pytest.mark.parametrize("window", [2, 7, (3, 5)])
def test_relative_index_is_antisymmetric_about_the_centre_of_the_table(window):
    # offset(j, i) = -offset(i, j): the rows mirror through the table's centre, the "zero offset" row
    wh, ww = (window, window) if isinstance(window, int) else window
    index = relative_position_index(window)
    size = (2 * wh - 1) * (2 * ww - 1)
    assert torch.equal(index + index.T, torch.full_like(index, size - 1))
    assert torch.equal(index.diagonal(), torch.full((wh * ww,), (size - 1) // 2))


def test_patch_merging_concatenates_in_the_official_order():
    merge = randomize_(PatchMerging(3))
    x = torch.randn(2, 6, 4, 3)
    x0, x1, x2, x3 = (
        x[:, 0::2, 0::2],
        x[:, 1::2, 0::2],
        x[:, 0::2, 1::2],
        x[:, 1::2, 1::2],
    )
    official = merge.reduction(merge.norm(torch.cat([x0, x1, x2, x3], -1)))
    torch.testing.assert_close(merge(x), official)


def test_patch_merging_pads_odd_maps():
    assert PatchMerging(4)(torch.randn(1, 7, 5, 4)).shape == (1, 4, 3, 8)


# --------------------------------------------------------------------------- invariants of the shifted windows
def small_swin(**kw):
    cfg = dict(
        image_size=16,
        patch_size=2,
        num_classes=10,
        dim=16,
        depths=(2, 2),
        heads=(2, 2),
        window_size=4,
        channels=1,
        drop_path=0.0,
    )
    return Swin(**{**cfg, **kw})


def same_region(h, w, m, s):
    """For each shifted window, whether two of its tokens were neighbours before the roll (no wrap-around).

    Derived from the tokens' original coordinates, independently of vitbook's mask code."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    orig_y, orig_x = (
        (ys + s) % h,
        (xs + s) % w,
    )  # the roll by -s moved the token at (y+s, x+s) to (y, x)
    win = lambda t: window_partition(t[None, :, :, None], m)[..., 0]  # (windows, N)
    dy = win(orig_y)[:, :, None] - win(orig_y)[:, None, :]
    dx = win(orig_x)[:, :, None] - win(orig_x)[:, None, :]
    sy = win(ys)[:, :, None] - win(ys)[:, None, :]
    sx = win(xs)[:, :, None] - win(xs)[:, None, :]
    return (dy == sy) & (dx == sx)  # (windows, N, N)


@pytest.mark.parametrize(
    "image_size, window", [(16, 4), (20, 4)], ids=["divisible", "padded"]
)
def test_shifted_windows_never_attend_across_regions(image_size, window):
    model = small_swin(image_size=image_size, window_size=window).eval()
    block = model.stages[0].blocks[1]
    assert block.shifted
    h = -(-image_size // 2 // window) * window  # the padded map
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(3, 1, image_size, image_size))
    weights = maps["stages.0.blocks.1.attn"][0]  # (b * windows, heads, N, N)
    weights = weights.reshape(3, -1, *weights.shape[1:])  # (b, windows, heads, N, N)
    allowed = same_region(h, h, window, window // 2)[
        None, :, None
    ]  # (1, windows, 1, N, N)
    assert not allowed.all()  # some pairs are forbidden, else the test proves nothing
    assert (
        weights.masked_select(~allowed).max().item() < 1e-30
    )  # exp(-100) ~ 4e-44: zero for all purposes
    assert torch.allclose(weights.sum(-1), torch.ones(()))


@pytest.mark.parametrize("shift", [0, 2])
def test_a_token_depends_only_on_the_tokens_of_its_window_and_region(shift):
    torch.manual_seed(0)
    block = randomize_(SwinBlock(8, 2, window_size=4, shift_size=shift), std=0.2).eval()
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    y0, x0 = 5, 2  # a token near the seam of the shifted windows
    block(x)[0, y0, x0].sum().backward()
    touched = (
        x.grad[0].abs().sum(-1) > 1e-20
    )  # (8, 8): which input tokens reach the output at (y0, x0)
    # expected: tokens in the same (shifted) window and, when shifted, in the same region
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    wy, wx = (
        (ys - shift) % 8 // 4,
        (xs - shift) % 8 // 4,
    )  # the window each token falls in after the roll
    wrapped_y, wrapped_x = (ys - shift) % 8 >= 8 - shift, (xs - shift) % 8 >= 8 - shift
    expected = (wy == wy[y0, x0]) & (wx == wx[y0, x0])
    if shift:
        expected &= (wrapped_y == wrapped_y[y0, x0]) & (wrapped_x == wrapped_x[y0, x0])
    assert torch.equal(touched, expected)


def test_shift_mask_is_built_once_per_resolution():
    model = small_swin().eval()
    block = model.stages[0].blocks[1]
    with torch.no_grad():
        model(torch.randn(2, 1, 16, 16))
        first = dict(block._masks)
        model(torch.randn(5, 1, 16, 16))
    assert list(block._masks) == list(first) and all(
        block._masks[k] is first[k] for k in first
    )
    with torch.no_grad():
        model(
            torch.randn(1, 1, 24, 24)
        )  # another size: one more mask, the first is kept
    assert len(block._masks) == 2
    assert not model.stages[0].blocks[0]._masks  # unshifted blocks need none


def test_window_larger_than_the_map_is_clamped_and_unshifted():
    model = small_swin(image_size=16, window_size=6)  # maps 8x8 then 4x4
    assert model.resolutions == [(8, 8), (4, 4)]
    assert [b.window_size for b in model.stages[1].blocks] == [(4, 4), (4, 4)]
    assert [b.shift_size for b in model.stages[1].blocks] == [(0, 0), (0, 0)]
    assert model.stages[0].blocks[1].shift_size == (3, 3)  # 8 > 6: kept, padded to 12
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_recorded_attention_gives_the_same_logits_as_sdpa():
    model = randomize_(small_swin(), std=0.2).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        plain = model(x)
        with record_attention(model) as maps:
            recorded = model(x)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert len(maps) == 4 and all(len(v) == 1 for v in maps.values())


def test_features_are_a_map_and_every_stage_can_be_returned():
    model = small_swin(depths=(2, 2, 2), heads=(2, 2, 4)).eval()
    x = torch.randn(2, 1, 16, 16)
    assert model.forward_features(x).shape == (2, 64, 2, 2)
    shapes = [tuple(m.shape) for m in model.forward_intermediates(x)]
    assert shapes == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (
        2,
        64,
    )


def test_other_image_sizes_are_padded_to_whole_windows():
    model = small_swin().eval()
    for size in (12, 18, 36):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


def test_drop_path_grows_with_depth_and_is_off_in_eval():
    model = small_swin(drop_path=0.3)
    rates = [block.drop_path.p for stage in model.stages for block in stage.blocks]
    assert (
        rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    )
    x = torch.randn(2, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------- errors
def test_bad_images_are_refused_with_the_rule():
    model = small_swin()
    with pytest.raises(
        ValueError, match="3 channels, the model was built with channels=1"
    ):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(
        ValueError, match="image height 15 is not divisible by patch_size 2"
    ):
        model(torch.randn(1, 1, 15, 16))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(image_size=15), "image height 15 is not divisible by patch_size 2"),
        (dict(heads=(3, 3)), "stage 1 has dim 16 .* not divisible by heads 3"),
        (dict(depths=(2, 2, 2)), "must name the same number"),
        (dict(window_size=0), "window_size=0 must be positive"),
        (dict(depths=(2, 0)), "depth >= 1"),
    ],
)
def test_bad_configurations_are_refused_with_the_rule(kw, message):
    with pytest.raises(ValueError, match=message):
        small_swin(**kw)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(window_size=2.5), ValueError, r"window_size=2.5 must be a whole number"),
        (dict(window_size=(4, 2.5)), ValueError, r"\(4, 2.5\) must be whole numbers"),
        (dict(window_size="4"), TypeError, r"window_size='4' must be a whole number"),
        (dict(patch_size=2.0000001), ValueError, r"patch_size=2.0000001 must be a"),
    ],
)
def test_fractional_windows_are_refused_not_truncated(kw, error, message):
    # int() would make a window of 2.5 a window of 2 without a word
    with pytest.raises(error, match=message):
        small_swin(**kw)


def test_whole_floats_are_kept_and_a_fractional_shift_is_refused():
    assert small_swin(window_size=4.0).stages[0].window_size == (4, 4)
    with pytest.raises(ValueError, match=r"shift_size=1.5 must be a whole number"):
        SwinBlock(8, 2, window_size=4, shift_size=1.5)


def test_a_shift_outside_the_window_is_refused():
    with pytest.raises(
        ValueError, match=r"shift_size \(4, 4\) must be in \[0, window_size\)"
    ):
        SwinBlock(8, 2, window_size=4, shift_size=4)


# --------------------------------------------------------------------------- figures
def test_every_swin_figure_draws_and_the_cost_is_measured():
    import matplotlib.figure

    from vitbook.viz import swin as figures

    photo = torch.rand(3, 64, 64)
    drawn = [
        figures.plot_windows(photo, 8, 4),
        figures.plot_cyclic_shift(photo, 8, 4),
        figures.plot_cyclic_shift(photo, 8, 4, shift=0),
        figures.plot_shift_masks(4),
        figures.plot_relative_position_bias(small_swin()),
    ]
    cost = figures.measure_attention_cost(
        sides=(4, 8), dim=8, heads=2, window_size=4, repeats=2
    )
    assert all(t > 0 for ts in cost["seconds"].values() for t in ts)
    assert cost["flops"]["global"][-1] > cost["flops"]["window"][-1]
    drawn.append(figures.plot_attention_cost(cost))
    assert all(isinstance(f, matplotlib.figure.Figure) for f in drawn)


def test_figures_refuse_windows_that_do_not_fit_the_grid():
    from vitbook.viz import swin as figures

    with pytest.raises(
        ValueError, match="window_size 3 must divide the 8x8 patch grid"
    ):
        figures.plot_windows(torch.rand(3, 64, 64), 8, 3)
    with pytest.raises(
        ValueError, match=r"shift 4 must be in \[0, window_size\) = \[0, 4\)"
    ):
        figures.plot_cyclic_shift(torch.rand(3, 64, 64), 8, 4, shift=4)
