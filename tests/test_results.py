"""vitbook.results: a chapter's classifier result, saved for the chapters after it."""

import pytest
import torch

from vitbook import results
from vitbook.history import History


def history(steps: int, epochs: int) -> History:
    rows = [
        {"step": s, "epoch": 1 + (s - 1) * epochs // steps} for s in range(1, steps + 1)
    ]
    return History(steps=rows, seconds=12.5)


def test_a_saved_result_comes_back_at_its_scale(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    results.save_classifier("ViT", model, history(20, 2), 0.8612, directory=tmp_path)
    found = results.load_classifiers(tmp_path)
    assert set(found) == {"ViT"}
    record = found["ViT"]
    assert record["accuracy"] == 0.8612 and record["parameters"] == 8
    assert (record["epochs"], record["steps"], record["seconds"]) == (2, 20, 12.5)
    line = results.describe(record, "chapter 1")
    assert line == "86.12% after 2 epochs, 20 steps, 12 s (chapter 1)"
    # a result of the other scale is not this scale's
    monkeypatch.setattr(results, "scale", lambda: "full")
    assert results.load_classifiers(tmp_path) == {}
    assert "run chapter 1 first" in results.describe(None, "chapter 1")


def test_impossible_results_are_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="accuracy=86"):
        results.save_classifier("ViT", model, history(2, 1), 86, directory=tmp_path)
    with pytest.raises(ValueError, match="no steps"):
        results.save_classifier("ViT", model, History(), 0.5, directory=tmp_path)
