"""DINO: the loss, the teacher and the center, the heads' BatchNorm over every crop,
the temperature warm-up, the frozen last layer, collapse, and the official defaults.
The pieces DINO shares with the other methods (EMA, multi-crop, heads, diagnostics) are
tested in test_ssl_common.py."""

import copy
import math

import pytest
import torch

from vitbook import data
from vitbook.ssl import DINO, MultiCrop, dino_loss, embed
from vitbook.train import param_groups

from factories import tiny_vit




def tiny_dino(**kw):
    args = dict(
        total_steps=10,
        global_size=16,
        local_size=8,
        num_local=2,
        out_dim=32,
        hidden_dim=32,
        bottleneck_dim=8,
    )
    return DINO(tiny_vit(), **{**args, **kw})


# --------------------------------------------------------------------------- the loss
def test_dino_loss_equals_a_hand_computation():
    student = torch.tensor(
        [[[1.0, 0.0, -1.0]], [[0.5, 0.5, 0.0]], [[0.0, 2.0, 1.0]]]
    )  # (3 views, b=1, K=3): global 1, global 2, one local
    teacher = torch.tensor([[[0.2, 0.1, 0.0]], [[0.0, 0.3, 0.6]]])  # (2, 1, 3)
    center = torch.tensor([[0.1, 0.0, -0.1]])
    ts, tt = 0.1, 0.04

    def softmax(v, t):
        e = [math.exp(x / t) for x in v]
        return [x / sum(e) for x in e]

    total, pairs = 0.0, 0
    for i in range(2):
        q = softmax([a - c for a, c in zip(teacher[i, 0].tolist(), center[0])], tt)
        for v in range(3):
            if v == i:
                continue
            p = softmax(student[v, 0].tolist(), ts)
            total += -sum(qk * math.log(pk) for qk, pk in zip(q, p))
            pairs += 1
    assert pairs == 4  # teacher 1 with global 2 and the local; teacher 2 likewise
    got = dino_loss(student, teacher, center, ts, tt)
    assert got.item() == pytest.approx(total / pairs, rel=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_dino_loss_equals_vit_pytorch_loss_fn_on_two_crossed_views(dtype, tol):
    """vit-pytorch's Dino scores teacher 1 against student 2 and teacher 2 against
    student 1: with two student views, skipping the same view is exactly that."""
    from vit_pytorch.dino import loss_fn

    torch.manual_seed(0)
    student, teacher = (
        torch.randn(2, 5, 40, dtype=dtype),
        torch.randn(2, 5, 40, dtype=dtype),
    )
    center = torch.randn(1, 40, dtype=dtype)
    ref = (
        loss_fn(teacher[0], student[1], 0.04, 0.1, center)
        + loss_fn(teacher[1], student[0], 0.04, 0.1, center)
    ) / 2
    ours = dino_loss(student, teacher, center, 0.1, 0.04)
    assert (ours.double() - ref.double()).abs().item() < tol * max(
        1.0, ref.abs().item()
    )


def test_dino_loss_gives_the_teacher_no_gradient():
    student = torch.randn(3, 4, 8, requires_grad=True)
    teacher = torch.randn(2, 4, 8, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(1, 8), 0.1, 0.04).backward()
    assert teacher.grad is None and student.grad is not None


# --------------------------------------------------------------------------- the teacher
def test_teacher_receives_no_gradients_and_the_optimizer_never_sees_it():
    dino = tiny_dino()
    teacher_params = set(map(id, dino.teacher.parameters()))
    assert not any(p.requires_grad for p in dino.teacher.parameters())
    dino(torch.randn(4, 1, 16, 16)).backward()
    assert all(p.grad is None for p in dino.teacher.parameters())
    assert any(p.grad is not None for p in dino.backbone.parameters())
    optimized = {id(p) for g in param_groups(dino, 0.04) for p in g["params"]}
    assert optimized and not optimized & teacher_params


def test_step_teacher_moves_the_teacher_toward_the_student_only():
    dino = tiny_dino(momentum=0.5, final_momentum=0.5)
    with torch.no_grad():
        for p in dino.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in dino.teacher.parameters()]
    dino.step_teacher()
    for old, new, s in zip(
        before, dino.teacher.parameters(), dino.student.parameters()
    ):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * s)


def test_center_is_an_ema_of_the_teachers_mean_output():
    dino = tiny_dino(center_momentum=0.9)
    teacher_out = torch.randn(2, 4, 32)
    dino.update_center(teacher_out)
    torch.testing.assert_close(dino.center, 0.1 * teacher_out.mean(dim=(0, 1))[None])


