"""The full scale cannot crash on shapes: every training run of every chapter, built
from ``vitbook.configs`` at the full scale, takes one training step on a CPU, on two
images with the full scale's shapes (image and crop sizes, patch sizes, windows)."""

import json
import re
from pathlib import Path

import pytest
import torch

from vitbook import configs
from vitbook.bench import fullscale
from vitbook.train import train_step

BOOK = Path(__file__).parents[1] / "book"
RUNS = [
    run for name in configs.CHAPTERS for run in fullscale.training_runs(name, "full")
]


@pytest.mark.parametrize("run", RUNS, ids=lambda run: f"{run.chapter}: {run.name}")
def test_every_full_scale_run_takes_a_training_step(run):
    torch.manual_seed(0)
    model = run.build().train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, _ = train_step(model, run.batch(2), run.loss, optimizer)
    assert torch.isfinite(loss)
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(moved) > 0.5 * len(moved), "most parameters should have been updated"


def test_every_chapter_has_its_runs_and_the_full_scale_is_larger():
    for name in configs.CHAPTERS:
        small = fullscale.training_runs(name, "small")
        full = fullscale.training_runs(name, "full")
        assert [r.name for r in small] == [r.name for r in full] != []
        # what they train on: images of their steps, or seconds on the clock
        def budget(runs):
            return sum(r.steps * r.batch_size + (r.seconds or 0) for r in runs)

        assert budget(full) > budget(small), name


def test_the_full_vit_has_its_shapes():
    # the shapes the runs above are about: 4x4 patches of 28x28 images, ViT-Ti's width
    vit = fullscale.training_runs("01_vit", "full")[0].build()
    assert vit.patch_embed.grid == (7, 7) and vit.num_features == 192
    small = fullscale.training_runs("01_vit", "small")[0].build()
    assert small.patch_embed.grid == (4, 4) and small.num_features == 64


def test_a_chapter_reads_its_scale():
    assert configs.chapter("01_vit", "small").epochs == 9
    assert configs.chapter("01_vit", "full").epochs == 20
    dino = configs.chapter("07_dino", "full").dino
    assert dino["local_size"] == 12  # a nested Scales is resolved too
    assert (
        dino["local_size"] % configs.chapter("07_dino", "full").backbone["patch_size"]
        == 0
    )
    with pytest.raises(ValueError, match="not a chapter"):
        configs.chapter("12_nothing")
    with pytest.raises(ValueError, match="not one of"):
        configs.chapter("01_vit", "huge")


def test_a_chapter_gets_copies_of_its_dictionaries():
    configs.chapter("01_vit", "full").model["depth"] = 100
    assert configs.chapter("01_vit", "full").model["depth"] == 9


def test_flops_of_a_step_scale_linearly_with_the_batch():
    run = fullscale.training_runs("01_vit", "full")[0]
    two, four = fullscale.step_flops(run, 2), fullscale.step_flops(run, 4)
    assert two > 0 and abs(two - four) / four < 0.01
    # forward and backward: about 6 FLOPs per weight and token (2 forward, 4 backward),
    # plus attention's; 50 tokens (49 patches and the class token)
    weights = sum(p.numel() for p in run.build().parameters())
    assert 1.0 < (two / run.batch_size) / (6 * weights * 50) < 1.2


def test_the_table_has_a_row_per_chapter(monkeypatch):
    # counting is tested above; here only the table's form, on fake counts
    monkeypatch.setattr(fullscale, "step_flops", lambda run, n=None: 1e12)
    table = fullscale.flops_table("full").splitlines()
    assert len(table) == 2 + len(configs.CHAPTERS)
    row = table[2].split("|")
    # chapter 1: the ViT's epochs, then the race on the clock (120 s each)
    assert row[1].strip() == "01_vit" and row[2].strip() == "2,360 + 120 s + 120 s"
    assert float(row[3]) == pytest.approx(2360 * 1e12)
    t4 = 2360 * 1e12 / (65e12 * 0.25) / 60 + 240 / 60
    assert float(row[4]) == pytest.approx(t4, rel=0.01)


@pytest.mark.parametrize("name", list(configs.CHAPTERS))
def test_every_chapter_reads_its_values_from_its_record(name):
    # a value typed in a notebook with at_scale(...) would escape the tests above
    cells = json.loads((BOOK / f"{name}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert f'cfg = vitbook.configs.chapter("{name}")' in code
    assert "at_scale(" not in code
    used = set(re.findall(r"\bcfg\.(\w+)", code))
    assert used == set(configs.CHAPTERS[name]), "an entry the chapter does not read"


def test_the_readme_table_is_the_commands_output():
    # the counts are exact (no timing): a changed full-scale configuration shows here
    readme = (BOOK.parent / "README.md").read_text()
    assert fullscale.flops_table("full") in readme
