import matplotlib
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest
import torch

import vitbook
import vitbook.packing
import vitbook.ssl
from vitbook import ViT, record_attention, viz


def test_rollout_of_identity_attention_is_identity_and_rows_stay_distributions():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    torch.testing.assert_close(
        viz.attention_rollout([eye, eye]), torch.eye(5).expand(2, 5, 5)
    )
    maps = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(4)]
    torch.testing.assert_close(viz.attention_rollout(maps).sum(-1), torch.ones(2, 5))


def test_rollout_composes_layers_first_to_last():
    # layer 1 moves everything to token 1, layer 2 moves everything to token 2:
    # with no residual, the output depends on the inputs through layer 1's choice only.
    to = lambda j: torch.zeros(1, 1, 3, 3).index_fill_(-1, torch.tensor([j]), 1.0)
    rollout = viz.attention_rollout([to(1), to(2)], residual=0.0)
    torch.testing.assert_close(rollout[0], to(1)[0, 0])


def test_rollout_needs_maps():
    with pytest.raises(ValueError, match="at least one layer"):
        viz.attention_rollout([])


def test_patch_figure_shows_the_grid():
    fig = viz.plot_patches(torch.rand(1, 28, 28), 7)
    assert "4x4 = 16 patches of 7x7" in [ax.get_title() for ax in fig.axes]
    with pytest.raises(ValueError, match="not divisible"):
        viz.plot_patches(torch.rand(1, 28, 28), 5)


def test_position_similarity_grid_has_one_panel_per_position():
    model = ViT(
        image_size=28,
        patch_size=7,
        num_classes=10,
        dim=32,
        depth=1,
        heads=2,
        channels=1,
    )
    fig = viz.plot_position_similarity(model.pos_embed, model.grid, num_prefix_tokens=1)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 16
    # each panel's own position is the brightest (cosine similarity 1 with itself)
    first = images[0].images[0].get_array()
    assert np.isclose(first[0, 0], 1.0) and first.max() <= 1.0 + 1e-6


def test_attention_figures_draw_every_layer_and_the_rollout():
    model = ViT(
        image_size=28,
        patch_size=7,
        num_classes=10,
        dim=32,
        depth=3,
        heads=2,
        channels=1,
    ).eval()
    x = torch.rand(2, 1, 28, 28)
    with record_attention(model) as maps:
        model(x)
    layers = [m[0] for m in maps.values()]
    fig = viz.plot_attention(x, layers, model.grid)
    assert [ax.get_title() for ax in fig.axes[:5]] == [
        "image",
        "layer 1",
        "layer 2",
        "layer 3",
        "rollout",
    ]
    fig = viz.plot_attention_heads(x[0], [m[0] for m in layers], model.grid, head=1)
    assert fig.texts[0].get_text() == "head 1"
    with pytest.raises(ValueError, match="head=2 must be -1"):
        viz.plot_attention_heads(x[0], [m[0] for m in layers], model.grid, head=2)


def test_history_plot_has_loss_and_accuracy():
    history = vitbook.train.History(
        steps=[{"step": i, "loss": 1 / i, "acc": 0.5} for i in range(1, 30)],
        evals=[{"step": 29, "test_acc": 0.8, "test_loss": 0.5}],
    )
    fig = history.plot()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    plt.close(fig)


def test_show_displays_the_package_source_with_its_location():
    source = vitbook.show(vitbook.layers.Attention)
    assert "class Attention(nn.Module):" in source.code
    assert source.where.startswith("vitbook/layers.py, line ")
    assert "<span" in source._repr_html_()
    part = vitbook.show(vitbook.layers.Attention, lines=(1, 2))
    assert part.code.count("\n") == 2
    with pytest.raises(ValueError, match="outside the"):
        vitbook.show(vitbook.layers.Attention, lines=(1, 10_000))
    wrapped = vitbook.show(vitbook.record_attention)
    assert (
        wrapped.where.startswith("vitbook/layers.py")
        and "def record_attention" in wrapped.code
    )
    with pytest.raises(TypeError, match="show\\(\\) needs"):
        vitbook.show(3)


