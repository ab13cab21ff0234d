"""BYOL and its SimSiam mode: the loss, byol-pytorch parity, the EMA target, the
stop-gradient, a torchvision ResNet backbone, SyncBatchNorm under a process group."""

import copy
import math

import pytest
import torch
import torch.distributed as dist
import torchvision
from factories import randomize_
from factories import tiny_vit
from torch import nn

from vitbook.ssl import BYOL, byol_loss, cosine_schedule
from vitbook.ssl.byol import Online

byol_pytorch = pytest.importorskip("byol_pytorch")


def tiny_byol(backbone=None, **kw):
    args = dict(
        total_steps=10,
        image_size=16,
        projection_dim=8,
        hidden_dim=32,
        predictor_hidden_dim=32,
    )
    return BYOL(backbone or tiny_vit(), **{**args, **kw})


def resnet18():
    net = torchvision.models.resnet18(num_classes=10)
    net.fc = nn.Identity()  # (b, 512) features
    return net


class Fixed(nn.Module):
    """An 'augmentation' that returns a given view, whatever it is given."""

    def __init__(self, view):
        super().__init__()
        self.view = view

    def forward(self, x):
        return self.view


def symmetric(prediction, target):
    return byol_loss(prediction[0], target[1]) + byol_loss(prediction[1], target[0])


# --------------------------------------------------------------------------- the loss
def test_byol_loss_is_two_minus_two_cosine_on_a_hand_case():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[4.0, 3.0], [-5.0, 0.0], [0.0, 0.5]])
    cos = [24 / 25, -1.0, 1.0]  # (12 + 12) / (5 * 5); opposite; same direction
    expected = torch.tensor([2 - 2 * c for c in cos])
    torch.testing.assert_close(byol_loss(p, z), expected)
    # the squared distance of the unit vectors: ||p/|p| - z/|z|||^2
    unit = nn.functional.normalize
    torch.testing.assert_close(byol_loss(p, z), (unit(p) - unit(z)).pow(2).sum(-1))


def test_byol_loss_is_the_symmetrized_mean_over_the_batch():
    torch.manual_seed(1)
    byol = tiny_byol()
    images = torch.rand(6, 1, 16, 16)
    byol.multicrop.reseed()
    loss = byol(images)
    byol.multicrop.reseed()
    v1, v2 = byol.views(images)
    p, t, _, _ = byol.outputs(v1, v2)
    by_hand = sum(
        (2 - 2 * nn.functional.cosine_similarity(p[i], t[1 - i], dim=-1)).mean()
        for i in (0, 1)
    )
    torch.testing.assert_close(loss, by_hand)


def copy_into_byol_pytorch(ours: BYOL, ref) -> None:
    """Our online and target networks' weights and BatchNorm statistics into
    byol-pytorch's (its constructor ran a forward in train mode)."""
    ref.online_encoder.net.load_state_dict(ours.online.backbone.state_dict())
    ref.online_encoder.projector.load_state_dict(ours.online.projector.state_dict())
    ref.online_predictor.load_state_dict(ours.predictor.state_dict())
    ref.target_encoder.net.load_state_dict(ours.target.module.backbone.state_dict())
    ref.target_encoder.projector.load_state_dict(
        ours.target.module.projector.state_dict()
    )


