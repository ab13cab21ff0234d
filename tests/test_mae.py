"""MAE (vitbook.ssl.mae): the properties the paper relies on, and parity with Hugging
Face transformers' ViTMAEForPreTraining (a port of the official code)."""

import pytest
import torch

from vitbook import ViT
from vitbook.layers import posemb_sincos_2d
from vitbook.ssl import MAE, normalized_pixels, patchify, random_masking


def tiny_mae(**kwargs) -> MAE:
    backbone = ViT(
        image_size=28, patch_size=7, channels=1, num_classes=0, dim=16, depth=2,
        heads=2, pos_embed="sincos",
    )  # fmt: skip
    options = dict(decoder_dim=12, decoder_depth=1, decoder_heads=3)
    return MAE(backbone, **{**options, **kwargs}).eval()


# ------------------------------------------------------------------ masking
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_masking_keeps_exactly_the_requested_count_and_is_a_permutation(ratio):
    b, n, d = 5, 49, 3
    tokens = torch.randn(b, n, d)
    kept, mask, ids_restore = random_masking(tokens, ratio)
    n_keep = int(n * (1 - ratio))
    assert kept.shape == (b, n_keep, d)
    assert mask.sum(1).tolist() == [n - n_keep] * b  # per sample, not on average
    assert (ids_restore.sort(1).values == torch.arange(n)).all()  # a permutation each
    for i in range(b):  # the kept tokens are exactly the unmasked ones
        visible = tokens[i][mask[i] == 0]
        assert torch.equal(
            kept[i][kept[i][:, 0].argsort()], visible[visible[:, 0].argsort()]
        )


def test_masking_differs_per_sample_and_follows_the_noise():
    tokens = torch.arange(8.0).repeat(2, 1)[..., None]  # (2, 8, 1)
    noise = torch.tensor(
        [[0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4], [0.0] * 4 + [1.0] * 4]
    )
    kept, mask, ids_restore = random_masking(tokens, 0.5, noise)
    assert kept[0, :, 0].tolist() == [1, 3, 5, 7]  # lowest noise first
    assert mask[0].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert mask[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    shuffled = tokens.gather(1, noise.argsort(1)[..., None])
    assert torch.equal(shuffled.gather(1, ids_restore[..., None]), tokens)


def test_masking_rejects_noise_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"noise has shape \(2, 5\)"):
        random_masking(torch.randn(2, 4, 3), 0.5, torch.rand(2, 5))


# ------------------------------------------------------------------ the loss
def test_loss_does_not_change_when_visible_predictions_change():
    mae, images = tiny_mae(), torch.randn(4, 1, 28, 28)
    loss, prediction, mask = mae.forward_all(images)
    visible = (mask == 0)[..., None]
    changed = prediction + 100.0 * torch.randn_like(prediction) * visible
    assert torch.equal(mae.loss(images, changed, mask), loss)
    hidden_changed = prediction + torch.randn_like(prediction) * ~visible
    assert not torch.allclose(mae.loss(images, hidden_changed, mask), loss)


def test_loss_is_the_mean_over_hidden_patches_of_the_per_patch_mean_error():
    mae, images = tiny_mae(norm_pix_loss=False), torch.randn(3, 1, 28, 28)
    loss, prediction, mask = mae.forward_all(images)
    target = patchify(images, (7, 7))
    errors = [
        ((prediction[i, j] - target[i, j]) ** 2).mean()
        for i in range(3)
        for j in range(16)
        if mask[i, j] == 1
    ]
    assert len(errors) == 3 * 12
    torch.testing.assert_close(loss, torch.stack(errors).mean())


def test_normalized_pixel_target_equals_a_hand_computation():
    patches = torch.randn(2, 3, 5, dtype=torch.float64) * 3 + 1
    target = normalized_pixels(patches)
    for i in range(2):
        for j in range(3):
            values = patches[i, j].tolist()
            mean = sum(values) / 5
            var = sum((v - mean) ** 2 for v in values) / (5 - 1)  # unbiased, as MAE
            expected = [(v - mean) / (var + 1e-6) ** 0.5 for v in values]
            assert target[i, j].tolist() == pytest.approx(expected, abs=1e-12)
    mae, images = tiny_mae(norm_pix_loss=True), torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(
        mae.target(images), normalized_pixels(patchify(images, (7, 7)))
    )