def test_navit_figures_draw_packing_masks_utilization_and_accuracy():
    from vitbook import NaViT, viz
    from vitbook.packing import pack

    fig = viz.plot_packing(pack([64, 64, 64, 16, 16, 16, 16], 100, "ffd"))
    assert len(fig.axes[0].patches) == 3 + 7  # a grey bar per sequence, one per image
    model = NaViT(max_image_size=16, patch_size=4, num_classes=3, dim=16, depth=1,
                  heads=2, token_budget=20, channels=1)  # fmt: skip
    sizes = [(16, 8), (8, 8), (4, 12), (16, 16)]
    features = model.forward_features([torch.randn(1, h, w) for h, w in sizes])
    fig = viz.plot_packing_masks(features, sequence=1)
    assert [ax.get_xlabel() for ax in fig.axes] == ["key token", "token"]
    table = viz.utilization_table([64, 64, 64, 16, 16, 16, 16], [100, 128])
    assert table["ffd"][0] > table["greedy"][0] > table["pad to largest"][0]
    fig = viz.plot_utilization([64, 64, 64, 16, 16, 16, 16], [64, 100, 128])
    assert fig.axes[0].get_xlabel().startswith("token budget")
    fig = viz.plot_accuracy_vs_resolution({"a": {(8, 8): 0.5, (8, 16): 0.7}})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["8x8", "8x16"]
    model = vitbook.NaViT(
        max_image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2,
        token_budget=20, channels=1,
    )
    sizes = [(16, 8), (8, 8), (4, 12), (16, 16)]
    fig = viz.plot_navit_pipeline(model, [torch.rand(1, h, w) for h, w in sizes])
    titles = [ax.get_title() for ax in fig.axes]
    # one panel per image with its own token count, the model's packing and logits
    assert "2: 4x12\n3 tokens" in titles
    assert "(4, 3) logits" in fig._suptitle.get_text()
    plt.close(fig)
    fig = viz.plot_accuracy_vs_resolution({"a": {(8, 8): 0.5, (8, 16): 0.7}})
    # sizes are categories: bars, no line joining them
    assert not fig.axes[0].lines and len(fig.axes[0].patches) == 2
    fig = viz.plot_sizes([torch.rand(1, 8, 16), torch.rand(3, 16, 8)], ["x", "y"])
    assert len(fig.axes) == 2
# ------------------------------------------------------------------ every figure is readable
# One entry per name in vitbook.viz.__all__: a figure function maps to a callable that
# draws an example (given small models); a helper that draws nothing maps to None. A new
# figure function without an entry fails test_every_viz_name_has_an_example.
def _small_vit():
    torch.manual_seed(0)
    return ViT(
        image_size=28, patch_size=7, num_classes=10, dim=32, depth=2, heads=2,
        channels=1,
    ).eval()


def _small_swin():
    torch.manual_seed(0)
    return vitbook.Swin(
        image_size=28, patch_size=7, num_classes=10, dim=16, depths=(2, 2),
        heads=(2, 4), window_size=2, channels=1,
    ).eval()


def _attention_maps(model, x):
    with record_attention(model) as maps, torch.no_grad():
        model(x)
    return [m[0] for m in maps.values()]


def _history():
    return vitbook.train.History(
        steps=[{"step": i, "loss": 1 / i, "acc": 0.5} for i in range(1, 30)],
        evals=[{"step": 29, "test_acc": 0.8, "test_loss": 0.5}],
    )


def _packed_features():
    model = vitbook.NaViT(
        max_image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2,
        token_budget=20, channels=1,
    )
    sizes = [(16, 8), (8, 8), (4, 12), (16, 16)]
    return model.forward_features([torch.randn(1, h, w) for h, w in sizes])


def _small_mae():
    torch.manual_seed(0)
    backbone = ViT(
        image_size=28, patch_size=7, channels=1, num_classes=0, dim=16, depth=1,
        heads=2, pos_embed="sincos",
    )
    return vitbook.ssl.MAE(
        backbone, decoder_dim=12, decoder_depth=1, decoder_heads=3
    ).eval()


def _mae_reconstructions():
    mae = _small_mae()
    return viz.plot_reconstructions(_IMAGES, mae.reconstruct(_IMAGES), mae.grid)


def _diagnostics():
    return vitbook.train.History(
        steps=[
            {"step": i, "entropy": 1.0 + i / 10, "kl": 0.5, "std": 0.1, "erank": 3.0}
            for i in range(1, 8)
        ]
    )


