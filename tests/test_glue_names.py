"""Every {glue:text} name in a chapter's prose is recorded by a glue call of the same
notebook. A name built in an f-string (glue(f"margin_{p}", ...)) stands for every name
its fixed parts allow, each placeholder one or more word characters: a placeholder at
the start (glue(f"{other}_knn", ...)) must not let any name at all through."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")
GLUE_CALL = re.compile(r"""glue\(\s*f?["']([^"']+)["']""")


def pattern(name: str) -> re.Pattern:
    # (fixed text and {placeholder}s) -> a regex: the fixed text escaped, each
    # placeholder one or more word characters
    parts = re.split(r"\{[^}]*\}", name)
    return re.compile(r"\w+".join(re.escape(p) for p in parts))


def missing_names(cells: list[dict]) -> list[str]:
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    patterns = [pattern(n) for n in GLUE_CALL.findall(code)]
    used = {
        name
        for c in cells
        if c["cell_type"] == "markdown"
        for name in GLUE_ROLE.findall("".join(c["source"]))
    }
    return sorted(n for n in used if not any(p.fullmatch(n) for p in patterns))


def test_a_leading_placeholder_does_not_let_every_name_through():
    cells = [
        {"cell_type": "code", "source": ['glue(f"{other}_knn", 1)\n', 'glue("K", 2)']},
        {"cell_type": "markdown", "source": ["{glue:text}`raw_knn` {glue:text}`Kx`"]},
    ]
    assert missing_names(cells) == ["Kx"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_name_is_recorded(path):
    cells = json.loads(path.read_text())["cells"]
    missing = missing_names(cells)
    assert not missing, f"{path.name}: glued in the prose but never recorded: {missing}"
