"""EsViT: region matching by cosine similarity, the region loss, the 0.5/0.5 mix, the
teacher, and both backbones (Swin's last-stage map, ViT's patch tokens)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from vit_pytorch import es_vit

from factories import tiny_vit
from vitbook import Swin
from vitbook.ssl import EsViT, dino_loss, esvit_loss, match_regions, region_loss
from vitbook.ssl.esvit import region_grid, view_and_regions


def tiny_swin():
    return Swin(
        image_size=16,
        num_classes=0,
        channels=1,
        patch_size=2,
        dim=8,
        depths=(1, 1),
        heads=(1, 2),
        window_size=4,
        drop_path=0.0,
    )


def tiny_esvit(backbone, **kw):
    args = dict(
        total_steps=10,
        global_size=16,
        local_size=8,
        num_local=2,
        out_dim=32,
        hidden_dim=32,
        bottleneck_dim=8,
    )
    return EsViT(backbone, **{**args, **kw})


# ----------------------------------------------------------------------- the matching
def disagreeing_features():
    """One student region, two teacher regions: the first teacher region is long and
    30 degrees away, the second short and 7 degrees away. Cosine picks the second,
    the raw dot product the first."""
    student = torch.tensor([[[0.5, 0.866]]])  # (b=1, n_s=1, d=2), 60 degrees
    teacher = torch.tensor([[[10.0 * 0.866, 10.0 * 0.5], [0.6, 0.8]]])  # 30, 53 deg
    return student, teacher


def test_region_matching_follows_cosine_similarity_not_the_dot_product():
    student, teacher = disagreeing_features()
    assert (student @ teacher.transpose(1, 2)).argmax(-1).item() == 0  # dot: long one
    assert match_regions(student, teacher).item() == 1  # official: closest direction
    assert match_regions(student, teacher, match="dot").item() == 0  # the seed


def test_region_loss_targets_the_cosine_match_where_the_seeds_loss_does_not():
    student, teacher = disagreeing_features()
    s_logits = torch.tensor([[[0.0, 0.0, 0.0]]])
    t_logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # two targets
    center = torch.zeros(1, 3)
    t_probs = F.softmax(t_logits / 0.1, dim=-1)
    ours = region_loss(s_logits, t_probs, student, teacher, 1.0)
    # the target is teacher region 1, whichever way: uniform student -> log(3)
    assert torch.isclose(ours, torch.log(torch.tensor(3.0)))
    s_logits = torch.tensor([[[0.0, 0.0, 4.0]]])  # the student agrees with region 1
    ours = region_loss(s_logits, t_probs, student, teacher, 1.0)
    seed = es_vit.region_loss_fn(t_logits, s_logits, teacher, student, 0.1, 1.0, center)
    expected = -F.log_softmax(s_logits[0, 0], -1)[2]  # matched to region 1
    assert torch.isclose(ours, expected, atol=1e-6)
    assert not torch.isclose(seed, expected, atol=1e-3)  # the seed matched region 0


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_region_loss_equals_the_seeds_where_cosine_and_dot_agree(dtype, tol):
    """With unit-length features the dot product is the cosine: vit-pytorch's
    ``region_loss_fn`` and ours must then give the same number (the logits are kept
    moderate: the seed adds 1e-20 inside its log, which clips tiny probabilities)."""
    torch.manual_seed(0)
    s_feat = F.normalize(torch.randn(3, 5, 6, dtype=dtype), dim=-1)
    t_feat = F.normalize(torch.randn(3, 7, 6, dtype=dtype), dim=-1)
    s_logits = 0.3 * torch.randn(3, 5, 11, dtype=dtype)
    t_logits = 0.3 * torch.randn(3, 7, 11, dtype=dtype)
    center = 0.1 * torch.randn(1, 11, dtype=dtype)
    t_probs = F.softmax((t_logits - center) / 0.04, dim=-1)
    ours = region_loss(s_logits, t_probs, s_feat, t_feat, 0.1)
    seed = es_vit.region_loss_fn(t_logits, s_logits, t_feat, s_feat, 0.04, 0.1, center)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, seed, atol=tol, rtol=tol)


def test_region_loss_equals_a_hand_computation():
    # one image; student view with 2 regions, teacher view with 2 regions, K = 2
    s_feat = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    t_feat = torch.tensor([[[0.0, 3.0], [2.0, 0.1]]])  # s0 -> t1, s1 -> t0
    s_logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    t_logits = torch.tensor([[[0.2, 0.0], [0.0, 0.4]]])
    center = torch.tensor([[0.1, -0.1]])
    t_temp, s_temp = 0.5, 0.25
    t_probs = F.softmax((t_logits - center) / t_temp, dim=-1)
    loss = region_loss(s_logits, t_probs, s_feat, t_feat, s_temp)

    def softmax(a, b):  # two-class softmax, by hand
        ea, eb = torch.exp(torch.tensor(a)), torch.exp(torch.tensor(b))
        return ea / (ea + eb), eb / (ea + eb)

    t0 = softmax((0.2 - 0.1) / 0.5, (0.0 + 0.1) / 0.5)  # (0.5, 0.5)
    t1 = softmax((0.0 - 0.1) / 0.5, (0.4 + 0.1) / 0.5)
    s0 = softmax(1.0 / 0.25, 0.0)
    s1 = softmax(0.0, 1.0 / 0.25)
    ce0 = -(t1[0] * torch.log(s0[0]) + t1[1] * torch.log(s0[1]))  # s0 learns from t1
    ce1 = -(t0[0] * torch.log(s1[0]) + t0[1] * torch.log(s1[1]))  # s1 learns from t0
    torch.testing.assert_close(loss, (ce0 + ce1) / 2)


def test_region_head_normalizes_each_region_over_features_not_over_tokens():
    """DINO's head L2-normalizes each region's bottleneck vector by itself, so a
    region's output does not depend on the other regions; the seed's ``L2Norm`` on a
    ``(b, n, d)`` tensor normalizes over dim 1, the tokens, and mixes them."""
    torch.manual_seed(0)
    head = EsViT(
        tiny_vit(),
        total_steps=1,
        global_size=16,
        local_size=8,
        out_dim=32,
        hidden_dim=32,
        bottleneck_dim=8,
    ).student.region_head
    regions = torch.randn(1, 3, 16)
    other = regions.clone()
    other[:, 1:] *= 5.0  # change every region but the first
    with torch.no_grad():
        torch.testing.assert_close(head(regions)[:, 0], head(other)[:, 0])
        bottleneck = head.mlp(regions)
        assert torch.allclose(
            F.normalize(bottleneck, dim=-1).norm(dim=-1), torch.ones(1)
        )
        seed = es_vit.L2Norm()
        first = seed(bottleneck)[:, 0]
        assert not torch.allclose(first, seed(head.mlp(other))[:, 0])  # mixes regions


def test_region_head_with_batchnorm_normalizes_over_every_region_of_every_image():
    """``use_bn``: the region head's BatchNorm sees the ``(b, n, d)`` regions as one
    batch of ``b * n`` rows, so the head gives the same output on the tokens and on
    their flattened rows, in training and in eval mode; and every parameter of both
    heads, BatchNorm's included, gets a gradient."""
    torch.manual_seed(0)
    method = tiny_esvit(tiny_swin(), use_bn=True)
    head = method.student.region_head
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2
    regions = torch.randn(3, 5, method.backbone.num_features)
    for training in (True, False):
        head.train(training)
        with torch.no_grad():
            out, flat = head(regions), head(regions.flatten(0, 1))  # (3, 5, K)
        torch.testing.assert_close(out, flat.unflatten(0, (3, 5)))
    method.train()
    loss = method(torch.rand(4, 1, 16, 16))
    assert torch.isfinite(loss)
    loss.backward()
    for head in (method.student.head, method.student.region_head):
        for name, p in head.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
    method.step_teacher()  # BatchNorm statistics travel to the teacher

    def first_bn(module):
        return next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d))

    student_bn = first_bn(method.student.region_head)
    teacher_bn = first_bn(method.teacher.module.region_head)
    torch.testing.assert_close(teacher_bn.running_mean, student_bn.running_mean)