def _small_esvit():
    torch.manual_seed(0)
    swin = vitbook.Swin(
        image_size=16, num_classes=0, channels=1, patch_size=2, dim=8, depths=(1, 1),
        heads=(1, 2), window_size=4, drop_path=0.0,
    )
    return vitbook.ssl.EsViT(
        swin, total_steps=10, global_size=16, local_size=8, num_local=2, out_dim=32,
        hidden_dim=32, bottleneck_dim=8,
    )


def _small_dino(**kwargs):
    vit = ViT(image_size=16, patch_size=4, num_classes=0, dim=16, depth=1, heads=2,
              channels=1)  # fmt: skip
    return vitbook.ssl.DINO(
        vit, total_steps=10, global_size=16, local_size=8, num_local=3, out_dim=1024,
        hidden_dim=32, bottleneck_dim=8, **kwargs,
    )  # fmt: skip


def _small_byol(**kwargs):
    vit = ViT(image_size=16, patch_size=4, num_classes=0, dim=16, depth=1, heads=2,
              channels=1)  # fmt: skip
    return vitbook.ssl.BYOL(
        vit, total_steps=2, image_size=16, projection_dim=8, hidden_dim=16,
        predictor_hidden_dim=16, **kwargs,
    )  # fmt: skip


def _small_mp3():
    vit = ViT(image_size=28, patch_size=7, num_classes=0, dim=16, depth=2, heads=2,
              channels=1)  # fmt: skip
    return vitbook.ssl.MP3(vit, mask_ratio=0.75)


def _esvit_correspondences():
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    index, cosine, grid_a, grid_b = _small_esvit().correspondences(a, b)
    return viz.plot_region_correspondences(
        a[0], b[0], index[0], cosine[0], grid_a, grid_b
    )


def _byol_history():
    from vitbook.ssl import BYOL, method_loss

    torch.manual_seed(0)
    vit = ViT(image_size=16, patch_size=4, num_classes=0, dim=16, depth=1, heads=2,
              channels=1)
    byol = BYOL(vit, total_steps=2, image_size=16, projection_dim=8, hidden_dim=16,
                predictor_hidden_dim=16)
    return vitbook.fit(byol, [torch.rand(4, 1, 16, 16)] * 3, steps=2, progress=False,
                       loss=method_loss, device="cpu")


def _esvit_history():
    return vitbook.fit(
        _small_esvit(), [torch.rand(4, 1, 16, 16)] * 3, steps=2, progress=False,
        device="cpu", loss=vitbook.ssl.method_loss,
    )


_IMAGES = torch.rand(2, 1, 28, 28)
_PHOTO = torch.rand(3, 64, 64)
_COST = {
    "sides": [4, 8],
    "tokens": [16, 64],
    "dim": 8,
    "window_size": 4,
    "seconds": {"global": [1e-4, 4e-4], "window": [1e-4, 2e-4]},
    "flops": {"global": [1e4, 1e5], "window": [1e4, 4e4]},
}

_REPORT = vitbook.train.RepresentationReport(
    rows={
        "pretrained": {"knn": 0.75, "linear": 0.73},
        "random init": {"knn": 0.66, "linear": 0.67},
        "raw pixels": {"knn": 0.82, "linear": 0.83},
        "supervised": {"knn": 0.82, "linear": 0.82},
    },
    k=20, n_train=100, n_test=100,
)  # fmt: skip

# a race of two methods (vitbook.ssl.race.equal_seconds) and its floor
_RACE = {
    name: {"steps": 9, "views": 1, "images_seen": 90, "seconds": 1.0, **acc}
    for name, acc in (
        ("MAE", {"knn": 0.70, "linear": 0.68}),
        ("DINO", {"knn": 0.60, "linear": 0.55}),
        ("random init", {"knn": 0.63, "linear": 0.59}),
    )
}

_TIMED = vitbook.train.History(
    evals=[{"step": s, "seconds": s / 10, "test_acc": 0.5 + s / 100} for s in (5, 10)]
)

