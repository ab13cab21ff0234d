"""The pieces the self-supervised methods share, one idea a section as vitbook.ssl
holds them: the EMA teacher and self-distillation (teacher.py), multi-crop views
(augment.py), projection heads (heads.py), collapse diagnostics (diagnostics.py), and
the old vitbook.ssl.common names."""

import math

import pytest
import torch
import torch.nn.functional as F
from factories import randomize_
from torch import nn
from torchvision.transforms import v2

from vitbook import ViT
from vitbook.ssl import (
    DINOHead,
    EMATeacher,
    MultiCrop,
    SelfDistillation,
    apply_to,
    bn_mlp,
    byol_mlp,
    contrast_brightness,
    cosine_schedule,
    dino_loss,
    effective_rank,
    ema_update_,
    embed,
    embedding_std,
    maybe_sync_batchnorm,
    simsiam_predictor,
    simsiam_projector,
    use_sync_batchnorm,
)
from vitbook.ssl.diagnostics import distillation_metrics, entropy


def tiny_net():
    """Parameters and a BatchNorm's buffers: what an EMA teacher has to follow."""
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


# --------------------------------------------------------------------------- teacher
def test_ema_update_equals_the_formula_and_copies_the_buffers():
    student, teacher = randomize_(tiny_net()), randomize_(tiny_net())
    student.train()(torch.randn(16, 4))  # BatchNorm statistics of its own
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * s, rtol=0, atol=1e-6)
    for t, s in zip(teacher.buffers(), student.buffers()):
        assert torch.equal(t, s)


def test_teacher_momentum_follows_a_cosine_from_base_to_one():
    assert cosine_schedule(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine_schedule(0.996, 1.0, 50, 100) == pytest.approx(0.998)
    assert cosine_schedule(0.996, 1.0, 100, 100) == pytest.approx(1.0)
    assert cosine_schedule(0.996, 1.0, 500, 100) == pytest.approx(1.0)
    student = tiny_net()
    teacher = EMATeacher(student, base=0.5, final=1.0, total_steps=2)
    randomize_(student)
    before = [p.detach().clone() for p in teacher.module.parameters()]
    assert teacher.update(student) == pytest.approx(0.5)  # step 0 uses the base
    for old, new, s in zip(before, teacher.module.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * s, rtol=0, atol=1e-6)
    assert teacher.update(student) == pytest.approx(0.75)
    assert teacher.momentum == pytest.approx(1.0) and int(teacher.step) == 2


def distillation(**kw):
    """A SelfDistillation with a teacher to count its steps, as DINO and EsViT set."""
    args = dict(total_steps=40, student_temp=0.1, teacher_temp=0.07,
                warmup_teacher_temp=0.04, warmup_teacher_temp_steps=None,
                warmup_teacher_temp_fraction=0.25, freeze_last_layer_steps=0,
                center_momentum=0.9)  # fmt: skip
    method = SelfDistillation(**{**args, **kw})
    method.student = tiny_net()
    method.teacher = EMATeacher(method.student, total_steps=40)
    return method


def test_self_distillation_warms_the_teacher_temperature_up_over_its_share():
    method = distillation()  # a quarter of 40 steps, 0.04 -> 0.07
    assert method.warmup_teacher_temp_steps == 10
    for step, temp in ((0, 0.04), (5, 0.055), (10, 0.07), (30, 0.07)):
        method.teacher.step.fill_(step)
        assert method.current_teacher_temp == pytest.approx(temp)
    assert distillation(warmup_teacher_temp_steps=7).warmup_teacher_temp_steps == 7
    assert distillation(warmup_teacher_temp_fraction=0).current_teacher_temp == 0.07


@pytest.mark.parametrize(
    "name, value, rule",
    [
        ("student_temp", 0, "must be > 0"),
        ("teacher_temp", -0.1, "must be > 0"),
        ("warmup_teacher_temp", 0, "must be > 0"),
        ("center_momentum", 1.5, r"must be in \[0, 1\]"),
        ("warmup_teacher_temp_steps", -1, "must be >= 0"),
        ("freeze_last_layer_steps", -1, "must be >= 0"),
    ],
)
def test_self_distillation_refuses_bad_settings_by_name(name, value, rule):
    with pytest.raises(ValueError, match=f"{name}={value} {rule}"):
        distillation(**{name: value})


# --------------------------------------------------------------------------- augment
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_multicrop_produces_the_requested_sizes_and_counts(dtype):
    images = torch.randint(0, 256, (5, 1, 28, 28)).to(dtype)
    views = MultiCrop(24, (12, 10), num_local=3, seed=0)(images)
    assert len(views) == 2 + 3
    assert [tuple(v.shape) for v in views] == [(5, 1, 24, 24)] * 2 + [
        (5, 1, 12, 10)
    ] * 3
    assert all(v.dtype == torch.float32 for v in views)
    if dtype == torch.uint8:  # scaled to [0, 1] (jitter may step a little outside)
        assert 0.0 <= views[0].mean() <= 1.0


def test_multicrop_is_seeded_and_crops_each_image_differently():
    images = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1)  # one image, six times
    a = MultiCrop(16, 8, num_local=2, seed=3)(images)
    b = MultiCrop(16, 8, num_local=2, seed=3)(images)
    c = MultiCrop(16, 8, num_local=2, seed=4)(images)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # the same image gets a different view in every row of the batch
    assert (a[0][1:] - a[0][:1]).abs().flatten(1).amax(1).min() > 0