# --------------------------------------------------------------------------- the ViT
def test_vit_with_dynamic_img_size_takes_small_crops_and_keeps_its_own_size_exact():
    model = tiny_vit().eval()
    # the same ViT that takes only its own size
    fixed = tiny_vit(dynamic_img_size=False).eval()
    fixed.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(model.forward_features(x), fixed.forward_features(x))
    assert model.forward_features(torch.randn(2, 1, 8, 12)).shape == (2, 1 + 6, 16)
    with pytest.raises(ValueError, match="image size 8x8"):
        fixed(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        model(torch.randn(2, 1, 10, 8))


def test_resized_position_embedding_of_a_constant_table_is_that_constant():
    model = tiny_vit()
    with torch.no_grad():
        model.pos_embed.fill_(0.25)
    table = model.position_embedding((2, 3))
    assert table.shape == (1, 1 + 6, 16)
    torch.testing.assert_close(table[:, 1:], torch.full((1, 6, 16), 0.25))


# --------------------------------------------------------------------------- figures
def test_class_token_attention_is_a_distribution_over_patches_per_head():
    from vitbook import viz

    model = tiny_vit()
    att = viz.class_token_attention(model, torch.randn(3, 1, 16, 16))
    assert att.shape == (3, 2, 4, 4)
    assert (att >= 0).all() and (att.sum(dim=(2, 3)) <= 1 + 1e-5).all()


def test_dino_figures_draw_every_view_head_and_diagnostic():
    from vitbook import viz
    from vitbook.train import History

    crop = MultiCrop(24, 12, num_local=3, seed=0)
    fig = viz.plot_multicrop(torch.rand(3, 48, 48), crop)
    assert len(fig.axes) == 1 + 2 + 3 and len(fig.axes[0].patches) == 5
    fig = viz.plot_class_token_attention(tiny_vit(), torch.randn(2, 1, 16, 16))
    assert len(fig.axes) == 2 * 3 + 1  # images x (image + 2 heads) + colour bar
    rows = [
        {"step": i, "entropy": 1.0, "kl": 0.5, "std": 0.1, "erank": 3.0}
        for i in range(5)
    ]
    fig = viz.plot_collapse_diagnostics(
        {"a": History(steps=rows), "b": History(steps=rows)}, max_entropy=2.0
    )
    assert len(fig.axes) == 4 and all(len(ax.lines) >= 2 for ax in fig.axes)


# --------------------------------------------------------------------------- collapse
def short_run(healthy: bool, steps: int = 20):
    """A tiny DINO on 2048 Fashion-MNIST images: the full method (centering, teacher at
    0.04 against the student's 0.1, BatchNorm in the head) or none of the three
    (BatchNorm spreads the batch by itself and only slows the collapse down)."""
    from vitbook import fit, seed_everything
    from vitbook.ssl import method_loss

    images = data.fashion_mnist("train").subset(2048)
    seed_everything(0)
    temp = 0.04 if healthy else 0.1
    dino = tiny_dino(
        total_steps=steps,
        teacher_temp=temp,
        warmup_teacher_temp=temp,
        momentum=0.9,
        final_momentum=0.9,
        centering=healthy,
        use_bn=healthy,
    )
    history = fit(
        dino,
        images.loader(64, shuffle=True),
        steps=steps,
        lr=2e-3,
        loss=method_loss,
        progress=False,
    )
    last = history.steps[-5:]
    return {k: sum(r[k] for r in last) / len(last) for k in ("entropy", "kl", "std")}


def test_dino_without_centering_and_sharpening_collapses_and_with_both_does_not():
    # (and without the head's BatchNorm, the third thing that keeps outputs apart)
    healthy, collapsed = short_run(True), short_run(False)
    # collapsed: the teacher gives every image the same distribution, which the
    # student matches exactly: std across the batch ~0 and KL ~0
    assert collapsed["kl"] < 0.01 and collapsed["std"] < 0.01
    # healthy: the teacher's distributions differ between images and the student
    # still has something to learn
    assert healthy["kl"] > 0.1 and healthy["std"] > 3 * collapsed["std"]


def test_seed_variant_student_learns_from_local_crops_only():
    """vit-pytorch's Dino: the student's loss pairs teacher global 1 with local 2 and
    teacher global 2 with local 1; the student's global views never enter it."""
    dino = tiny_dino(variant="seed", num_local=2).eval()
    images = torch.randn(3, 1, 16, 16)
    dino.multicrop.reseed()
    views = dino.multicrop(images)
    dino.multicrop.reseed()
    loss = dino(images)
    _, teacher = dino.teacher(torch.cat(views[:2]))
    _, student = dino.student(torch.cat(views[2:4]))
    expected = dino_loss(
        student.unflatten(0, (2, 3)),
        teacher.unflatten(0, (2, 3)),
        dino.center,
        0.9,
        0.04,
    )
    torch.testing.assert_close(loss, expected)
    assert dino.student_temp == 0.9 and dino.teacher.momentum == 0.9


def test_official_dino_pairs_each_teacher_view_with_every_other_student_view():
    dino = tiny_dino(num_local=2, warmup_teacher_temp_steps=0).eval()
    images = torch.randn(3, 1, 16, 16)
    dino.multicrop.reseed()
    views = dino.multicrop(images)
    dino.multicrop.reseed()
    loss = dino(images)
    _, teacher = dino.teacher(torch.cat(views[:2]))
    student = torch.cat(
        [dino.student(torch.cat(views[:2]))[1], dino.student(torch.cat(views[2:]))[1]]
    )
    expected = dino_loss(
        student.unflatten(0, (4, 3)),
        teacher.unflatten(0, (2, 3)),
        dino.center,
        0.1,
        0.07,
    )
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------- as the official code
def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]


