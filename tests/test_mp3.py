"""MP3 (vitbook.ssl.mp3): masked tokens are queries only, the context is the current
layer's states, and the loss is cross-entropy over every token's position."""

import pytest
import torch

from vitbook import ViT
from vitbook.layers import record_attention
from vitbook.ssl.mp3 import MP3, context_index, context_mask


def tiny_mp3(depth=2, pool="mean", mask_ratio=0.75, attention=None) -> MP3:
    """A small MP3 with random weights; ``attention=None`` leaves MP3's default."""
    backbone = ViT(
        image_size=28, patch_size=7, channels=1, num_classes=0, dim=16, depth=depth,
        heads=2, pool=pool,
    )  # fmt: skip
    options = {} if attention is None else {"attention": attention}
    mp3 = MP3(backbone, mask_ratio=mask_ratio, **options).eval()
    with torch.no_grad():  # no zero weights that could hide a leak
        for name, p in mp3.named_parameters():
            if name != "backbone.pos_embed":
                p.add_(0.1 * torch.randn_like(p))
    return mp3


def patch_pixels(index: int) -> torch.Tensor:
    """A (1, 28, 28) mask of the pixels of patch ``index`` in the 4x4 grid."""
    out = torch.zeros(1, 28, 28)
    r, c = divmod(index, 4)
    out[:, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 1
    return out


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_a_masked_tokens_key_and_value_never_influence_any_other_output(pool):
    mp3, images = tiny_mp3(pool=pool), torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 16)
    logits = mp3.forward_logits(images, noise)
    masked = noise[0].argsort()[4:]  # 12 of 16 patches are not context
    for index in masked[:3].tolist():
        other = images.clone()
        other[0] += 5 * torch.randn(1, 28, 28) * patch_pixels(index)
        changed = mp3.forward_logits(other, noise)
        rest = [i for i in range(16) if i != index]
        torch.testing.assert_close(changed[0, rest], logits[0, rest])
        assert not torch.allclose(changed[0, index], logits[0, index])  # still a query
        torch.testing.assert_close(changed[1], logits[1])


def test_every_query_gets_an_output_from_the_context():
    mp3, images = tiny_mp3(), torch.randn(1, 1, 28, 28)
    noise = torch.rand(1, 16)
    logits = mp3.forward_logits(images, noise)
    assert logits.shape == (1, 16, 16) and torch.isfinite(logits).all()
    context = noise[0].argsort()[0].item()
    other = images + 5 * torch.randn_like(images) * patch_pixels(context)
    moved = (mp3.forward_logits(other, noise) - logits).abs().amax(-1)[0]  # (16,)
    assert (moved > 0).all()  # a context patch reaches every query


def test_context_mask_keeps_the_requested_number_of_keys_for_every_query():
    mask = context_mask(torch.rand(3, 16), n_keep=4, prefix=1)
    assert mask.shape == (3, 1, 17, 17)
    assert (mask.sum(-1) == 5).all()  # the class token + 4 context patches
    assert mask[..., 0].all()


def test_context_index_lists_the_keys_context_mask_lets_through():
    noise = torch.rand(3, 16)
    index = context_index(noise, n_keep=4, prefix=1)  # (3, 5)
    mask = context_mask(noise, n_keep=4, prefix=1)
    assert index.tolist() == [row.nonzero().flatten().tolist() for row in mask[:, 0, 0]]


def logits_loss_and_gradients(mp3, images, noise):
    mp3.zero_grad()
    logits = mp3.forward_logits(images, noise)
    loss = mp3(images, noise)
    loss.backward()
    # the position table is unused while pretraining: it gets no gradient
    grads = {k: p.grad for k, p in mp3.named_parameters() if k != "backbone.pos_embed"}
    return logits, loss, grads


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("mask_ratio", [0.75, 0.5, 0.0])
def test_gathered_keys_give_the_masked_values_and_gradients(pool, mask_ratio):
    gathered = tiny_mp3(depth=3, pool=pool, mask_ratio=mask_ratio).double()
    masked = tiny_mp3(depth=3, pool=pool, mask_ratio=mask_ratio, attention="mask")
    masked.load_state_dict(gathered.state_dict())
    masked.double()
    images, noise = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.rand(3, 16)
    ours = logits_loss_and_gradients(gathered, images, noise)
    reference = logits_loss_and_gradients(masked, images, noise)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)