@pytest.mark.parametrize(
    "backbone, size, dtype, tol",
    [
        ("vit", 16, torch.float32, 1e-5),
        ("vit", 16, torch.float64, 1e-10),
        ("resnet18", 32, torch.float32, 1e-5),
    ],
)
def test_loss_and_gradients_equal_byol_pytorch(backbone, size, dtype, tol):
    torch.manual_seed(0)
    net = tiny_vit(channels=3, image_size=size) if backbone == "vit" else resnet18()
    ours = tiny_byol(
        net, image_size=size, **({"feature_dim": 512} if backbone != "vit" else {})
    )
    ref = byol_pytorch.BYOL(
        copy.deepcopy(net),
        image_size=size,
        hidden_layer=-1,  # the net itself returns the representation
        projection_size=8,
        projection_hidden_size=32,
        use_simplicial_embeddings=False,
        augment_fn=nn.Identity(),
        augment_fn2=nn.Identity(),
    )
    randomize_(ours.online, std=0.2)
    randomize_(ours.predictor, std=0.2)
    randomize_(ours.target.module, std=0.2)  # a target unlike the online network
    ours.to(dtype), ref.to(dtype)
    copy_into_byol_pytorch(ours, ref)
    v1, v2 = torch.rand(2, 6, 3, size, size, dtype=dtype)
    ref.augment1, ref.augment2 = Fixed(v1), Fixed(v2)

    p, t, _, _ = ours.outputs(v1, v2)
    loss = symmetric(p, t).mean()
    expected = ref(torch.zeros(6, 3, size, size, dtype=dtype))
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected, atol=tol, rtol=tol)
    loss.backward()
    expected.backward()
    ours_grads = dict(ours.online.named_parameters())
    ref_grads = dict(ref.online_encoder.named_parameters())
    for name, param in ours_grads.items():
        ref_name = name.replace("backbone.", "net.", 1)
        torch.testing.assert_close(
            param.grad, ref_grads[ref_name].grad, atol=tol, rtol=tol, msg=name
        )
    for ours_p, ref_p in zip(
        ours.predictor.parameters(), ref.online_predictor.parameters()
    ):
        torch.testing.assert_close(ours_p.grad, ref_p.grad, atol=tol, rtol=tol)


# --------------------------------------------------------------------------- the target
def test_target_gets_no_gradient_and_is_not_optimized():
    byol = tiny_byol()
    byol(torch.rand(4, 1, 16, 16)).backward()
    target = list(byol.target.parameters())
    assert target and all(not p.requires_grad and p.grad is None for p in target)
    assert all(p.grad is not None for p in byol.online.parameters())
    assert all(p.grad is not None for p in byol.predictor.parameters())
    trained = {id(p) for p in byol.parameters() if p.requires_grad}
    assert not trained & {id(p) for p in target}


def test_target_is_backbone_and_projector_without_the_predictor():
    byol = tiny_byol()
    online = dict(byol.online.named_parameters())
    target = dict(byol.target.module.named_parameters())
    assert online.keys() == target.keys()
    assert not any(name.startswith("predictor") for name in target)
    for name in online:  # a copy, not the same tensors
        assert torch.equal(online[name], target[name])
        assert online[name].data_ptr() != target[name].data_ptr()


def test_ema_update_follows_the_formula_with_cosine_momentum():
    byol = tiny_byol(momentum=0.9, total_steps=4)
    randomize_(byol.target.module)
    for step in range(3):
        before = [t.clone() for t in byol.target.module.parameters()]
        with torch.no_grad():
            for p in byol.online.parameters():
                p.add_(torch.randn_like(p))
        byol.step_teacher()
        m = cosine_schedule(0.9, 1.0, step, 4)  # 0.9, then rising toward 1
        assert m == pytest.approx(1 - 0.1 * (math.cos(math.pi * step / 4) + 1) / 2)
        for t, b, s in zip(
            byol.target.module.parameters(), before, byol.online.parameters()
        ):
            torch.testing.assert_close(t, m * b + (1 - m) * s)
    assert int(byol.target.step) == 3


def test_step_teacher_gives_the_target_the_online_batchnorm_statistics():
    """The target's parameters are a moving average, its BatchNorm buffers a copy of
    the online network's (ema_update_): after a step they are equal, even though the
    target's own forward had moved them from a different batch of projections."""
    byol = tiny_byol(momentum=0.5, final_momentum=0.5).train()
    randomize_(byol.online, std=0.2)  # unlike the target: other projections
    byol(torch.rand(6, 1, 16, 16))  # each network updates its own running statistics
    online, target = batchnorms(byol.online), batchnorms(byol.target.module)
    assert len(online) == len(target) == 1
    assert not torch.equal(online[0].running_mean, target[0].running_mean)
    byol.step_teacher()
    for a, b in zip(online, target):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(b, name), getattr(a, name)), name


