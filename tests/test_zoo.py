"""The comparison chapter races ``vitbook.zoo``'s models: they must be the very
configurations the chapters train. Both take them from ``vitbook.configs``: the zoo's
entries must be the chapters' records, and each chapter's code must build its model and
its training from its record (read here from the notebooks themselves)."""

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from vitbook import configs, zoo

BOOK = Path(__file__).parents[1] / "book"
NOTEBOOK = {1: "01_vit", 2: "02_swin", 3: "03_twins", 4: "04_scalable_vit",
            5: "05_navit"}  # fmt: skip
# the entry of its chapter's record each zoo model is, and its number of epochs
ENTRY = {"CNN": ("cnn", "epochs")}


def _code(chapter: int) -> str:
    cells = json.loads((BOOK / f"{NOTEBOOK[chapter]}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _fit_keyword(code: str, model: str, keyword: str) -> str:
    """A keyword of the first ``fit(model, ...)`` call, as source text."""
    lines = [line for line in code.splitlines() if not line.startswith(("%", "!"))]
    for node in ast.walk(ast.parse("\n".join(lines))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "fit"
            and node.args
            and getattr(node.args[0], "id", "") == model
        ):
            for k in node.keywords:
                if k.arg == keyword:
                    return ast.unparse(k.value)
    raise AssertionError(f"no fit({model}, ..., {keyword}=...)")


@pytest.mark.parametrize("name", list(zoo.CHAPTER_MODELS))
def test_zoo_configuration_is_the_one_its_chapter_trains(name):
    chapter, cls, small, full = zoo.CHAPTER_MODELS[name]
    notebook = NOTEBOOK[chapter]
    entry = ENTRY.get(name, ("model",))[0]
    record = [getattr(configs.chapter(notebook, s), entry) for s in ("small", "full")]
    assert [small, full] == record
    code = _code(chapter)
    assert f'cfg = vitbook.configs.chapter("{notebook}")' in code
    assert f"cfg.{entry}" in code


@pytest.mark.parametrize("name", list(zoo.CHAPTER_RECIPES))
def test_zoo_recipe_is_the_one_its_chapter_trains_with(name):
    chapter = zoo.CHAPTER_MODELS[name][0]
    entry, epochs = ENTRY.get(name, ("model", "epochs"))
    cfg = configs.chapter(NOTEBOOK[chapter], "small")
    assert zoo.CHAPTER_RECIPES[name] == dict(
        lr=cfg.lr, batch_size=cfg.batch_size, epochs=getattr(cfg, epochs)
    )
    code, model = _code(chapter), "cnn" if name == "CNN" else "model"
    assert _fit_keyword(code, model, "lr") == "cfg.lr"
    assert f"cfg.{epochs}" in code and "cfg.batch_size" in code


def test_zoo_navit_is_the_one_chapter_5_trains():
    cfg = configs.chapter("05_navit", "small")
    assert zoo.NAVIT == dict(
        **cfg.model, patch_size=cfg.patch_size, token_budget=cfg.token_budget
    )
    assert zoo.NAVIT_RECIPE == dict(
        lr=cfg.lr, batch_size=cfg.batch_size, steps=cfg.steps, heights=cfg.heights
    )
    code = _code(5)
    for read in ("cfg.patch_size, cfg.heights", "token_budget=cfg.token_budget",
                 "cfg.model, cfg.steps, cfg.batch_size, cfg.lr"):  # fmt: skip
        assert read in code


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