FIGURES = {
    "image_grid": lambda: viz.image_grid(_IMAGES, ["a", "b"]),
    "plot_confusion": lambda: viz.plot_confusion(
        torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), ["a", "b"]
    ),
    "plot_history": lambda: viz.plot_history(_history()),
    "plot_pipeline": lambda: viz.plot_pipeline([("a", ["1"]), ("b", ["2", "3"])]),
    "plot_patches": lambda: viz.plot_patches(_IMAGES[0], 7),
    "plot_position_similarity": lambda: viz.plot_position_similarity(
        _small_vit().pos_embed, (4, 4), num_prefix_tokens=1
    ),
    "plot_attention": lambda: viz.plot_attention(
        _IMAGES, _attention_maps(_small_vit(), _IMAGES), (4, 4)
    ),
    "plot_attention_heads": lambda: viz.plot_attention_heads(
        _IMAGES[0], [m[0] for m in _attention_maps(_small_vit(), _IMAGES)], (4, 4)
    ),
    "plot_attention_weights": lambda: viz.plot_attention_weights(
        torch.rand(2, 4, 4).softmax(-1), list("abcd")
    ),
    "plot_vit_architecture": lambda: viz.plot_vit_architecture(_small_vit()),
    "plot_windows": lambda: viz.plot_windows(_PHOTO, 8, 4),
    "plot_cyclic_shift": lambda: viz.plot_cyclic_shift(_PHOTO, 8, 4),
    "plot_shift_masks": lambda: viz.plot_shift_masks(4, 2),
    "plot_relative_position_bias": lambda: viz.plot_relative_position_bias(
        _small_swin()
    ),
    "plot_swin_architecture": lambda: viz.plot_swin_architecture(_small_swin()),
    "plot_attention_cost": lambda: viz.plot_attention_cost(_COST),
    # chapter 3: Twins
    "plot_receptive_fields": lambda: viz.plot_receptive_fields(
        _PHOTO, 4, (3, 10), window_size=4, sr_ratio=4
    ),
    "plot_local_global_cost": lambda: viz.plot_local_global_cost(
        viz.measure_local_global_cost(
            sides=(8, 16), dim=8, heads=2, window_size=4, sr_ratio=4, repeats=1
        )
    ),
    # chapter 4: ScalableViT
    "plot_scalable_receptive_fields": lambda: viz.plot_scalable_receptive_fields(
        _PHOTO, 4, (3, 4), window_size=4, sr_ratio=4, c_ratio=1.25, dim=16
    ),
    # chapter 5: NaViT
    "plot_sizes": lambda: viz.plot_sizes(
        [torch.rand(1, 8, 16), torch.rand(3, 16, 8)], ["x", "y"]
    ),
    "plot_packing": lambda: viz.plot_packing(
        vitbook.packing.pack([64, 64, 64, 16, 16, 16, 16], 100, "ffd")
    ),
    "plot_packing_masks": lambda: viz.plot_packing_masks(_packed_features(), 1),
    "plot_utilization": lambda: viz.plot_utilization(
        [64, 64, 64, 16, 16, 16, 16], [64, 100, 128]
    ),
    "plot_accuracy_vs_resolution": lambda: viz.plot_accuracy_vs_resolution(
        {"a": {(8, 8): 0.5, (8, 16): 0.7}, "b": {(8, 8): 0.6, (8, 16): 0.4}}
    ),
    # chapter 6: MAE
    "plot_reconstructions": lambda: _mae_reconstructions(),
    "plot_masking_ratios": lambda: viz.plot_masking_ratios(
        _small_mae(), _IMAGES, (0.25, 0.75)
    ),
    "plot_pretraining": lambda: viz.plot_pretraining(
        _history(), [(0, torch.rand(3, 1, 28, 28)), (29, torch.rand(3, 1, 28, 28))]
    ),
    "plot_finetuning": lambda: viz.plot_finetuning({"a": _history(), "b": _history()}),
    # the method diagrams of chapters 6-10, drawn from the method objects
    "plot_branches": lambda: viz.plot_branches(
        [("a", ["1"]), ("b", ["2", "3"])], [("c", [])], ("loss", ["x"]), link=(0, "EMA")
    ),
    "plot_mae_method": lambda: viz.plot_mae_method(_small_mae()),
    "plot_statistics_leak": lambda: viz.plot_statistics_leak(
        _IMAGES, _small_mae().reconstruct(_IMAGES), _small_mae().reconstruct(_IMAGES),
        (4, 4),
    ),
    "plot_dino_method": lambda: viz.plot_dino_method(_small_dino()),
    "plot_esvit_method": lambda: viz.plot_esvit_method(_small_esvit()),
    "plot_byol_method": lambda: viz.plot_byol_method(_small_byol()),
    "plot_mp3_method": lambda: viz.plot_mp3_method(_small_mp3()),
    # chapter 7: DINO
    "plot_multicrop": lambda: viz.plot_multicrop(
        torch.rand(3, 48, 48), vitbook.ssl.MultiCrop(24, 12, num_local=3, seed=0)
    ),
    "plot_class_token_attention": lambda: viz.plot_class_token_attention(
        _small_vit(), _IMAGES
    ),
    "plot_collapse_diagnostics": lambda: viz.plot_collapse_diagnostics(
        {"a": _diagnostics(), "b": _diagnostics()}, max_entropy=2.0
    ),
    # chapter 8: EsViT
    "plot_region_correspondences": lambda: _esvit_correspondences(),
    "plot_esvit_diagnostics": lambda: viz.plot_esvit_diagnostics(_esvit_history()),
    # chapter 9: BYOL
    "plot_byol_diagnostics": lambda: viz.plot_byol_diagnostics(
        {"a": _byol_history(), "b": _byol_history()}, projection_dim=8
    ),
    # chapter 10: MP3
    "plot_position_confusion": lambda: viz.plot_position_confusion(
        torch.arange(16).repeat(3, 1), (4, 4)
    ),
    "plot_position_arrows": lambda: viz.plot_position_arrows(
        _IMAGES, torch.arange(16).flip(0).repeat(2, 1), (4, 4)
    ),
    "plot_pyramid_architecture": lambda: viz.plot_pyramid_architecture(
        vitbook.ScalableViT(
            image_size=28, num_classes=10, channels=1, patch_size=2, dims=(16, 32, 64),
            depths=(2, 2, 2), heads=(2, 2, 2), window_sizes=7, sr_ratios=(4, 2, 1),
            c_ratios=(1.25, 1.25, 1),
        )
    ),
    "plot_navit_pipeline": lambda: viz.plot_navit_pipeline(
        vitbook.NaViT(
            max_image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2,
            token_budget=20, channels=1,
        ),
        [torch.rand(1, h, w) for h, w in [(16, 8), (8, 8), (4, 12), (16, 16)]],
    ),
    "plot_gradient_reach": lambda: viz.plot_gradient_reach(
        side=8, window_size=4, sr_ratio=4, depth=4
    ),
    # helpers that compute or convert, and draw nothing
    "stack_kinds": None,
    "gradient_reach": None,
    "dense_lsa_weights": None,
    "receptive_fields": None,
    "measure_local_global_cost": None,
    "attention_memory": None,
    "scalable_receptive_fields": None,
    "utilization_table": None,
    "masked_rgb": None,
    "class_token_attention": None,
    "position_confusion": None,
    "to_image": None,
    "patch_grid": None,
    "shape_text": None,
    "position_similarity": None,
    "attention_rollout": None,
    "measure_attention_cost": None,
    # chapter 11: comparison
    "plot_time_to_accuracy": lambda: viz.plot_time_to_accuracy(
        {"a": _TIMED, "b": _TIMED}
    ),
    "plot_representation_comparison": lambda: viz.plot_representation_comparison(
        {"MAE": _REPORT, "DINO": _REPORT}
    ),
    "plot_equal_seconds": lambda: viz.plot_equal_seconds(_RACE, {"MAE": _REPORT}),
}
DRAWN = sorted(k for k, v in FIGURES.items() if v is not None)


