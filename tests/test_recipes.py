"""Chapter 11 races the methods of chapters 6-10 through ``vitbook.ssl.recipes``: each
recipe must be what its chapter's code does (read here from the notebooks), and
``vitbook.ssl.race`` must give every method the steps its pace allows."""

import ast
import json
from pathlib import Path

import pytest
import torch

import vitbook
from vitbook import configs, data
from vitbook.ssl import race, recipes
from vitbook.ssl.recipes import RECIPES

BOOK = Path(__file__).parents[1] / "book"


def _tree(chapter: str) -> ast.Module:
    cells = json.loads((BOOK / f"{chapter}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    lines = [line for line in code.splitlines() if not line.startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _assigned_dict(tree, name: str) -> dict:
    """The literal keywords of the first ``name = dict(...)`` in a chapter (entries
    that are not literals, such as ``loss=method_loss``, left out)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == name
            and isinstance(node.value, ast.Call)
        ):
            found = {}
            for k in node.value.keywords:
                try:
                    found[k.arg] = ast.literal_eval(k.value)
                except ValueError:
                    pass
            return found
    raise AssertionError(f"no {name} = dict(...)")


def _calls(tree, func: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == func
    ]


def _keywords(call: ast.Call) -> dict:
    return {k.arg: ast.unparse(k.value) for k in call.keywords if k.arg}


@pytest.mark.parametrize("name", ["DINO", "EsViT", "BYOL"])
def test_a_distillation_recipe_is_its_chapters_optimizer_and_crops(name):
    recipe = RECIPES[name]
    tree = _tree(recipe.chapter)
    fit_dict = "fit_config" if name == "BYOL" else "optim_config"
    assert _assigned_dict(tree, fit_dict) == recipe.fit
    crops = _assigned_dict(tree, "crop_settings")
    assert crops["global_scale"] == recipes.GLOBAL_SCALE
    if name != "BYOL":
        assert crops["local_scale"] == recipes.LOCAL_SCALE
        built = _keywords(_calls(tree, name)[0])
        assert built["total_steps"] == "steps"
        # the schedules that follow the run's length, as the chapter sets them
        code = ast.unparse(tree)
        assert "warmup_teacher_temp_steps=steps // 3" in code
        assert "freeze_last_layer_steps=max(1, steps // 100)" in code
    loader = [c for c in _calls(tree, "loader") if "drop_last" in _keywords(c)]
    assert recipe.drop_last == bool(loader)


@pytest.mark.parametrize("name", ["MAE", "MP3"])
def test_a_masked_recipe_is_its_chapters_optimizer_and_backbone(name):
    recipe = RECIPES[name]
    tree = _tree(recipe.chapter)
    adamws = _calls(tree, "AdamW")
    assert adamws, "the chapter builds its AdamW"
    # every pretraining of the chapter (chapter 6 has two) uses the recipe's
    for adamw in adamws:
        decay = _keywords(adamw.args[0])["weight_decay"]
        assert ast.literal_eval(decay) == recipe.fit["weight_decay"]
        keywords = _keywords(adamw)
        assert ast.literal_eval(keywords["lr"]) == recipe.fit["lr"]
        assert ast.literal_eval(keywords["betas"]) == recipe.betas
    vit = [c for c in _calls(tree, "ViT") if "pos_embed" in _keywords(c)][0]
    assert ast.literal_eval(_keywords(vit)["pos_embed"]) == recipe.backbone["pos_embed"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_pretraining_builds_the_chapters_method_from_its_configuration(name):
    p = recipes.pretraining(name, steps=30)
    cfg = configs.chapter(RECIPES[name].chapter)
    assert p.batch_size == cfg.batch_size
    backbone = p.method.backbone
    assert backbone.patch_embed.patch_size[0] == cfg.backbone["patch_size"]
    assert len(backbone.blocks) == cfg.backbone["depth"]
    # the same seed builds the same weights, as the chapter's seed_everything(0) does
    again = recipes.pretraining(name, steps=30).method.state_dict()
    for key, value in p.method.state_dict().items():
        assert torch.equal(value, again[key]), key
    if name in ("DINO", "EsViT"):
        entry = cfg.dino if name == "DINO" else cfg.esvit
        assert p.views == 2 + entry["num_local"]
    if "optimizer" in p.fit_kwargs:
        group = p.fit_kwargs["optimizer"].param_groups[0]
        assert group["betas"] == RECIPES[name].betas


def test_pretraining_refuses_an_unknown_method_and_a_bad_length():
    with pytest.raises(ValueError, match="not a recipe"):
        recipes.pretraining("SimCLR", steps=10)
    with pytest.raises(ValueError, match="steps=0"):
        recipes.pretraining("MAE", steps=0)


@pytest.fixture(scope="module")
def small_sets():
    train_set, test_set = data.fashion_mnist("train"), data.fashion_mnist("test")
    return train_set.subset(512, seed=0), test_set.subset(200, seed=0)


def test_the_race_gives_each_method_the_steps_its_pace_allows(small_sets, monkeypatch):
    pace = {"MAE": 0.1, "MP3": 0.25}
    monkeypatch.setattr(race, "step_seconds", lambda names, *a, **k: pace)
    vitbook.seed_everything(0)
    rows = race.equal_seconds(0.5, *small_sets, names=["MAE", "MP3"], device="cpu")
    assert list(rows) == ["MAE", "MP3", "random init"]
    assert rows["MAE"]["steps"] == 5 and rows["MP3"]["steps"] == 2
    assert rows["MAE"]["images_seen"] == 5 * configs.chapter("06_mae").batch_size
    assert rows["MP3"]["views"] == 1 and rows["random init"]["steps"] == 0
    for row in rows.values():
        assert 0 <= row["knn"] <= 1 and 0 <= row["linear"] <= 1


def test_the_race_times_a_step_of_every_method_it_races(small_sets):
    pace = race.step_seconds(["MAE", "BYOL"], small_sets[0], "cpu", rounds=1)
    assert set(pace) == {"MAE", "BYOL"} and all(t > 0 for t in pace.values())


def test_the_race_refuses_a_bad_budget_and_an_unknown_method(small_sets):
    with pytest.raises(ValueError, match="seconds=0"):
        race.equal_seconds(0, *small_sets)
    with pytest.raises(ValueError, match="not recipes"):
        race.equal_seconds(1, *small_sets, names=["MAE", "SimCLR"])
