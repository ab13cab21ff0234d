"""show() and glue() as a notebook kernel runs them: every show of a cell is displayed,
and glued values carry the metadata myst-nb reads for the {glue:text} role."""

import ast

import nbformat
import pytest
from nbclient import NotebookClient

import vitbook
from vitbook.display import GLUE_PREFIX, glue_text


def run_cell(source: str) -> list:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    return notebook.cells[0].outputs


def test_two_shows_in_one_cell_display_both_once():
    outputs = run_cell(
        "import vitbook\n"
        "vitbook.show(vitbook.packing.greedy)\n"
        "vitbook.show(vitbook.layers.PatchEmbed)\n"
    )
    shown = [o["data"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(shown) == 2, f"expected both sources once, got {len(shown)} outputs"
    assert "def greedy" in shown[0]["text/plain"]
    assert "class PatchEmbed" in shown[1]["text/plain"]


def test_glue_writes_what_myst_nb_reads():
    outputs = run_cell(
        "import vitbook\n"
        "vitbook.glue('acc', 0.88512, '{:.1%}')\n"
        "vitbook.glue('note', 'ten epochs')\n"
        "vitbook.glue('params', 172298, '{:,}')\n"
        "vitbook.glue('margin', 7.5, '{:+.1f}')\n"
        "vitbook.glue('loss', 0.7, '{:.2f}')\n"
    )
    # nothing but the glued values: a cell ending in glue prints no more
    assert len(outputs) == 5
    glued = {
        o["metadata"]["scrapbook"]["name"]: o["data"][GLUE_PREFIX + "text/plain"]
        for o in outputs
        if "scrapbook" in o.get("metadata", {})
    }
    # what the {glue:text} role prints: myst-nb reads the text with literal_eval
    # (myst_nb.core.variables.format_plain_text), so "172,298" must survive it
    shown = {name: str(ast.literal_eval(text)) for name, text in glued.items()}
    assert shown == {
        "acc": "88.5%",
        "note": "ten epochs",
        "params": "172,298",
        "margin": "+7.5",
        "loss": "0.70",
    }


def test_glue_outside_a_notebook_displays_nothing_and_checks_its_input():
    assert vitbook.glue("steps", 300) is None
    assert glue_text("steps", 300) == "300"
    assert glue_text("ratio", 0.25, "{:.0%}") == "25%"
    with pytest.raises(ValueError, match="glue name 'a b'"):
        vitbook.glue("a b", 1)
    with pytest.raises(TypeError, match="takes a number or a string, got list"):
        vitbook.glue("x", [1])