def test_encoder_never_sees_the_hidden_patches():
    mae, images = tiny_mae(), torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 16)
    latent, mask, _ = mae.forward_encoder(images, noise)
    assert latent.shape == (2, 1 + 4, 16)  # class token + 25% of 16 patches
    hidden = mask.reshape(2, 1, 4, 4).repeat_interleave(7, 2).repeat_interleave(7, 3)
    other = images + 10 * torch.randn_like(images) * hidden  # rewrite hidden pixels
    torch.testing.assert_close(mae.forward_encoder(other, noise)[0], latent)


def test_reconstruct_pastes_the_visible_patches_back_unchanged():
    mae, images = tiny_mae(), torch.randn(2, 1, 28, 28)
    out = mae.reconstruct(images, mask_ratio=0.5)
    hidden = (
        out["mask"].reshape(2, 1, 4, 4).repeat_interleave(7, 2).repeat_interleave(7, 3)
    )
    assert out["mask"].sum(1).tolist() == [8, 8]
    assert torch.equal(out["pasted"][hidden == 0], images[hidden == 0])
    assert torch.equal(out["pasted"][hidden == 1], out["prediction"][hidden == 1])
    assert (out["masked"][hidden == 1] == 0).all()
    assert mae.mask_ratio == 0.75  # the override was for that call only


def test_mae_refuses_learned_positions_and_impossible_ratios():
    learned = ViT(image_size=28, patch_size=7, channels=1, num_classes=0, dim=16,
                  depth=1, heads=2)  # fmt: skip
    with pytest.raises(ValueError, match="pos_embed='sincos'"):
        MAE(learned)
    sincos = ViT(image_size=28, patch_size=7, channels=1, num_classes=0, dim=16,
                 depth=1, heads=2, pos_embed="sincos")  # fmt: skip
    with pytest.raises(ValueError, match="mask_ratio=1.0"):
        MAE(sincos, mask_ratio=1.0)


# ------------------------------------------------------------------ positions
def test_sincos_layout_mae_puts_the_column_coordinate_first():
    h, w, dim = 3, 5, 16
    q = dim // 4
    for order, first_varies_along in (("yx", 0), ("xy", 1)):
        table = posemb_sincos_2d(h, w, dim, order=order).reshape(h, w, dim)
        first, second = table[..., : 2 * q], table[..., 2 * q :]
        # the first half is constant along the other axis, and varies along its own
        other = 1 - first_varies_along
        assert torch.equal(
            first, first.select(other, 0).unsqueeze(other).expand_as(first)
        )
        along = first.select(first_varies_along, 0).unsqueeze(first_varies_along)
        assert not torch.equal(first, along.expand_as(first))
        assert torch.equal(
            second, second.select(first_varies_along, 0)
            .unsqueeze(first_varies_along).expand_as(second)
        )  # fmt: skip
    yx, xy = posemb_sincos_2d(h, w, dim), posemb_sincos_2d(h, w, dim, order="xy")
    assert torch.equal(xy, torch.cat((yx[:, 2 * q :], yx[:, : 2 * q]), dim=1))
    # column x of patch (row 1, column 2) in the first quarter, at frequency 1
    assert xy[1 * w + 2, 0].item() == pytest.approx(torch.tensor(2.0).sin().item())
    with pytest.raises(ValueError, match="order='zz'"):
        posemb_sincos_2d(2, 2, 8, order="zz")


def test_mae_uses_the_xy_layout_in_encoder_and_decoder():
    mae = tiny_mae()
    torch.testing.assert_close(
        mae.backbone.pos_embed[0, 1:],
        posemb_sincos_2d(4, 4, 16, order="xy"),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        mae.decoder_pos_embed[0, 1:],
        posemb_sincos_2d(4, 4, 12, order="xy"),
        rtol=0,
        atol=0,
    )
    assert (mae.backbone.pos_embed[0, 0] == 0).all()  # the class token has no place


