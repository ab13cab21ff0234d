"""What the book shows must fit the page: the theme shows about 88 characters of a code
cell or of its output before a scrollbar hides the rest."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
WIDTH = 88


def _lines_too_wide(text: str):
    return [
        (i + 1, len(line), line)
        for i, line in enumerate(text.splitlines())
        if len(line) > WIDTH
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_line_of_the_notebook_fits_the_page(path):
    nb = nbformat.read(path, as_version=4)
    wide = [
        f"cell {k} line {i} ({n} chars): {line}"
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for i, n, line in _lines_too_wide(cell.source)
    ]
    assert not wide, f"{path.name}: lines wider than {WIDTH}:\n" + "\n".join(wide)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    ran = [k for k, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    assert not ran, f"{path.name}: cells {ran} carry outputs (run nbstripout)"


def _string_constants(source: str):
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: nothing to check
        return []
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_literal_text_a_cell_prints_is_wider_than_the_page(path):
    """The printed width is checked where it can be without running: no string
    constant (f-string parts included) holds a line wider than the page. The browser
    test (tests/book_html) checks the executed output."""
    nb = nbformat.read(path, as_version=4)
    wide = [
        f"cell {k}: {s[:60]!r}..."
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for s in _string_constants(cell.source)
        if any(len(line) > WIDTH for line in re.split(r"\n", s))
    ]
    assert not wide, f"{path.name}: text wider than {WIDTH}: {wide}"