def test_esvit_loss_is_half_view_half_region_over_all_cross_pairs():
    torch.manual_seed(0)
    b, k, d = 2, 5, 4
    n = [4, 4, 1]  # two global views of 4 regions, one local view of 1
    s_view, t_view = torch.randn(3, b, k), torch.randn(2, b, k)
    s_reg = [torch.randn(b, m, k) for m in n]
    s_feat = [torch.randn(b, m, d) for m in n]
    t_reg = [torch.randn(b, 4, k) for _ in range(2)]
    t_feat = [torch.randn(b, 4, d) for _ in range(2)]
    center, r_center = 0.1 * torch.randn(1, k), 0.1 * torch.randn(1, k)
    loss, view, region = esvit_loss(
        s_view, t_view, s_reg, t_reg, s_feat, t_feat, center, r_center, 0.1, 0.04
    )
    torch.testing.assert_close(view, dino_loss(s_view, t_view, center, 0.1, 0.04))
    pairs = [(i, v) for i in range(2) for v in range(3) if v != i]
    expected = sum(
        region_loss(
            s_reg[v],
            F.softmax((t_reg[i] - r_center) / 0.04, dim=-1),
            s_feat[v],
            t_feat[i],
            0.1,
        )
        for i, v in pairs
    ) / len(pairs)
    torch.testing.assert_close(region, expected)
    torch.testing.assert_close(loss, 0.5 * view + 0.5 * region)