def test_training_moves_the_target_slower_than_the_online_network():
    from vitbook import data, fit
    from vitbook.ssl import method_loss

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=g)
    toy = data.ImageTensors(
        images, torch.zeros(64, dtype=torch.long), ("x",), (0.5,), (0.3,)
    )
    byol = tiny_byol(total_steps=6, momentum=0.9)
    start = copy.deepcopy(byol.online.state_dict())
    history = fit(
        byol,
        toy.loader(16, shuffle=True),
        steps=6,
        lr=1e-2,
        loss=method_loss,
        progress=False,
        device="cpu",
    )
    assert {"std", "erank", "rep_std", "rep_erank"} <= set(history.steps[-1])
    moved = {
        net: sum((p - start[n]).norm() for n, p in module.named_parameters())
        for net, module in (("online", byol.online), ("target", byol.target.module))
    }
    assert 0 < moved["target"] < moved["online"]


def test_momentum_zero_makes_the_target_the_online_network_of_the_step():
    """With tau = 0 the target is copied after every step, so it computes what the
    online network computes (detached): SimSiam with BYOL's heads."""
    byol = tiny_byol(momentum=0.0, final_momentum=0.0)
    randomize_(byol.target.module)
    with torch.no_grad():
        for p in byol.online.parameters():
            p.add_(torch.randn_like(p))
    byol.step_teacher()
    v1, v2 = torch.rand(2, 5, 1, 16, 16)
    _, target, projection, _ = byol.outputs(v1, v2)
    torch.testing.assert_close(target, projection.detach())


# --------------------------------------------------------------------------- SimSiam
def test_simsiam_mode_has_no_target_copy():
    byol = tiny_byol(
        mode="simsiam", projection_dim=8, hidden_dim=16, predictor_hidden_dim=4
    )
    assert byol.target is None
    byol.step_teacher()  # nothing to update, and no error
    counted = sum(p.numel() for p in byol.parameters())
    parts = (byol.online.backbone, byol.online.projector, byol.predictor)
    assert counted == sum(p.numel() for m in parts for p in m.parameters())
    # SimSiam's heads: a 3-layer projector ending in BatchNorm, a bottleneck predictor
    assert isinstance(byol.online.projector[-1], nn.BatchNorm1d)
    assert not byol.online.projector[-1].affine
    assert byol.predictor[0].out_features == 4


def test_simsiam_mode_stops_the_gradient_through_the_target():
    torch.manual_seed(0)
    byol = tiny_byol(
        mode="simsiam", projection_dim=8, hidden_dim=16, predictor_hidden_dim=4
    )
    v1, v2 = torch.rand(2, 6, 1, 16, 16)

    def grads(stop: bool):
        byol.zero_grad()
        p, t, z, _ = byol.outputs(v1, v2)
        assert not t.requires_grad and z.requires_grad
        torch.testing.assert_close(t, z.detach())  # the target is the online output
        if stop:
            loss = symmetric(p, t).mean()
        else:  # the same value, with the gradient let through the target side
            unit = nn.functional.normalize
            loss = sum(2 - 2 * (unit(p[i]) * unit(z[1 - i])).sum(-1) for i in (0, 1))
            loss = loss.mean()
        loss.backward()
        return loss.detach(), [q.grad.clone() for q in byol.online.parameters()]

    stopped_loss, stopped = grads(True)
    through_loss, through = grads(False)
    torch.testing.assert_close(stopped_loss, through_loss)
    # the method's own loss gives the stop-gradient's gradients
    byol.zero_grad()
    byol.views = lambda images: [v1, v2]
    byol(torch.rand(6, 1, 16, 16)).backward()
    for g, q in zip(stopped, byol.online.parameters()):
        torch.testing.assert_close(q.grad, g)
    assert any(not torch.allclose(a, b) for a, b in zip(stopped, through))


