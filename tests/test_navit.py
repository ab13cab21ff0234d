"""NaViT: packing is exact, images in a pack never see each other, dropout and positions
do what the paper says, and the attention scale is the standard one."""

import random

import pytest
import torch
import torch.nn.functional as F
from factories import randomize_

from vitbook import NaViT, record_attention
from vitbook.packing import first_fit_decreasing, greedy, pack, padding_utilization


def navit(dtype=torch.float32, **overrides):
    config = dict(
        max_image_size=32,
        patch_size=4,
        num_classes=5,
        dim=32,
        depth=2,
        heads=2,
        token_budget=64,
        channels=1,
    )
    config.update(overrides)
    return randomize_(NaViT(**config), std=0.2).to(dtype).eval()


def images(dtype=torch.float32):
    sizes = [(16, 16), (8, 28), (32, 32), (4, 4), (12, 8), (20, 12)]
    return [torch.randn(1, h, w, dtype=dtype) for h, w in sizes]


# --------------------------------------------------------------------------- packing
def check_valid(packing, lengths, budget):
    assert [p.image for p in packing.placements] == list(range(len(lengths)))
    assert [p.length for p in packing.placements] == lengths
    used = {}
    for p in packing.placements:
        slots = set(range(p.offset, p.offset + p.length))
        assert not slots & used.get(p.sequence, set()), "two images overlap"
        used.setdefault(p.sequence, set()).update(slots)
        assert p.offset + p.length <= budget
    assert sorted(used) == list(range(packing.num_sequences))


