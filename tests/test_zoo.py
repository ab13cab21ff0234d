"""The comparison chapter races ``vitbook.zoo``'s models: they must be the very
configurations the chapters train, read here from the notebooks themselves."""

import ast
import json
from pathlib import Path

import pytest
import torch

from vitbook import zoo

BOOK = Path(__file__).parents[1] / "book"
NOTEBOOK = {1: "01_vit", 2: "02_swin", 3: "03_twins", 4: "04_scalable_vit"}


def _code(chapter: int) -> ast.Module:
    cells = json.loads((BOOK / f"{NOTEBOOK[chapter]}.ipynb").read_text())["cells"]
    source = "\n".join(
        "".join(c["source"]) for c in cells if c["cell_type"] == "code"
    )
    # notebook-only syntax (magics, trailing semicolons are fine) is dropped
    lines = [line for line in source.splitlines() if not line.startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _scales(call: ast.Call) -> tuple:
    """``at_scale(small=..., full=...)`` as Python values."""
    kw = {k.arg: k.value for k in call.keywords}

    def value(node):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict":
            return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return ast.literal_eval(node)

    return value(kw["small"]), value(kw["full"])


def _is_at_scale(node) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "at_scale"


def notebook_config(chapter: int, cls_name: str) -> tuple[dict, dict]:
    tree = _code(chapter)
    if cls_name == "CNN":  # CNN(..., widths=vitbook.at_scale(small=..., full=...))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "CNN":
                for k in node.keywords:
                    if k.arg == "widths" and _is_at_scale(k.value):
                        small, full = _scales(k.value)
                        return {"widths": small}, {"widths": full}
    for node in ast.walk(tree):  # the first `config = vitbook.at_scale(...)`
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "config"
            and _is_at_scale(node.value)
        ):
            return _scales(node.value)
    raise AssertionError(f"no configuration of {cls_name} in chapter {chapter}")


@pytest.mark.parametrize("name", list(zoo.CHAPTER_MODELS))
def test_zoo_configuration_is_the_one_its_chapter_trains(name):
    chapter, cls, small, full = zoo.CHAPTER_MODELS[name]
    assert notebook_config(chapter, cls.__name__) == (small, full)


@pytest.mark.parametrize("name", list(zoo.CHAPTER_MODELS))
def test_every_chapter_model_classifies_fashion_mnist_images(name):
    model = zoo.chapter_model(name)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_an_unknown_chapter_model_is_refused_by_name():
    with pytest.raises(ValueError, match="name='LeNet': not a chapter model"):
        zoo.chapter_model("LeNet")