# --------------------------------------------------------------------------- backbones
def test_torchvision_resnet_backbone_trains():
    torch.manual_seed(0)
    byol = tiny_byol(resnet18(), image_size=32, feature_dim=512)
    images = torch.rand(4, 3, 32, 32)
    loss = byol(images)
    assert loss.ndim == 0 and 0 <= loss.item() <= 8  # two terms, each in [0, 4]
    loss.backward()
    assert byol.backbone.conv1.weight.grad.abs().sum() > 0
    before = byol.target.module.backbone.conv1.weight.clone()
    with torch.no_grad():
        byol.backbone.conv1.weight.add_(1.0)
    byol.step_teacher()
    assert not torch.equal(before, byol.target.module.backbone.conv1.weight)
    assert byol.backbone(images).shape == (4, 512)


def test_backbone_without_num_features_needs_feature_dim():
    with pytest.raises(ValueError, match="feature_dim"):
        tiny_byol(resnet18(), image_size=32)


def test_unknown_mode_is_rejected_by_name():
    with pytest.raises(ValueError, match="mode='moco'"):
        tiny_byol(mode="moco")


def test_online_returns_representation_and_projection():
    byol = tiny_byol()
    representation, projection = byol.online(torch.rand(3, 1, 16, 16))
    assert representation.shape == (3, 16) and projection.shape == (3, 8)
    assert isinstance(byol.online, Online)


# ------------------------------------------------------------------------ SyncBatchNorm
def batchnorms(module):
    return [
        m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
    ]


@pytest.fixture
def process_group():
    """A two-rank process group with PyTorch's fake backend (no peers needed)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


def test_heads_use_sync_batchnorm_when_distributed(process_group):
    byol = tiny_byol()
    norms = batchnorms(byol)
    assert len(norms) == 3  # projector, predictor, target's projector
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms)


def test_heads_keep_batchnorm_when_not_distributed():
    assert not dist.is_initialized()
    norms = batchnorms(tiny_byol())
    assert norms and not any(isinstance(m, nn.SyncBatchNorm) for m in norms)


def test_sync_batchnorm_can_be_forced_and_keeps_the_parameters():
    torch.manual_seed(0)
    plain = tiny_byol(sync_batchnorm=False)
    torch.manual_seed(0)
    synced = tiny_byol(sync_batchnorm=True)
    assert all(isinstance(m, nn.SyncBatchNorm) for m in batchnorms(synced))
    a, b = plain.state_dict(), synced.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_torchrun_ranks_end_with_identical_online_and_target_weights(tmp_path):
    """Data-parallel BYOL on two CPU processes (gloo): the gradients are averaged, so
    every parameter, the EMA target's included, is the same on both ranks. Under gloo
    the heads keep plain BatchNorm (PyTorch's SyncBatchNorm runs on accelerators only),
    so each rank normalizes over its own half of the batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "workers" / "train_byol.py"
    torchrun = Path(sys.executable).with_name("torchrun")
    root = str(Path(__file__).resolve().parents[1])  # this checkout's vitbook
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": path}
    run = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(worker),
         str(tmp_path / "byol")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"byol.rank{r}.pt") for r in (0, 1))
    assert rank0["norms"] == rank1["norms"] == ["BatchNorm1d"]
    # the diagnostics reach the history through the DDP wrapper, averaged over ranks
    assert {"std", "erank"} <= set(rank0["logged"])
    params = rank0["params"]
    assert any(k.startswith("target.") for k in params)
    for key in params:
        assert torch.equal(params[key], rank1["params"][key]), f"ranks differ in {key}"
    online = params["online.projector.0.weight"]
    assert not torch.equal(online, params["target.module.projector.0.weight"])