def test_apply_to_runs_fn_on_the_chosen_images_only_and_keeps_the_rest():
    images = torch.randn(6, 2, 5, 5)
    seen = []

    def negate(v):
        seen.append(len(v))
        return -v

    chosen = torch.tensor([True, False, True, False, False, True])
    out = apply_to(chosen, negate, images)
    assert seen == [3]  # fn saw the three chosen images, not the batch
    torch.testing.assert_close(out[chosen], -images[chosen], rtol=0, atol=0)
    torch.testing.assert_close(out[~chosen], images[~chosen], rtol=0, atol=0)
    assert apply_to(torch.zeros(6, dtype=torch.bool), negate, images) is images
    everything = apply_to(torch.ones(6, dtype=torch.bool), negate, images)
    torch.testing.assert_close(everything, -images, rtol=0, atol=0)
    assert seen == [3, 6]


def test_apply_to_refuses_a_choice_that_is_not_one_bool_per_image():
    images = torch.randn(6, 1, 4, 4)
    rule = r"chosen has shape \(3,\).*must be \(6,\) bool"
    with pytest.raises(ValueError, match=rule):
        apply_to(torch.ones(3, dtype=torch.bool), lambda v: v, images)
    with pytest.raises(ValueError, match="dtype torch.int64"):
        apply_to(torch.ones(6, dtype=torch.long), lambda v: v, images)


def test_contrast_brightness_is_the_formula_per_image_and_identity_at_1_and_0():
    images = torch.randn(3, 2, 4, 4)
    unchanged = contrast_brightness(images, torch.ones(3), torch.zeros(3))
    torch.testing.assert_close(unchanged, images)
    factor, shift = torch.tensor([0.6, 1.0, 1.4]), torch.tensor([0.2, -0.4, 0.0])
    out = contrast_brightness(images, factor, shift)
    for x, y, f, b in zip(images, out, factor, shift):  # each image its own mean, std
        mean, std = x.mean(), x.std() + 1e-6
        torch.testing.assert_close(y, (x - mean) * f + mean + b * std)


def test_multicrop_blurs_the_drawn_share_of_images_with_torchvision_blur():
    images = torch.rand(400, 1, 20, 20)
    settings = dict(num_local=0, flip=0.0, jitter=0.0, sigma=(1.0, 1.0), seed=0)
    sharp = MultiCrop(16, 8, blur=(0.0, 0.0, 0.0), **settings)(images)[0]
    mixed = MultiCrop(16, 8, blur=(0.3, 0.0, 0.0), **settings)(images)[0]
    blurred = (mixed - sharp).flatten(1).abs().amax(1) > 0  # (400,)
    assert blurred.float().mean().item() == pytest.approx(0.3, abs=0.06)
    expected = v2.functional.gaussian_blur(sharp[blurred], [5, 5], [1.0, 1.0])
    torch.testing.assert_close(mixed[blurred], expected)


def test_multicrop_crop_box_covers_the_requested_area():
    crop = MultiCrop(16, 8, num_local=0, global_scale=(0.25, 0.25), seed=0)
    boxes = crop.boxes(1000, 40, 40, (0.25, 0.25))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 40 + 1e-4).all()
    assert area.mean().item() == pytest.approx(0.25 * 1600, rel=0.05)


# --------------------------------------------------------------------------- heads
def test_dino_head_bottleneck_is_unit_length_and_last_layer_rows_are_unit_vectors():
    head = DINOHead(16, out_dim=50, hidden_dim=32, bottleneck_dim=8)
    randomize_(head.mlp)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(7.0)
    w = head.last_layer.weight  # recomputed from the direction, gain fixed at 1
    torch.testing.assert_close(w.norm(dim=1), torch.ones(50))
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad
    out = head(torch.randn(4, 16))
    assert out.shape == (4, 50) and out.abs().max() <= 1 + 1e-5  # cosines


