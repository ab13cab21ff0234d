"""vitbook.probe: judging frozen representations (k-NN, linear probe, the report every
self-supervised chapter prints). Its names were train's and stay importable there."""

import pytest
import torch

from test_train import toy_data, toy_vit
from vitbook import probe, train


# every name of probe.py was train's before it moved
@pytest.mark.parametrize("name", probe.__all__)
def test_train_still_exports_each_name_that_moved_to_probe(name):
    # the same object, so a chapter's show(train.representation_report) shows probe.py
    assert getattr(train, name) is getattr(probe, name)


def test_knn_and_linear_probe_read_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    centers = torch.randn(3, 16, generator=g) * 3
    feats = centers[labels] + torch.randn(300, 16, generator=g)
    assert (
        probe.knn_accuracy(feats[:200], labels[:200], feats[200:], labels[200:], k=10)
        > 0.95
    )
    assert (
        probe.linear_probe(feats[:200], labels[:200], feats[200:], labels[200:]) > 0.95
    )
    shuffled = labels[torch.randperm(300, generator=g)]
    assert (
        probe.knn_accuracy(
            feats[:200], shuffled[:200], feats[200:], shuffled[200:], k=10
        )
        < 0.6
    )


def test_extract_features_uses_the_models_own_pooling():
    model = toy_vit().eval()
    ds = toy_data(40)
    feats, labels = probe.extract_features(model, ds.loader(16))
    assert feats.shape == (40, 16) and torch.equal(labels, ds.labels)
    with torch.no_grad():
        expected = model.forward_head(
            model.forward_features(ds.normalize(ds.images)), pre_logits=True
        )
    torch.testing.assert_close(feats, expected)


def test_a_saved_representation_report_loads_back_equal(tmp_path):
    rows = {"pretrained": {"knn": 0.7, "linear": 0.72, "note": "600 steps"},
            "random init": {"knn": 0.6, "linear": 0.58, "note": ""}}  # fmt: skip
    report = probe.RepresentationReport(rows=rows, k=20, n_train=100, n_test=50)
    report.save("toy", directory=tmp_path)
    assert (tmp_path / "toy.json").exists()
    loaded = probe.load_reports(tmp_path)
    assert list(loaded) == ["toy"] and loaded["toy"]["report"] == report
    assert loaded["toy"]["scale"] in ("small", "full")


def test_results_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VITBOOK_RESULTS", str(tmp_path / "here"))
    assert probe.results_dir() == tmp_path / "here"
    assert probe.results_dir(tmp_path) == tmp_path