def test_every_viz_name_has_an_example():
    missing = sorted(set(viz.__all__) - set(FIGURES))
    assert not missing, (
        f"add an example for {missing} to FIGURES in tests/test_viz.py (None for a "
        "function that draws nothing)"
    )
    for name, example in FIGURES.items():
        if example is None:  # a helper must not quietly draw
            assert not name.startswith("plot_"), f"{name} is a figure: give an example"


def _colorbars(fig):
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None)]


def _value_images(ax):
    """Images whose colour encodes something: a 2-D array through a colour map
    (greyscale pictures and RGB(A) images excluded), and whether the map is
    categorical (a handful of colours, explained by a legend, not a colour bar)."""
    for im in ax.images:
        array = im.get_array()
        if array is None or array.ndim != 2 or im.cmap.name in ("gray", "Greys_r"):
            continue
        yield im, im.cmap.N <= 16


@pytest.mark.parametrize("name", DRAWN)
def test_figure_labels_its_axes_and_explains_its_colours(name):
    fig = FIGURES[name]()
    try:
        bars = _colorbars(fig)
        bar_axes = {id(b.ax) for b in bars}
        legends = bool(fig.legends) or any(ax.get_legend() for ax in fig.axes)
        sup_x = fig._supxlabel is not None and fig._supxlabel.get_text()
        sup_y = fig._supylabel is not None and fig._supylabel.get_text()
        for ax in fig.axes:
            if id(ax) in bar_axes:
                continue
            # a plot with axes (a scale: ticks) labels both; a picture panel whose frame
            # only carries a caption (no ticks on either axis) has no scale to label
            scaled = len(ax.get_xticks()) or len(ax.get_yticks())
            if ax.axison and ax.get_visible() and scaled:
                where = f"{name}: panel {ax.get_title()!r}"
                assert ax.get_xlabel() or sup_x, f"{where} has no x-axis label"
                assert ax.get_ylabel() or sup_y, f"{where} has no y-axis label"
            for im, categorical in _value_images(ax):
                if categorical:
                    assert legends, f"{name}: categorical colours without a legend"
                    continue
                same = [
                    b for b in bars
                    if b.mappable.cmap.name == im.cmap.name
                    and np.isclose(b.mappable.norm.vmin, im.norm.vmin)
                    and np.isclose(b.mappable.norm.vmax, im.norm.vmax)
                ]
                assert same, (
                    f"{name}: panel {ax.get_title()!r} encodes values in colour "
                    f"({im.cmap.name}, {im.norm.vmin:.3g}..{im.norm.vmax:.3g}) with no "
                    "colour bar on that scale"
                )
        for bar in bars:
            assert bar.ax.get_ylabel() or bar.ax.get_xlabel() or name == "plot_confusion"
    finally:
        plt.close(fig)