def test_embed_reads_a_vitbook_backbones_pooled_feature_and_calls_any_other():
    vit = ViT(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2,
              mlp_dim=32, channels=1)  # fmt: skip
    x = torch.randn(2, 1, 16, 16)
    # (2, 16): the class token before the classifier, not the (2, 3) logits
    expected = vit.forward_head(vit.forward_features(x), pre_logits=True)
    torch.testing.assert_close(embed(vit, x), expected)
    net = tiny_net()
    z = torch.randn(5, 4)
    torch.testing.assert_close(embed(net, z), net(z))


def test_bn_mlps_have_byols_layer_order_and_drop_the_biases_a_batchnorm_cancels():
    byol = byol_mlp(16, 8, 32)
    assert [type(m) for m in byol] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert byol[0].bias is not None and byol[3].bias is not None
    projector = simsiam_projector(16, 8, 32)
    linears = [m for m in projector if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert isinstance(projector[-1], nn.BatchNorm1d) and not projector[-1].affine
    predictor = simsiam_predictor(8, 4)
    assert predictor[0].bias is None and predictor[-1].bias is not None
    with pytest.raises(ValueError, match=r"dims=\[4\] needs at least"):
        bn_mlp([4])


def test_sync_batchnorm_is_off_alone_and_when_forced_keeps_the_same_parameters():
    assert not use_sync_batchnorm()  # no process group
    head = byol_mlp(16, 8, 32)
    assert maybe_sync_batchnorm(head) is head
    weight = head[1].weight
    synced = maybe_sync_batchnorm(head, enabled=True)
    assert isinstance(synced[1], nn.SyncBatchNorm) and synced[1].weight is weight


# --------------------------------------------------------------------------- diagnostics
def test_collapse_diagnostics_on_collapsed_and_spread_embeddings():
    spread = torch.randn(256, 16)
    collapsed = torch.ones(256, 16) + 1e-4 * torch.randn(256, 16)
    assert effective_rank(spread) > 12 and effective_rank(collapsed) < 1.1
    assert embedding_std(spread) == pytest.approx(1 / 4, rel=0.15)
    assert embedding_std(collapsed) < 1e-3


def test_entropy_is_log_k_for_a_uniform_distribution_and_zero_for_a_one_hot():
    probs = torch.stack([torch.full((8,), 1 / 8), F.one_hot(torch.tensor(3), 8)])
    got = entropy(probs.float())
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.tensor([math.log(8), 0.0]))


def test_distillation_metrics_split_the_loss_into_teacher_entropy_and_kl():
    """DINO's cross-entropy over (teacher i, student v != i) pairs is the teacher's
    mean entropy plus the mean KL(teacher || student): each teacher view meets the
    same number of student views."""
    student, teacher = torch.randn(4, 3, 10), torch.randn(2, 3, 10)
    center = torch.randn(1, 10)
    loss = dino_loss(student, teacher, center, 0.1, 0.04)
    p_t, metrics = distillation_metrics(loss, teacher, center, 0.04)
    torch.testing.assert_close(p_t, F.softmax((teacher - center) / 0.04, dim=-1))
    kl = [
        F.kl_div(F.log_softmax(student[v] / 0.1, -1), p_t[i], reduction="batchmean")
        for i in range(2)
        for v in range(4)
        if v != i
    ]
    torch.testing.assert_close(metrics["kl"], torch.stack(kl).mean())
    torch.testing.assert_close(metrics["entropy"] + metrics["kl"], loss)


# --------------------------------------------------------------------------- the old home
COMMON = {
    "teacher": ["cosine_schedule", "linear_warmup", "ema_update_", "EMATeacher",
                "SelfDistillation"],
    "augment": ["MultiCrop", "apply_to", "contrast_brightness"],
    "heads": ["DINOHead", "bn_mlp", "byol_mlp", "simsiam_projector",
              "simsiam_predictor", "use_sync_batchnorm", "maybe_sync_batchnorm",
              "embed"],
    "diagnostics": ["effective_rank", "embedding_std"],
}  # fmt: skip


@pytest.mark.parametrize("home", COMMON)
def test_the_old_common_names_still_import_and_are_their_new_homes_objects(home):
    import importlib

    import vitbook.ssl
    from vitbook.ssl import common

    module = importlib.import_module(f"vitbook.ssl.{home}")
    for name in COMMON[home]:
        assert name in common.__all__ and name in vitbook.ssl.__all__, name
        assert getattr(common, name) is getattr(module, name), name
        assert getattr(vitbook.ssl, name) is getattr(module, name), name
        # the schedules live in vitbook.schedules; teacher.py re-exports them
        if name not in ("cosine_schedule", "linear_warmup"):
            assert getattr(module, name).__module__ == module.__name__, name