def last_batch_statistics_(module):
    """Every BatchNorm keeps the statistics of its last batch only (momentum 1), from
    reset buffers: what it then holds says which rows one call saw."""
    for bn in batchnorms(module):
        bn.momentum = 1.0
        bn.reset_running_stats()


def test_the_heads_batchnorm_takes_its_statistics_over_every_crop_at_once():
    """The official MultiCropWrapper runs the backbone once per resolution and the
    head once on the features of all crops: with use_bn the head's BatchNorm takes
    its statistics over global and local crops together."""
    dino = tiny_dino(use_bn=True, num_local=3).train()
    last_batch_statistics_(dino)
    heads = {"student": dino.student, "teacher": dino.teacher.module}
    fresh = {name: copy.deepcopy(net.head) for name, net in heads.items()}
    images = torch.randn(4, 1, 16, 16)
    dino.multicrop.reseed()
    views = dino.multicrop(images)
    dino.multicrop.reseed()
    dino(images)
    with torch.no_grad():
        for name, crops in (("student", views), ("teacher", views[:2])):
            backbone = heads[name].backbone
            # every crop's embedding, one resolution per backbone pass: (N, d)
            embedding = torch.cat(
                [embed(backbone, torch.cat(crops[:2]))]
                + ([embed(backbone, torch.cat(crops[2:]))] if crops[2:] else [])
            )
            fresh[name](embedding)  # one call on every crop
            used, expected = batchnorms(heads[name].head), batchnorms(fresh[name])
            assert len(used) == 2
            for a, b in zip(used, expected):
                torch.testing.assert_close(a.running_mean, b.running_mean)
                torch.testing.assert_close(a.running_var, b.running_var)


def test_a_training_forward_moves_the_center_to_the_ema_of_the_teachers_mean():
    dino = tiny_dino(center_momentum=0.9).train()
    images = torch.randn(5, 1, 16, 16)
    for _ in range(2):  # from zero, then from the first update
        before = dino.center.clone()
        dino.multicrop.reseed()
        views = dino.multicrop(images)
        _, teacher_out = dino.teacher(views[:2])  # (2b, K)
        dino.multicrop.reseed()
        dino(images)
        expected = 0.9 * before + 0.1 * teacher_out.mean(dim=0, keepdim=True)
        torch.testing.assert_close(dino.center, expected)
        assert not torch.equal(dino.center, before)
    dino.eval()(images)  # evaluation leaves it
    torch.testing.assert_close(dino.center, expected)


def test_the_teacher_temperature_warms_up_over_the_first_tenth_by_default():
    dino = tiny_dino(total_steps=40).eval()  # the official variant: 0.04 -> 0.07
    assert dino.warmup_teacher_temp_steps == 4
    assert tiny_dino(total_steps=40, variant="seed").warmup_teacher_temp_steps == 0
    given = tiny_dino(total_steps=40, warmup_teacher_temp_steps=7)
    assert given.warmup_teacher_temp_steps == 7
    images = torch.randn(3, 1, 16, 16)
    for step, temp in ((0, 0.04), (2, 0.055), (4, 0.07), (30, 0.07)):
        dino.teacher.step.fill_(step)
        assert dino.current_teacher_temp == pytest.approx(temp)
        dino.multicrop.reseed()
        views = dino.multicrop(images)
        _, teacher = dino.teacher(views[:2])
        _, student = dino.student(views)
        dino.multicrop.reseed()
        expected = dino_loss(
            student.unflatten(0, (4, 3)),
            teacher.unflatten(0, (2, 3)),
            dino.center,
            0.1,
            temp,
        )
        torch.testing.assert_close(dino(images), expected)  # the loss uses it


def test_dino_cuts_global_and_local_crops_with_their_own_scale_ranges():
    dino = tiny_dino(num_local=4)
    dino(torch.randn(16, 1, 32, 32))
    boxes = dino.multicrop.last_boxes
    assert len(boxes) == 2 + 4
    for i, box in enumerate(boxes):
        share = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / (32 * 32)  # (b,)
        low, high = (0.4, 1.0) if i < 2 else (0.05, 0.4)
        assert (share >= low - 1e-5).all() and (share <= high + 1e-5).all(), i