# ------------------------------------------------------------------ parity
def transformers_mae(norm_pix_loss: bool, dtype=torch.float32):
    """A tiny ViTMAEForPreTraining, every learned weight randomized; its fixed sin-cos
    tables built by its own code (transformers 5.x leaves them zero when it skips
    ``initialize_weights``: a zero table would hide a layout bug)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTMAEConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=16,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        decoder_hidden_size=12, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3, decoder_intermediate_size=24,
        layer_norm_eps=1e-6, mask_ratio=0.75, norm_pix_loss=norm_pix_loss,
        attn_implementation="sdpa",  # its eager path runs softmax in float32
    )  # fmt: skip
    model = transformers.ViTMAEForPreTraining(config).eval()
    emb = model.vit.embeddings
    if hasattr(emb.patch_embeddings.projection, "_is_hf_initialized"):
        del emb.patch_embeddings.projection._is_hf_initialized
    emb.initialize_weights()
    model.decoder.initialize_weights(emb.patch_embeddings.num_patches)
    assert emb.position_embeddings.abs().sum() > 0
    assert model.decoder.decoder_pos_embed.abs().sum() > 0
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # the fixed tables stay as transformers built them
                p.normal_(0.0, 0.5)
    return model.to(dtype)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_matches_transformers_vitmae_loss_and_predictions(norm_pix_loss, dtype, tol):
    from vitbook.reference import mae_from_transformers

    theirs = transformers_mae(norm_pix_loss, dtype)
    ours = mae_from_transformers(theirs).eval()
    images = torch.randn(3, 1, 28, 28, dtype=dtype)
    noise = torch.rand(3, 16, dtype=dtype)
    with torch.no_grad():
        expected = theirs(pixel_values=images, noise=noise)
        loss, prediction, mask = ours.forward_all(images, noise)
    assert torch.equal(mask, expected.mask.to(mask.dtype))
    torch.testing.assert_close(prediction, expected.logits, rtol=0, atol=tol)
    torch.testing.assert_close(loss, expected.loss, rtol=0, atol=tol)


def test_conversion_refuses_transformers_default_layernorm_epsilon():
    transformers = pytest.importorskip("transformers")
    from vitbook.reference import mae_from_transformers

    config = transformers.ViTMAEConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=16,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        decoder_hidden_size=12, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=3, decoder_intermediate_size=24,
    )  # fmt: skip
    assert config.layer_norm_eps == 1e-12
    with pytest.raises(ValueError, match="layer_norm_eps=1e-12"):
        mae_from_transformers(transformers.ViTMAEForPreTraining(config))


# ------------------------------------------------------------------ figures
def test_reconstruction_figure_paints_exactly_the_hidden_patches():
    from vitbook import viz

    mae, images = tiny_mae(), torch.rand(2, 1, 28, 28)
    out = mae.reconstruct(images)
    fig = viz.plot_reconstructions(images, out, mae.grid)
    assert [ax.get_title() for ax in fig.axes[:4]] == [
        "original", "encoder input", "prediction", "visible pasted back",
    ]  # fmt: skip
    painted = fig.axes[1].images[0].get_array()  # (28, 28, 3)
    blue = (painted == torch.tensor(viz.mae.HIDDEN_RGB).numpy()).all(-1)
    hidden = (
        out["mask"][0].reshape(4, 4).repeat_interleave(7, 0).repeat_interleave(7, 1)
    )
    assert (torch.from_numpy(blue) == hidden.bool()).all()


def test_snapshots_do_not_change_training():
    from vitbook import fit
    from vitbook.ssl import SnapshotLoss

    images = torch.randn(64, 1, 28, 28)
    loader = [(images[i : i + 16], torch.zeros(16)) for i in range(0, 64, 16)]
    runs = []
    for snapshots in (False, True):
        torch.manual_seed(0)
        mae = tiny_mae()
        kwargs = {}
        if snapshots:
            kwargs["loss"] = SnapshotLoss(images[:3], [0, 2], torch.rand(3, 16))
        else:
            from vitbook.train import self_supervised_loss as loss

            kwargs["loss"] = loss
        history = fit(mae, loader, steps=4, progress=False, **kwargs)
        runs.append([r["loss"] for r in history.steps])
    assert runs[0] == runs[1]
    frames = kwargs["loss"].frames
    assert [step for step, _ in frames] == [0, 2]
    assert frames[0][1].shape == (3, 1, 28, 28)
    assert not torch.equal(frames[0][1], frames[1][1])  # the model learned in between


def test_pretraining_and_finetuning_figures_label_their_axes():
    from vitbook import viz
    from vitbook.train import History

    history = History(
        steps=[{"step": i + 1, "loss": 1.0 / (i + 1)} for i in range(10)],
        evals=[{"step": 10, "test_acc": 0.5}],
    )
    frames = [(0, torch.rand(3, 1, 28, 28)), (10, torch.rand(3, 1, 28, 28))]
    fig = viz.plot_pretraining(history, frames)
    assert fig.axes[0].get_xlabel() == "step"
    assert fig.axes[1].get_ylabel() == "step 0"
    fig = viz.plot_finetuning({"from MAE": history, "from scratch": history})
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "training loss (smoothed)", "test accuracy",
    ]  # fmt: skip
    fig = viz.plot_masking_ratios(tiny_mae(), torch.rand(2, 1, 28, 28), (0.25, 0.75))
    assert fig.axes[0].get_title().startswith("mask 25%")
