"""The comparison chapter races ``vitbook.zoo``'s models: they must be the very
configurations the chapters train, read here from the notebooks themselves."""

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from vitbook import zoo

BOOK = Path(__file__).parents[1] / "book"
NOTEBOOK = {1: "01_vit", 2: "02_swin", 3: "03_twins", 4: "04_scalable_vit",
            5: "05_navit"}  # fmt: skip


def _code(chapter: int) -> ast.Module:
    cells = json.loads((BOOK / f"{NOTEBOOK[chapter]}.ipynb").read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # notebook-only syntax (magics, trailing semicolons are fine) is dropped
    lines = [line for line in source.splitlines() if not line.startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _value(node):
    """A literal, or a ``dict(...)`` call of literals, as a Python value."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict":
        return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    return ast.literal_eval(node)


def _scales(call: ast.Call) -> tuple:
    """``at_scale(small=..., full=...)`` as Python values."""
    kw = {k.arg: k.value for k in call.keywords}
    return _value(kw["small"]), _value(kw["full"])


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


def _small(tree: ast.Module, variable: str):
    """The small-scale value of the first ``variable = ...`` (``at_scale`` or a literal;
    ``a, b = 1, 2`` too)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            names = [getattr(t, "id", "") for t in target.elts]
            if variable in names:
                return ast.literal_eval(value.elts[names.index(variable)])
        elif getattr(target, "id", "") == variable:
            if _is_at_scale(value):  # only the small value: `full=` may name a variable
                value = {k.arg: k.value for k in value.keywords}["small"]
            return _value(value)
    raise AssertionError(f"no assignment to {variable}")


def _fit_keyword(tree: ast.Module, model: str, keyword: str):
    """A keyword of the first ``fit(model, ...)`` call, as a value (or a variable's)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "fit"
            and node.args
            and getattr(node.args[0], "id", "") == model
        ):
            for k in node.keywords:
                if k.arg == keyword:
                    if isinstance(k.value, ast.Name):
                        return _small(tree, k.value.id)
                    return ast.literal_eval(k.value)
    raise AssertionError(f"no fit({model}, ..., {keyword}=...)")


@pytest.mark.parametrize("name", list(zoo.CHAPTER_RECIPES))
def test_zoo_recipe_is_the_one_its_chapter_trains_with(name):
    chapter = zoo.CHAPTER_MODELS[name][0]
    tree = _code(chapter)
    model, epochs = ("cnn", "cnn_epochs") if name == "CNN" else ("model", "epochs")
    found = dict(
        lr=_fit_keyword(tree, model, "lr"),
        batch_size=_small(tree, "batch_size"),
        epochs=_small(tree, epochs),
    )
    assert found == zoo.CHAPTER_RECIPES[name]


def test_zoo_navit_is_the_one_chapter_5_trains():
    tree = _code(5)
    config = _small(tree, "config")
    assert {k: zoo.NAVIT[k] for k in config} == config
    assert zoo.NAVIT["patch_size"] == _small(tree, "patch_size")
    assert zoo.NAVIT_RECIPE == dict(
        lr=_fit_keyword(tree, "model", "lr"),
        batch_size=_small(tree, "batch_size"),
        steps=_small(tree, "steps"),
        heights=(_small(tree, "low"), _small(tree, "high")),
    )
    for node in ast.walk(tree):  # model = NaViT(token_budget=..., ...)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "NaViT":
            budget = {k.arg: k.value for k in node.keywords}["token_budget"]
            assert ast.literal_eval(budget) == zoo.NAVIT["token_budget"]


@pytest.mark.parametrize("name", ["CNN", "NaViT"])
def test_time_to_accuracy_trains_for_its_budget_and_beats_chance(name):
    # a seconds budget stops on the clock; what it reaches depends on the machine's
    # load, so the accuracy is judged on a budget of steps (epochs=), which does not
    result = zoo.time_to_accuracy(name, seconds=2, device="cpu", progress=False)
    assert result["steps"] >= 1 and result["seconds"] >= 2
    result = zoo.time_to_accuracy(name, epochs=0.15, device="cpu", progress=False)
    assert result["acc"] > 0.2  # chance is 0.1


def test_an_epochs_budget_is_reproducible_and_its_seed_changes_the_run():
    def run(seed):
        return zoo.time_to_accuracy(
            "CNN", epochs=0.05, seed=seed, device="cpu", progress=False
        )

    first, again, other = run(0), run(0), run(1)
    assert first["steps"] == int(0.05 * 235)  # 60,000 images in batches of 256
    assert first["acc"] == again["acc"]  # number for number
    assert first["acc"] != other["acc"]


@pytest.mark.parametrize("budget", [{}, dict(seconds=1, epochs=1)])
def test_time_to_accuracy_needs_exactly_one_budget(budget):
    with pytest.raises(ValueError, match="give exactly one budget"):
        zoo.time_to_accuracy("CNN", **budget)


def test_time_to_accuracy_refuses_an_unknown_model_by_name():
    with pytest.raises(ValueError, match="name='LeNet': not a chapter model"):
        zoo.time_to_accuracy("LeNet", seconds=1)


@pytest.mark.parametrize("name", list(zoo.CHAPTER_MODELS))
def test_every_chapter_model_classifies_fashion_mnist_images(name):
    model = zoo.chapter_model(name)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_an_unknown_chapter_model_is_refused_by_name():
    with pytest.raises(ValueError, match="name='LeNet': not a chapter model"):
        zoo.chapter_model("LeNet")


def test_the_command_line_prints_one_row_per_model_with_the_changes_applied(capsys):
    zoo.main(
        ["--models", "CNN", "--seconds", "1", "--set", "lr=1e-3", "widths=(4,8,16)"]
    )
    out = capsys.readouterr().out
    assert "changes {'lr': 0.001, 'widths': (4, 8, 16)}" in out
    assert out.count("| CNN | ") == 1
    assert re.search(r"\| CNN \| \d+\.\d\d% \([\d,]+ steps, \d+ s\) \|", out)


def test_the_command_line_prints_a_row_per_seed_and_their_mean(capsys):
    zoo.main(["--models", "CNN", "--epochs", "0.02", "--seeds", "0", "1"])
    out = capsys.readouterr().out
    assert "| model | 0.02 epochs |" in out
    rows = [line for line in out.splitlines() if line.startswith("| CNN")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| CNN, seed 0", "| CNN, seed 1", "| CNN, mean of 2 seeds"
    ]  # fmt: skip
    seeds = [float(row.split(" | ")[1].split("%")[0]) for row in rows[:2]]
    assert float(rows[2].split(" | ")[1].rstrip(" |%")) == pytest.approx(
        sum(seeds) / 2, abs=0.006
    )


def test_the_command_line_refuses_seconds_and_epochs_together(capsys):
    with pytest.raises(SystemExit):
        zoo.main(["--models", "CNN", "--seconds", "1", "--epochs", "1"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["seed", "epochs", "seconds"])
def test_the_command_line_refuses_a_change_that_has_its_own_option(key, capsys):
    with pytest.raises(SystemExit):
        zoo.main(["--models", "CNN", "--seconds", "1", "--set", f"{key}=1"])
    assert f"--set '{key}=1': {key} has its own option" in capsys.readouterr().err


def test_the_command_line_refuses_a_change_without_a_value(capsys):
    with pytest.raises(SystemExit):
        zoo.main(["--models", "CNN", "--seconds", "1", "--set", "lr"])
    assert "--set 'lr': expected KEY=VALUE" in capsys.readouterr().err


def test_chapter_model_applies_changes_to_its_configuration():
    assert zoo.chapter_model("ViT", patch_size=4).patch_embed.num_patches == 49