def test_first_fit_decreasing_never_needs_more_sequences_than_greedy():
    rng = random.Random(0)
    fewer = 0
    for _ in range(500):
        budget = rng.randint(1, 200)
        lengths = [rng.randint(1, budget) for _ in range(rng.randint(1, 40))]
        g, f = greedy(lengths, budget), first_fit_decreasing(lengths, budget)
        check_valid(g, lengths, budget)
        check_valid(f, lengths, budget)
        assert f.num_sequences <= g.num_sequences, (lengths, budget)
        assert f.num_sequences >= -(-sum(lengths) // budget)  # no packing beats this
        fewer += f.num_sequences < g.num_sequences
    assert fewer > 100  # and it is often strictly better


def test_first_fit_decreasing_beats_greedy_on_three_large_and_four_small_images():
    lengths = [64, 64, 64, 16, 16, 16, 16]
    g, f = greedy(lengths, 100), first_fit_decreasing(lengths, 100)
    assert g.sequences() == [[0], [1], [2, 3, 4], [5, 6]]
    assert g.num_sequences == 4 and f.num_sequences == 3
    assert f.sequences() == [[0, 3, 4], [1, 5, 6], [2]]
    assert f.utilization == pytest.approx(256 / 300)
    assert padding_utilization(lengths) == pytest.approx(256 / (7 * 64))


def test_an_image_larger_than_the_budget_is_named_with_its_size_and_tokens():
    with pytest.raises(ValueError, match=r"image 2 of size 40x40 has 100 tokens, more"):
        pack([4, 9, 100], 64, "ffd", sizes=[(8, 8), (12, 12), (40, 40)])
    with pytest.raises(ValueError, match=r"image 1 has 65 tokens.*budget 64"):
        greedy([1, 65], 64)
    with pytest.raises(ValueError, match=r"strategy 'best' is not one of"):
        pack([1], 4, "best")


def test_the_model_names_an_image_whose_tokens_exceed_the_budget():
    model = navit(token_budget=32)
    with pytest.raises(ValueError, match=r"image 1 of size 32x32 has 64 tokens"):
        model([torch.randn(1, 8, 8), torch.randn(1, 32, 32)])
    with pytest.raises(ValueError, match=r"image 0: image height 10 is not divisible"):
        model([torch.randn(1, 10, 8)])
    with pytest.raises(ValueError, match=r"image 0 of size 36x8 is larger than max"):
        navit(token_budget=128)([torch.randn(1, 36, 8)])


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("strategy", ["greedy", "ffd"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_packed_images_get_the_logits_each_gets_alone(strategy, dtype, tol):
    model, xs = navit(dtype, packing=strategy), images(dtype)
    with torch.no_grad():
        packed = model(xs)
        alone = torch.cat([model([x]) for x in xs])
    assert model.forward_features(xs).packing.num_sequences < len(xs)  # really packed
    torch.testing.assert_close(packed, alone, atol=tol, rtol=tol)


def test_changing_one_image_never_changes_another_images_logits():
    model, xs = navit(), images()
    with torch.no_grad():
        before = model(xs)
        xs[2] = torch.randn_like(xs[2])
        after = model(xs)
    others = [i for i in range(len(xs)) if i != 2]
    assert (after[2] - before[2]).abs().max() > 1e-3
    torch.testing.assert_close(after[others], before[others], atol=1e-6, rtol=0)


def test_an_images_gradient_never_reaches_another_images_pixels_or_tokens():
    model, xs = navit(), images()
    xs = [x.requires_grad_() for x in xs]
    features = model.embed(xs)
    features.tokens.retain_grad()
    embedded = features.tokens
    *_, last = model._blocks(features)
    features.tokens = model.norm(last)
    logits = model.forward_head(features)
    logits[2].sum().backward()
    for i, x in enumerate(xs):
        assert (x.grad.abs().sum() > 0) == (i == 2), f"image {i}"
    other = features.image_ids != 2
    assert embedded.grad[other].abs().max() == 0
    assert embedded.grad[~other].abs().sum() > 0


def test_padding_tokens_never_change_the_results():
    model, xs = navit(), images()
    with torch.no_grad():
        features = model.embed(xs)
        padding = features.image_ids < 0
        assert padding.any()
        logits = model.forward_head(model_rest(model, features))
        features = model.embed(xs)
        features.tokens[padding] = 100 * torch.randn_like(features.tokens[padding])
        noisy = model.forward_head(model_rest(model, features))
        more_padding = navit(token_budget=200)
        more_padding.load_state_dict(model.state_dict())
        roomy = more_padding(xs)
    torch.testing.assert_close(noisy, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(roomy, logits, atol=1e-5, rtol=1e-5)


def model_rest(model, features):
    *_, last = model._blocks(features)
    features.tokens = model.norm(last)
    return features


def test_masks_keep_every_token_and_every_pooling_query_inside_its_image():
    model, xs = navit(), images()
    features = model.forward_features(xs)
    ids = features.image_ids
    mask = features.attention_mask()[:, 0]
    real = ids >= 0
    same = ids[:, :, None] == ids[:, None, :]
    assert torch.equal(mask, same)
    assert not (mask & (real[:, :, None] ^ real[:, None, :])).any()
    pool = features.pooling_mask()[:, 0]
    for s, group in enumerate(features.packing.sequences()):
        for q, image in enumerate(group):
            assert torch.equal(pool[s, q], ids[s] == image)


# --------------------------------------------------------------------------- token dropout
def test_token_dropout_keeps_the_requested_fraction_at_random_per_image():
    model = navit(token_dropout=0.25, token_budget=256).train()
    same = torch.randn(1, 32, 32)
    features = model.forward_features([same, same, torch.randn(1, 16, 8)])
    ids, pos = features.image_ids, features.positions
    assert [(ids == i).sum().item() for i in range(3)] == [48, 48, 6]
    kept = [{tuple(p) for p in pos[ids == i].tolist()} for i in range(2)]
    assert kept[0] != kept[1], "the same image lost the same tokens twice"
    model.eval()
    ids = model.forward_features([same, same]).image_ids
    assert [(ids == i).sum().item() for i in range(2)] == [64, 64]


def test_token_dropout_can_depend_on_the_resolution():
    def rate(h, w):
        return 0.5 if h * w >= 32 * 32 else 0.0

    model = navit(token_dropout=rate, token_budget=256).train()
    ids = model.forward_features([torch.randn(1, 32, 32), torch.randn(1, 16, 16)])
    ids = ids.image_ids
    assert [(ids == i).sum().item() for i in range(2)] == [32, 16]
    with pytest.raises(ValueError, match=r"token dropout rate 1.0 must be"):
        navit(token_dropout=1.0)


# --------------------------------------------------------------------------- positions
def test_the_position_embedding_of_a_token_depends_only_on_its_row_and_column():
    model = navit(token_budget=256)
    with torch.no_grad():
        model.patch_embed.weight.zero_()  # leave the position embedding alone
        features = model.embed([torch.randn(1, 8, 32), torch.randn(1, 32, 8)])
    seen = {}
    real = features.image_ids >= 0
    for token, (r, c) in zip(features.tokens[real], features.positions[real].tolist()):
        expected = model.patch_embed.bias + model.pos_embed_row[r]
        expected = expected + model.pos_embed_col[c]
        torch.testing.assert_close(token, expected)
        if (r, c) in seen:
            torch.testing.assert_close(token, seen[(r, c)])
        seen[(r, c)] = token
    assert (0, 0) in seen and (7, 1) in seen and (1, 7) in seen


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["all-tokens", "token-dropout"])
def test_every_token_is_its_own_patch_embedded_plus_its_own_position(dropout):
    # token t of a packed sequence, before any block, must be patch_embed(the pixels
    # of the patch at positions[t]) + that position's embedding. Patches flattened
    # column-major while the positions stay row-major would pass every other test:
    # packing stays exact, only each patch's content sits at another position.
    model = navit(channels=3, token_budget=256, token_dropout=dropout).train(
        dropout > 0
    )
    p = model.patch_size
    xs = [torch.randn(3, h, w) for h, w in [(8, 28), (12, 8), (16, 16), (4, 12)]]
    with torch.no_grad():
        features = model.embed(xs)
    real = features.image_ids >= 0
    ids, positions = features.image_ids[real], features.positions[real]
    counts = [(ids == i).sum().item() for i in range(len(xs))]
    assert counts == [model.num_tokens(*x.shape[1:]) for x in xs]
    for token, i, (r, c) in zip(features.tokens[real], ids, positions.tolist()):
        patch = xs[i][:, r * p : (r + 1) * p, c * p : (c + 1) * p]  # (3, p, p)
        pixels = patch.permute(1, 2, 0).flatten()  # (p1 p2 c): the projection's input
        with torch.no_grad():
            expected = model.patch_embed(pixels) + model.pos_embed_row[r]
            expected = expected + model.pos_embed_col[c]
        torch.testing.assert_close(token, expected)


# --------------------------------------------------------------------------- qk-norm
def test_qk_norm_logits_use_the_standard_one_over_sqrt_d_scale():
    model = navit(heads=2, depth=1)
    x = [torch.randn(1, 16, 12)]
    with record_attention(model) as maps, torch.no_grad():
        model(x)
        attn = model.blocks[0].attn
        tokens = model.blocks[0].norm1(model.embed(x).tokens)  # (1, n, dim)
        q, k, _ = (tokens @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, dim=-1)
        d = attn.dim_head
        q = q.view(1, -1, 2, d).transpose(1, 2)  # (1, h, n, d)
        k = k.view(1, -1, 2, d).transpose(1, 2)
        q = F.layer_norm(q, (d,), attn.q_norm.weight, attn.q_norm.bias, 1e-6)
        k = F.layer_norm(k, (d,), attn.k_norm.weight, attn.k_norm.bias, 1e-6)
        expected = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)
        seed_like = (q @ k.transpose(-1, -2)).softmax(-1)  # sqrt(d) times larger
    recorded = maps["blocks.0.attn"][0]
    torch.testing.assert_close(recorded, expected, atol=1e-5, rtol=1e-5)
    assert (recorded - seed_like).abs().max() > 1e-2


def test_the_pooling_query_is_recorded_and_reads_only_its_image():
    model, xs = navit(), images()
    with record_attention(model) as maps, torch.no_grad():
        features = model.forward_features(xs)
        model.forward_head(features)
    weights = maps["pool.attn"][0]  # (S, h, Q, L)
    mask = features.pooling_mask().expand_as(weights)
    assert weights[~mask].abs().max() == 0


# --------------------------------------------------------------------------- the baseline
def test_a_vit_moved_to_another_image_size_keeps_its_weights_and_resamples_positions():
    from vitbook import ViT
    from vitbook.models.vit import vit_at_image_size

    vit = ViT(image_size=28, patch_size=7, num_classes=3, dim=16, depth=1, heads=2,
              channels=1).eval()  # fmt: skip
    x = torch.randn(2, 1, 28, 28)
    same = vit_at_image_size(vit, 28)
    torch.testing.assert_close(same(x), vit(x), atol=1e-6, rtol=0)
    with torch.no_grad():
        vit.pos_embed[:, 1:] = 0.3  # a constant table stays constant when resampled
    wide = vit_at_image_size(vit, (14, 42))
    assert wide.pos_embed.shape == (1, 1 + 2 * 6, 16) and wide.grid == (2, 6)
    torch.testing.assert_close(wide.pos_embed[0, 1:], torch.full((12, 16), 0.3))
    torch.testing.assert_close(wide.pos_embed[0, 0], vit.pos_embed[0, 0])
    assert wide(torch.randn(2, 1, 14, 42)).shape == (2, 3)
    assert vit.grid == (4, 4)  # the original is untouched
    with pytest.raises(ValueError, match=r"image width 40 is not divisible by"):
        vit_at_image_size(vit, (14, 40))