def test_relative_position_bias_uses_one_scale_for_every_head_and_stage():
    model = _small_swin()
    with torch.no_grad():
        model.stages[1].blocks[0].attn.relative_position_bias_table.mul_(50)
    fig = viz.plot_relative_position_bias(model, stage=0)
    limits = {(im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.images}
    biggest = model.stages[1].blocks[0].attn.relative_position_bias_table.abs().max()
    assert len(limits) == 1 and np.isclose(limits.pop()[1], biggest.item())
    plt.close(fig)


def test_position_similarity_colours_span_the_values_not_minus_one_to_one():
    fig = viz.plot_position_similarity(
        vitbook.layers.posemb_sincos_2d(7, 7, 64), (7, 7)
    )
    sim = viz.position_similarity(vitbook.layers.posemb_sincos_2d(7, 7, 64), (7, 7))
    norm = fig.axes[0].images[0].norm
    assert np.isclose(norm.vmin, sim.min().item()) and norm.vmax == 1
    assert [ax.get_title() for ax in fig.axes[:8]] == [str(i) for i in range(8)]
    plt.close(fig)


def test_architecture_diagrams_print_the_models_own_shapes():
    fig = viz.plot_vit_architecture(_small_vit())
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "17 x 32" in text and "2 x block" in text and "10 logits" in text
    assert "4 x 4 = 16" in text and "49 numbers each" in text
    plt.close(fig)
    fig = viz.plot_swin_architecture(_small_swin())
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "map 4 x 4" in text and "width 16" in text and "map 2 x 2" in text
    assert "width 32" in text and "window 2x2 (all)" in text and "shift 1x1" in text
    plt.close(fig)
    for model, first, second in (
        (vitbook.Twins, "LSA 2x2", "GSA r=2"),
        (vitbook.ScalableViT, "IWSA 2x2", "SSA r=2, c=1.25"),
    ):
        extra = {"c_ratios": (1.25, 1)} if model is vitbook.ScalableViT else {}
        net = model(
            image_size=28, num_classes=10, channels=1, patch_size=7, dims=(8, 16),
            depths=(2, 2), heads=(2, 2), window_sizes=2, sr_ratios=(2, 1), **extra,
        )  # fmt: skip
        fig = viz.plot_pyramid_architecture(net)
        lines = [t.get_text() for t in fig.axes[0].texts]
        # the stages' maps and widths, and the blocks in the order they run
        assert "map 4 x 4" in lines and "width 8" in lines and "map 2 x 2" in lines
        assert lines.index(first) < lines.index("PEG") < lines.index(second)
        assert "linear -> 10" in lines and "1 x 28 x 28" in lines
        plt.close(fig)


# ------------------------------------------------------------------ shared helpers
def test_moving_average_averages_the_window_and_starts_where_the_values_start():
    from vitbook.viz.common import moving_average

    values = [4.0, 0.0, 2.0, 6.0, 1.0]
    # the first two average what there is so far: no dip towards zero at the start
    np.testing.assert_allclose(moving_average(values, 3), [4, 2, 2, 8 / 3, 3])
    np.testing.assert_array_equal(moving_average(values, 1), values)
    np.testing.assert_array_equal(moving_average(values, 6), values)


def test_tint_colours_each_patch_by_its_label_and_leaves_the_rest_clear():
    from vitbook.viz.common import tint

    fig, ax = plt.subplots()
    labels = np.array([[0, 1], [2, 1]])
    tint(ax, labels, {1: "red", 2: (0.0, 0.0, 1.0)}, patch_size=2, alpha=0.5)
    # (rows * patch_size, columns * patch_size, rgba)
    pixels = np.asarray(ax.images[-1].get_array())
    assert pixels.shape == (4, 4, 4)
    np.testing.assert_array_equal(pixels[:2, :2], 0)
    np.testing.assert_array_equal(pixels[:, 2:], [[[1, 0, 0, 0.5]] * 2] * 4)
    np.testing.assert_array_equal(pixels[2:, :2], [[[0, 0, 1, 0.5]] * 2] * 2)
    # a boolean mask with one colour, at the default alpha of the receptive fields
    tint(ax, labels == 2, {True: "red"}, patch_size=1)
    mask = np.asarray(ax.images[-1].get_array())
    np.testing.assert_array_equal(mask[..., 3], [[0, 0], [0.45, 0]])
    plt.close(fig)


def test_grid_lines_fall_between_the_cells_of_step_patches():
    from vitbook.viz.common import grid_lines

    fig, ax = plt.subplots()
    # 4 x 2 patches of 8 pixels, cells of 2 x 2 patches
    grid_lines(ax, 4, 2, 2, 8, color="k")
    rows = [line.get_ydata()[0] for line in ax.lines[:3]]
    columns = [line.get_xdata()[0] for line in ax.lines[3:]]
    # pixel centres at whole numbers: the borders at half pixels
    assert (rows, columns) == ([-0.5, 15.5, 31.5], [-0.5, 15.5])
    plt.close(fig)


@pytest.mark.parametrize(
    "module, measure, kinds, sides",
    [
        ("swin", "measure_attention_cost", ("global", "window"), (4, 8)),
        ("twins", "measure_local_global_cost", ("full", "swin", "LSA", "GSA"), (8, 16)),
    ],
)
def test_the_cost_figures_time_every_kind_and_size_through_interleaved_median(
    monkeypatch, module, measure, kinds, sides
):
    import importlib

    figures = importlib.import_module(f"vitbook.viz.{module}")
    seen = {}

    def interleaved_median(calls, rounds, warmup=0, device=None):
        seen.update(keys=list(calls), rounds=rounds, warmup=warmup)
        for call in calls.values():  # each one runs
            call()
        # a different number for every (kind, side)
        return {key: float(i) for i, key in enumerate(calls)}

    monkeypatch.setattr(figures, "interleaved_median", interleaved_median)
    cost = getattr(figures, measure)(
        sides=sides, dim=8, heads=2, window_size=4, repeats=3
    )
    keys = seen.pop("keys")
    assert seen == {"rounds": 3, "warmup": 1}
    assert sorted(keys) == sorted((k, s) for k in kinds for s in sides)
    # each kind's medians, one per size, in the order of the sizes
    expected = {k: [float(keys.index((k, s))) for s in sides] for k in kinds}
    assert cost["seconds"] == expected


# The theme's content column is 688 px wide; a wider figure is scaled down to it.
COLUMN_PX = 688
SMALLEST_TEXT_PX = 9


def smallest_text_px(fig) -> tuple[float, str]:
    """The height in pixels of the figure's smallest visible text when its saved image
    (cropped to what is drawn, as the book saves it) is shown in the page's column,
    and that text."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width_px = fig.get_tightbbox(renderer).width * fig.dpi
    shrink = min(1.0, COLUMN_PX / width_px)
    texts = [
        t
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure() is fig
    ]
    smallest = min(texts, key=lambda t: t.get_fontsize())
    return smallest.get_fontsize() * fig.dpi / 72 * shrink, smallest.get_text()


@pytest.mark.parametrize("name", DRAWN)
def test_every_text_of_a_figure_is_readable_in_the_page_column(name):
    fig = FIGURES[name]()
    try:
        px, text = smallest_text_px(fig)
        assert px >= SMALLEST_TEXT_PX, (
            f"{name}: {text!r} is {px:.1f} px tall in the {COLUMN_PX} px column (at "
            f"least {SMALLEST_TEXT_PX}): a narrower layout or larger text"
        )
    finally:
        plt.close(fig)


def test_method_diagrams_print_the_methods_own_settings():
    def text(fig):
        lines = [t.get_text() for t in fig.axes[0].texts]
        plt.close(fig)
        return lines

    lines = text(viz.plot_dino_method(_small_dino(teacher_temp=0.05)))
    # K from the head, the crops from the multi-crop, the temperatures from the method
    assert "head -> K = 1,024" in lines and "3 local 8x8" in lines
    assert any("0.04 -> 0.05" in t for t in lines)
    # two teacher views, each against the 2 + 3 student views but itself: 8 pairs
    assert "views: 8 pairs" in lines
    assert "no centering" in text(viz.plot_dino_method(_small_dino(centering=False)))
    lines = text(viz.plot_mae_method(_small_mae()))
    assert "hide 12 at random" in lines and "keep 4" in lines and "4 tokens only" in lines
    assert "+ 12 mask tokens" in lines and "49 pixels per patch" in lines
    lines = text(viz.plot_mp3_method(_small_mp3()))
    assert "keys: 4 of 16" in lines and "linear -> 16" in lines
    assert "EMA" in text(viz.plot_byol_method(_small_byol()))
    lines = text(viz.plot_byol_method(_small_byol(mode="simsiam", predictor=False)))
    assert "same weights" in lines and "none" in lines
    lines = text(viz.plot_esvit_method(_small_esvit()))
    assert "region head -> 32" in lines and "region: x 0.5, each" in lines


def test_race_bars_are_the_race_with_the_floor_and_the_chapters_runs():
    fig = viz.plot_equal_seconds(_RACE, {"DINO": _REPORT})
    try:
        knn = fig.axes[0]
        assert knn.get_ylim()[0] == 0, "bars must start at zero"
        labels = [t.get_text() for t in knn.get_xticklabels()]
        assert labels == ["MAE", "DINO"], "the floor is a line, not a method"
        heights = [p.get_height() for p in knn.patches]
        assert heights == pytest.approx([70, 60])
        floor = [ln for ln in knn.lines if ln.get_label() == "random init"]
        assert floor and floor[0].get_ydata()[0] == pytest.approx(63)
        # the chapter's own run of DINO (x = 1), not of MAE
        (own,) = [ln for ln in knn.lines if ln.get_label() == "its chapter's own run"]
        assert list(own.get_xdata()) == [1] and own.get_ydata()[0] == pytest.approx(75)
    finally:
        plt.close(fig)


def test_representation_bars_start_at_zero_and_keep_the_given_order():
    reports = {m: _REPORT for m in ("MP3", "MAE")}
    fig = viz.plot_representation_comparison(reports)
    try:
        assert fig.axes[0].get_ylim()[0] == 0, "bars must start at zero"
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels == ["MP3", "MAE"]
    finally:
        plt.close(fig)
