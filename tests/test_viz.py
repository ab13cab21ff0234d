import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import vitbook
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
    fig = viz.plot_sizes([torch.rand(1, 8, 16), torch.rand(3, 16, 8)], ["x", "y"])
    assert len(fig.axes) == 2
