"""The baselines chapters 6-10 share (`vitbook.baselines`): one random initialization,
one supervised model trained once and then loaded, and the budget line of the tables."""

from __future__ import annotations

import torch

import vitbook
from vitbook import baselines, configs, probe
from vitbook.data import ImageTensors
from vitbook.train import History


def tiny_fashion(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    classes = tuple(str(i) for i in range(10))
    return ImageTensors(images, labels, classes, (0.3,), (0.35,))


def test_random_backbone_is_the_chapters_seeded_vit_and_leaves_the_rng_alone():
    # what chapters 7-9 built by hand: seed_everything(0), then the backbone
    vitbook.seed_everything(0)
    by_hand = vitbook.ViT(image_size=28, num_classes=0, channels=1,
                          **configs.reference().backbone)  # fmt: skip
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    shared = baselines.random_backbone()
    assert torch.equal(torch.random.get_rng_state(), before), "it moved the global RNG"
    for a, b in zip(by_hand.state_dict().values(), shared.state_dict().values()):
        assert torch.equal(a, b)


def test_supervised_reference_is_trained_once_then_loaded(tmp_path):
    data = tiny_fashion(n=600)  # three batches of 256: past the first, warm-up step
    first, info = baselines.supervised_reference(data, device="cpu", directory=tmp_path)
    assert info["trained"] and info["images_seen"] == len(data)
    assert len(list(tmp_path.glob("baselines/supervised_reference_*.pt"))) == 1
    assert probe.load_reports(tmp_path) == {}, "the reference is not a report"
    again, info2 = baselines.supervised_reference(data, device="cpu", directory=tmp_path)
    assert not info2["trained"] and info2["seconds"] == info["seconds"]
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # trained, not left at its random start
    start = baselines.random_backbone().state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in first.state_dict().items()
               if k in start)  # fmt: skip
    # another training set is another recipe: trained again, kept apart
    _, info3 = baselines.supervised_reference(
        tiny_fashion(n=300), device="cpu", directory=tmp_path
    )
    assert info3["trained"]
    assert len(list(tmp_path.glob("baselines/supervised_reference_*.pt"))) == 2


def test_the_budget_is_printed_under_the_table_and_saved_with_it(tmp_path):
    history = History(steps=[{"step": i, "loss": 1.0} for i in range(1, 301)])
    history.seconds = 44.0
    budget = baselines.pretraining_budget(history, batch_size=128, views=6)
    assert budget == {"steps": 300, "views": 6, "images_seen": 38_400, "seconds": 44.0}
    report = probe.RepresentationReport(
        {"pretrained": {"knn": 0.7, "linear": 0.72, "note": ""}}, 20, 100, 100, budget
    )
    assert "(pretraining: 300 steps, 6 views per image, 38,400 images seen, 44 s)" in (
        str(report)
    )
    one = probe.RepresentationReport(report.rows, 20, 100, 100, {**budget, "views": 1})
    assert "1 view per image" in str(one)
    report.save("X", directory=tmp_path)
    assert probe.load_reports(tmp_path)["X"]["report"].budget == budget