def test_gathered_attention_scores_every_query_against_the_context_only():
    gathered = tiny_mp3(pool="cls")
    masked = tiny_mp3(pool="cls", attention="mask")
    masked.load_state_dict(gathered.state_dict())
    images, noise = torch.randn(2, 1, 28, 28), torch.rand(2, 16)
    with torch.no_grad(), record_attention(gathered) as few:
        gathered.forward_logits(images, noise)
    with torch.no_grad(), record_attention(masked) as full:
        masked.forward_logits(images, noise)
    keys = context_index(noise, n_keep=4, prefix=1)  # (2, 5)
    for layer in few:
        # (2, heads, 17 queries, 5 keys): the class token and 4 context patches
        weights = few[layer][0]
        assert weights.shape == (2, 2, 17, 5)
        # the masked reference scores all 17 keys and gives the others zero weight
        picked = full[layer][0].gather(3, keys[:, None, None].expand(-1, 2, 17, -1))
        torch.testing.assert_close(weights, picked)
        assert picked.sum(-1).allclose(torch.ones(2, 2, 17))


def test_attention_must_be_gather_or_mask():
    with pytest.raises(ValueError, match=r"attention='flash' is not one of"):
        tiny_mp3(attention="flash")


def test_loss_is_cross_entropy_of_each_tokens_position_by_hand():
    mp3, images = tiny_mp3(), torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 16)
    logits = mp3.forward_logits(images, noise).double()
    by_hand = []
    for b in range(2):
        for i in range(16):
            row = logits[b, i].tolist()
            log_z = torch.tensor(row, dtype=torch.float64).exp().sum().log().item()
            by_hand.append(log_z - row[i])
    loss = mp3(images, noise)
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    hits = (logits.argmax(-1) == torch.arange(16)).double().mean().item()
    assert mp3.last_accuracy.item() == pytest.approx(hits)


def reference_logits(mp3, images, noise, context_from_layer_0: bool):
    """Explicit attention, one image at a time: queries are all tokens, keys and values
    the context tokens of the current layer's states (or, as the seed does, of the
    layer-0 embeddings)."""
    vit, out = mp3.backbone, []
    for img, nz in zip(images, noise):
        keep = torch.zeros(16, dtype=torch.bool)
        keep[nz.argsort()[:4]] = True
        x = x0 = vit.patch_embed(img[None])[0]  # (16, d), no positions
        for block in vit.blocks:
            attn = block.attn
            inner = attn.heads * attn.dim_head
            source = (x0 if context_from_layer_0 else x)[keep]
            q = attn.qkv(block.norm1(x))[:, :inner]
            kv = attn.qkv(block.norm1(source))
            k, v = kv[:, inner : 2 * inner], kv[:, 2 * inner :]

            def heads(t):
                return t.reshape(len(t), attn.heads, attn.dim_head).transpose(0, 1)

            w = (heads(q) @ heads(k).transpose(1, 2) * attn.scale).softmax(-1)
            mixed = (w @ heads(v)).transpose(0, 1).reshape(len(x), inner)
            x = x + attn.proj(mixed)
            x = x + block.mlp(block.norm2(x))
        out.append(mp3.position_head(vit.norm(x)))
    return torch.stack(out)


def test_keys_and_values_come_from_the_current_layers_states():
    mp3, images = tiny_mp3(depth=3), torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        ours = mp3.forward_logits(images, noise)
        current = reference_logits(mp3, images, noise, context_from_layer_0=False)
        seed = reference_logits(mp3, images, noise, context_from_layer_0=True)
    torch.testing.assert_close(ours, current, rtol=0, atol=1e-5)
    assert (ours - seed).abs().max() > 1e-3  # the seed's layer-0 context would fail


def test_positions_come_back_zero_initialized_for_fine_tuning():
    mp3 = tiny_mp3()
    assert isinstance(mp3.backbone.pos_embed, torch.nn.Parameter)
    assert (mp3.backbone.pos_embed == 0).all()
    images = torch.randn(2, 1, 28, 28)
    tokens = mp3.backbone.forward_features(images)  # all patches, zero positions
    assert tokens.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="pos_embed='learned'"):
        MP3(ViT(image_size=28, patch_size=7, channels=1, num_classes=0, dim=16,
                depth=1, heads=2, pos_embed="sincos"))  # fmt: skip


def test_position_figures_count_right_and_wrong_places():
    from vitbook import viz

    predicted = torch.arange(16).repeat(3, 1)
    predicted[0, 5] = 6  # one token of one image put one column to the right
    rates = viz.position_confusion(predicted, 16)
    assert rates[5, 5] == pytest.approx(2 / 3) and rates[5, 6] == pytest.approx(1 / 3)
    assert torch.allclose(rates.sum(1), torch.ones(16))
    fig = viz.plot_position_confusion(predicted, (4, 4))
    assert fig.axes[0].get_xlabel() == "predicted position"
    fig = viz.plot_position_arrows(torch.rand(2, 1, 28, 28), predicted[:2], (4, 4))
    assert fig.axes[0].get_title() == "image 0: 15/16 right"
    assert len([c for c in fig.axes[0].texts]) == 1  # one arrow
