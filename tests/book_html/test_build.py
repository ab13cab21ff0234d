"""The strict build: every notebook executed without an error, then rendered with no warning."""

from __future__ import annotations

import re

import nbformat
import pytest

from .common import ROOT, chapters

CHAPTERS = chapters()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_was_executed_without_error_output(staged, chapter):
    nb = nbformat.read(staged / f"{chapter}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        for out in cell.outputs:
            assert out.output_type != "error", (
                f"{chapter}, code cell {i}: {out.ename}: {out.evalue}"
            )
            if out.output_type == "stream":
                assert "Traceback (most recent call last)" not in out.text, (
                    f"{chapter}, code cell {i}: a traceback"
                )
    unexecuted = [
        i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None
    ]
    assert not unexecuted, (
        f"{chapter}: code cells {unexecuted} were not executed (nbmake runs before this test)"
    )


def test_committed_notebooks_have_no_outputs():
    """The repository keeps notebooks stripped; only the staged copy under build/ is executed."""
    for chapter in CHAPTERS:
        if not (ROOT / f"{chapter}.ipynb").exists():
            continue  # a notebook only the staged copy has (a test of the tests)
        nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
        dirty = [
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and (c.outputs or c.execution_count)
        ]
        assert not dirty, (
            f"{chapter}.ipynb has outputs in code cells {dirty}: run `make strip`"
        )


def test_book_builds_without_a_warning(built_book):
    """`jupyter-book build -W -n --keep-going` with execution off: no warning, no missing reference."""
    log = built_book.stdout + built_book.stderr
    warnings = [
        re.sub(r"\x1b\[[0-9;]*m", "", line)
        for line in log.splitlines()
        if "WARNING" in line or "ERROR" in line
    ]
    assert built_book.returncode == 0 and not warnings, (
        f"the strict build failed (exit {built_book.returncode}); full log in _build/strict-build.log:\n"
        + "\n".join(warnings or log.splitlines()[-30:])
    )