def last_layer_grads(method):
    return {
        name: p.grad
        for name, p in method.student.named_parameters()
        if "last_layer" in name and p.requires_grad
    }


def test_the_last_layer_gets_no_gradient_during_the_first_steps():
    """The official cancel_gradients_last_layer: the optimizer leaves the last layer
    as it is (weight decay included) while teacher.step < freeze_last_layer_steps; the
    count is a buffer, so a checkpoint carries it."""
    dino = tiny_dino(freeze_last_layer_steps=2, norm_last_layer=False)
    optimizer = torch.optim.AdamW(
        [p for p in dino.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5
    )
    images = torch.randn(4, 1, 16, 16)
    for step in range(3):
        before = {k: v.clone() for k, v in dino.student.state_dict().items()}
        optimizer.zero_grad()
        dino(images).backward()
        dino.after_backward()
        grads = last_layer_grads(dino)
        assert len(grads) == 2  # the direction and the gain of the weight norm
        frozen = step < 2
        assert all((g is None) == frozen for g in grads.values()), step
        assert dino.backbone.patch_embed.proj.weight.grad is not None
        optimizer.step()
        dino.step_teacher()
        after = dino.student.state_dict()
        for name in before:
            if "last_layer" in name:
                assert torch.equal(after[name], before[name]) == frozen, (step, name)
    resumed = tiny_dino(freeze_last_layer_steps=3, norm_last_layer=False)
    resumed.load_state_dict(dino.state_dict())  # teacher.step == 3: not frozen
    resumed(images).backward()
    resumed.after_backward()
    assert all(g is not None for g in last_layer_grads(resumed).values())


def test_the_teachers_backbone_gets_its_own_row_in_the_representation_report():
    """As eval_knn.py --checkpoint_key teacher: the row is computed from the EMA
    teacher's weights (here a teacher made useless, all zeros: chance level)."""
    from vitbook.train import representation_report

    dino = tiny_dino()
    assert dino.teacher_backbone is dino.teacher.module.backbone
    assert dino.teacher_backbone is not dino.backbone
    with torch.no_grad():
        for p in dino.teacher_backbone.parameters():
            p.zero_()
    train_set = data.fashion_mnist("train").subset(300)
    test_set = data.fashion_mnist("test").subset(100)
    args = dict(pixels=False, k=5, probe_epochs=50, batch_size=128)
    student, teacher = dino.backbone, dino.teacher_backbone  # 28x28 in: dynamic size
    report = representation_report(
        student, tiny_vit(), train_set, test_set, teacher=teacher, **args
    )
    assert list(report.rows) == ["pretrained", "pretrained (teacher)", "random init"]
    alone = representation_report(teacher, teacher, train_set, test_set, **args)
    for protocol in ("knn", "linear"):
        row = report.rows["pretrained (teacher)"][protocol]
        assert row == alone.rows["pretrained"][protocol]
        assert row < report.rows["pretrained"][protocol] - 0.1, protocol
    assert "pretrained (teacher)" not in representation_report(
        student, teacher, train_set, test_set, **args
    ).rows


@pytest.mark.parametrize(
    "name", ["warmup_teacher_temp_steps", "freeze_last_layer_steps"]
)
def test_negative_step_counts_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"{name}=-1 must be >= 0"):
        tiny_dino(**{name: -1})


def test_official_defaults_are_the_official_codes():
    """main_dino.py's defaults, or the paper's recipe where the variant follows it
    (teacher temperature 0.04 -> 0.07 over the first 10%: the README's 300 epochs)."""
    import inspect

    from vitbook.ssl.dino import VARIANTS

    official = VARIANTS["official"]
    assert official == dict(
        num_local=8,
        student_temp=0.1,
        teacher_temp=0.07,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_fraction=0.1,
        momentum=0.996,
        final_momentum=1.0,
    )
    defaults = {k: p.default for k, p in inspect.signature(DINO).parameters.items()}
    expected = dict(out_dim=65536, hidden_dim=2048, bottleneck_dim=256, nlayers=3,
                    norm_last_layer=True, use_bn=False,
                    center_momentum=0.9)  # fmt: skip
    assert {k: defaults[k] for k in expected} == expected
    dino = DINO(tiny_vit(), total_steps=10, global_size=16, local_size=8, out_dim=8,
                hidden_dim=8, bottleneck_dim=4)  # fmt: skip
    crop = dino.multicrop
    assert crop.num_local == 8
    assert (crop.global_scale, crop.local_scale) == ((0.4, 1.0), (0.05, 0.4))