def test_region_targets_are_centered_with_the_region_center_not_the_view_center():
    torch.manual_seed(0)
    args = [torch.randn(b, 2, 3) for b in (1,)]
    s_view, t_view = torch.randn(2, 1, 3), torch.randn(2, 1, 3)
    s_reg, t_reg = [torch.randn(1, 2, 3)] * 2, [torch.randn(1, 2, 3)] * 2
    feats = args * 2
    zero, shift = torch.zeros(1, 3), torch.tensor([[3.0, 0.0, 0.0]])
    _, view_a, region_a = esvit_loss(
        s_view, t_view, s_reg, t_reg, feats, feats, zero, shift, 0.1, 0.1
    )
    _, view_b, region_b = esvit_loss(
        s_view, t_view, s_reg, t_reg, feats, feats, shift, zero, 0.1, 0.1
    )
    assert not torch.isclose(region_a, region_b)  # the region center moves the region
    assert not torch.isclose(view_a, view_b)  # the view center moves the view loss


# ------------------------------------------------------------------------- the method
@pytest.mark.parametrize("make", [tiny_swin, tiny_vit], ids=["swin", "vit"])
def test_regions_are_the_last_map_positions_or_the_patch_tokens(make):
    backbone = make()
    x = torch.randn(2, 1, 16, 16)
    view, regions = view_and_regions(backbone, x)
    h, w = region_grid(backbone, x)
    assert view.shape == (2, backbone.num_features)
    assert regions.shape == (2, h * w, backbone.num_features)
    features = backbone.forward_features(x)
    if isinstance(backbone, Swin):  # the view is the mean of the regions
        assert (h, w) == tuple(features.shape[-2:]) == (4, 4)
        torch.testing.assert_close(view, regions.mean(1))
    else:  # the view is the class token, the regions the patches after it
        assert (h, w) == (4, 4)
        torch.testing.assert_close(view, features[:, 0])
        torch.testing.assert_close(regions, features[:, 1:])
    crop = x[..., :8, :8]  # a local crop: fewer regions
    assert region_grid(backbone, crop) == (2, 2)
    assert view_and_regions(backbone, crop)[1].shape == (2, 4, backbone.num_features)


@pytest.mark.parametrize("make", [tiny_swin, tiny_vit], ids=["swin", "vit"])
def test_esvit_trains_on_swin_and_vit_and_the_teacher_gets_no_gradients(make):
    torch.manual_seed(0)
    method = tiny_esvit(make())
    loss = method(torch.rand(4, 1, 16, 16))
    assert loss.ndim == 0 and torch.isfinite(loss)
    m = method.metrics
    torch.testing.assert_close(loss.detach(), 0.5 * m["view"] + 0.5 * m["region"])
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert not any(p.requires_grad for p in method.teacher.parameters())
    grads = [p.grad for p in method.student.region_head.parameters() if p.requires_grad]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert method.backbone is method.student.backbone


def test_centers_are_emas_of_the_teachers_view_and_region_outputs():
    torch.manual_seed(0)
    method = tiny_esvit(tiny_swin(), center_momentum=0.75)
    images = torch.rand(3, 1, 16, 16)
    method.multicrop.reseed(0)
    views = method.multicrop(images)
    with torch.no_grad():
        outs = [method.teacher(v) for v in views[:2]]
    method.multicrop.reseed(0)
    method(images)
    view_mean = torch.cat([o[1] for o in outs]).mean(0, keepdim=True)
    region_mean = torch.cat([o[3] for o in outs]).flatten(0, 1).mean(0, keepdim=True)
    torch.testing.assert_close(method.center, 0.25 * view_mean)
    torch.testing.assert_close(method.region_center, 0.25 * region_mean)


def test_step_teacher_moves_only_the_teacher_toward_the_student():
    torch.manual_seed(0)
    method = tiny_esvit(tiny_vit(), momentum=0.5, final_momentum=0.5)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.teacher.parameters()]
    student = [p.clone() for p in method.student.parameters()]
    method.step_teacher()
    for t, t0, s in zip(method.teacher.parameters(), before, student):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s)


def test_region_weight_zero_leaves_the_view_task_only():
    torch.manual_seed(0)
    method = tiny_esvit(tiny_swin(), region_weight=0.0)
    loss = method(torch.rand(2, 1, 16, 16))
    torch.testing.assert_close(loss.detach(), method.metrics["view"])


def test_correspondences_match_a_view_to_itself_region_by_region():
    torch.manual_seed(0)
    method = tiny_esvit(tiny_swin())
    x = torch.rand(2, 1, 16, 16)
    index, cosine, grid_a, grid_b = method.correspondences(x, x)
    assert grid_a == grid_b == (4, 4)
    assert torch.equal(index, torch.arange(16).expand(2, -1))
    torch.testing.assert_close(cosine, torch.ones(2, 16))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="match='l2'"):
        match_regions(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), match="l2")
    with pytest.raises(ValueError, match="region_weight=2"):
        tiny_esvit(tiny_vit(), region_weight=2)
    with pytest.raises(ValueError, match="student_temp=0"):
        tiny_esvit(tiny_vit(), student_temp=0)


# --------------------------------------------------------------------------- figures
def test_correspondence_figure_draws_one_line_per_region_with_a_colour_bar():
    from matplotlib.patches import ConnectionPatch

    from vitbook import viz

    torch.manual_seed(0)
    method = tiny_esvit(tiny_swin())
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    index, cosine, grid_a, grid_b = method.correspondences(a, b)
    fig = viz.plot_region_correspondences(
        a[0], b[0], index[0], cosine[0], grid_a, grid_b
    )
    lines = [p for p in fig.artists if isinstance(p, ConnectionPatch)]
    assert len(lines) == grid_a[0] * grid_a[1] == 16
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert all(ax.get_xlabel() for ax in fig.axes[:2])
    with pytest.raises(ValueError, match="index has 3 entries"):
        viz.plot_region_correspondences(
            a[0], b[0], index[0, :3], cosine[0], grid_a, grid_b
        )


def test_diagnostics_figure_reads_the_metrics_fit_recorded():
    from vitbook import fit, viz
    from vitbook.ssl import method_loss

    torch.manual_seed(0)
    method = tiny_esvit(tiny_vit())
    history = fit(
        method,
        [torch.rand(4, 1, 16, 16)] * 3,
        steps=3,
        loss=method_loss,
        progress=False,
    )
    assert {"view", "region", "entropy", "std", "erank"} <= set(history.steps[-1])
    fig = viz.plot_esvit_diagnostics(history)
    assert [ax.get_title() for ax in fig.axes][1] == "teacher entropy"
    with pytest.raises(ValueError, match="method_loss"):
        viz.plot_esvit_diagnostics(type(history)(steps=[{"step": 1, "loss": 1.0}]))


# ----------------------------------------------------------- as the official code
def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]


@pytest.mark.parametrize("make", [tiny_swin, tiny_vit], ids=["swin", "vit"])
def test_each_head_runs_once_on_every_crop_and_every_region(make):
    """The official EsViT wrapper: the backbone once per resolution, the view head
    once on every crop's view feature, the region head once on the regions of every
    crop flattened into rows (16 per global crop, 4 per local one here). With
    ``use_bn`` the heads' BatchNorm then holds the statistics of that one call (each
    keeps its last batch's: momentum 1)."""
    method = tiny_esvit(make(), use_bn=True, num_local=3).train()
    for bn in batchnorms(method):
        bn.momentum = 1.0
        bn.reset_running_stats()
    nets = {"student": method.student, "teacher": method.teacher.module}
    fresh = {name: copy.deepcopy(net) for name, net in nets.items()}
    images = torch.rand(4, 1, 16, 16)
    method.multicrop.reseed()
    views = method.multicrop(images)
    method.multicrop.reseed()
    method(images)
    with torch.no_grad():
        for name, crops in (("student", views), ("teacher", views[:2])):
            net = nets[name]
            groups = [crops[:2]] + ([crops[2:]] if crops[2:] else [])
            outs = [view_and_regions(net.backbone, torch.cat(g)) for g in groups]
            if name == "student":  # global and local crops: 16 and 4 regions
                assert [o[1].shape[1] for o in outs] == [16, 4]
            fresh[name].head(torch.cat([view for view, _ in outs]))
            fresh[name].region_head(torch.cat([r.flatten(0, 1) for _, r in outs]))
            for head in ("head", "region_head"):
                used = batchnorms(getattr(net, head))
                expected = batchnorms(getattr(fresh[name], head))
                assert len(used) == 2
                for a, b in zip(used, expected):
                    torch.testing.assert_close(a.running_mean, b.running_mean)
                    torch.testing.assert_close(a.running_var, b.running_var)


def test_a_list_of_views_gives_each_views_own_outputs_without_bn():
    torch.manual_seed(0)
    net = tiny_esvit(tiny_swin()).student
    views = [torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16), torch.rand(3, 1, 8, 8)]
    together = net(views)
    for v, x in enumerate(views):
        view, regions = view_and_regions(net.backbone, x)
        alone = view, net.head(view), regions, net.region_head(regions)
        single = net(x)  # a tensor in: tensors out
        assert all(torch.equal(out[0], t) for out, t in zip(net([x]), single))
        for slot, (a, b) in enumerate(zip(together, alone)):
            assert a[v].shape == b.shape, (v, slot)
            torch.testing.assert_close(a[v], b)


def test_both_heads_last_layers_get_no_gradient_during_the_first_steps():
    method = tiny_esvit(tiny_vit(), freeze_last_layer_steps=1)  # norm_last_layer off
    images = torch.rand(2, 1, 16, 16)
    for step in range(2):
        method.zero_grad()
        method(images).backward()
        method.after_backward()
        grads = {
            name: p.grad
            for name, p in method.student.named_parameters()
            if "last_layer" in name
        }
        heads = {name.split(".")[0] for name in grads}
        assert heads == {"head", "region_head"} and len(grads) == 4
        assert all((g is None) == (step == 0) for g in grads.values()), step
        assert method.backbone.patch_embed.proj.weight.grad is not None
        method.step_teacher()


def test_the_teacher_temperature_warms_up_over_the_first_tenth_by_default():
    method = tiny_esvit(tiny_vit(), total_steps=50)
    assert method.warmup_teacher_temp_steps == 5
    for step, temp in ((0, 0.04), (5, 0.07)):
        method.teacher.step.fill_(step)
        assert method.current_teacher_temp == pytest.approx(temp)
    constant = tiny_esvit(tiny_vit(), warmup_teacher_temp_steps=0)
    assert constant.current_teacher_temp == 0.07
    assert method.teacher_backbone is method.teacher.module.backbone


def test_defaults_are_main_esvit_and_its_readmes_runs():
    """main_esvit.py's defaults, and the README's runs where they set them
    (--teacher_temp 0.07 --warmup_teacher_temp_epochs 30 of 300, --norm_last_layer
    false)."""
    import inspect

    from vitbook.ssl.esvit import WARMUP_TEACHER_TEMP_FRACTION

    defaults = {k: p.default for k, p in inspect.signature(EsViT).parameters.items()}
    expected = dict(
        num_local=8, out_dim=65536, hidden_dim=2048, bottleneck_dim=256, nlayers=3,
        norm_last_layer=False, use_bn=False, student_temp=0.1, teacher_temp=0.07,
        warmup_teacher_temp=0.04, warmup_teacher_temp_steps=None,
        momentum=0.996, final_momentum=1.0,
        center_momentum=0.9, region_weight=0.5, match="cosine",
    )  # fmt: skip
    assert {k: defaults[k] for k in expected} == expected
    assert WARMUP_TEACHER_TEMP_FRACTION == 30 / 300


def test_true_correspondence_follows_the_crop_boxes():
    from vitbook.ssl.esvit import true_correspondence

    # the same crop: every region is itself
    box = torch.tensor([[0.0, 0.0, 28.0, 28.0]])
    index, inside = true_correspondence(box, box, (4, 4), (4, 4))
    assert torch.equal(index[0], torch.arange(16)) and inside.all()
    # view B is view A's right half, stretched: A's columns 2 and 3 are B's 0-1 and 2-3
    half = torch.tensor([[14.0, 0.0, 28.0, 28.0]])
    index, inside = true_correspondence(box, half, (4, 4), (4, 4))
    assert inside[0].view(4, 4)[:, :2].logical_not().all()
    assert inside[0].view(4, 4)[:, 2:].all()
    # A's region (row 1, col 2), centre x = 17.5: 25% into B, B's column 1
    assert index[0, 1 * 4 + 2] == 1 * 4 + 1
    # A's region (row 3, col 3), centre x = 24.5: 75% into B, B's column 3
    assert index[0, 3 * 4 + 3] == 3 * 4 + 3
    # a bottom-right quarter: only A's bottom-right quarter is inside, one region each
    quarter = torch.tensor([[14.0, 14.0, 28.0, 28.0]])
    index, inside = true_correspondence(box, quarter, (4, 4), (2, 2))
    assert inside[0].sum() == 4
    assert index[0][inside[0]].tolist() == [0, 1, 2, 3]
