"""The bibliography page lists exactly what the chapters cite, under labels a reader can
match: "Grill et al., 2020", accents intact, a/b where two would be equal."""

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
sys.path.insert(0, str(BOOK / "_ext"))
import vitbook_bib  # noqa: E402  (registers the "vitbook" pybtex style)

CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def book_texts():
    """Every source page of the book: notebooks' markdown cells and the .md pages."""
    for path in sorted(BOOK.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        yield path.name, "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for path in sorted(BOOK.glob("*.md")):  # "% ..." lines are MyST comments
        lines = path.read_text().splitlines()
        yield path.name, "\n".join(x for x in lines if not x.lstrip().startswith("%"))


def cited_keys() -> dict[str, str]:
    keys = {}
    for name, text in book_texts():
        for group in CITE.findall(text):
            for key in group.split(","):
                keys.setdefault(key.strip(), name)
    return keys


def bibliography_options() -> list[str]:
    text = (BOOK / "bibliography.md").read_text()
    block = re.search(r"```\{bibliography\}\n(.*?)```", text, re.S)
    assert block, "book/bibliography.md has no {bibliography} directive"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bib():
    return parse_file(BOOK / "references.bib")


def test_every_citation_names_an_entry_of_references_bib(bib):
    missing = {k: where for k, where in cited_keys().items() if k not in bib.entries}
    assert not missing, f"cited but not in book/references.bib: {missing}"


def test_every_entry_the_bibliography_shows_is_cited_somewhere(bib):
    options = bibliography_options()
    cited = set(cited_keys())
    if any(o.startswith((":all:", ":notcited:", ":filter:")) for o in options):
        shown = set(bib.entries)  # the page would list the whole file
    else:
        shown = cited & set(bib.entries)  # sphinxcontrib-bibtex's default: cited only
    uncited = sorted(shown - cited)
    assert not uncited, f"the bibliography shows entries no page cites: {uncited}"


def test_labels_are_author_year_readable_and_distinct(bib):
    from pybtex.plugin import find_plugin

    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["bibtex_default_style"] == "vitbook"
    style = find_plugin("pybtex.style.formatting", "vitbook")()
    cited = [bib.entries[k] for k in cited_keys() if k in bib.entries]
    for entries in (list(bib.entries.values()), cited):  # all, and what is shown
        labels = [e.label for e in style.format_entries(entries)]
        assert len(set(labels)) == len(labels), f"labels repeat: {labels}"
        for label in labels:
            assert re.fullmatch(r"[^\W\d_][\w .'-]*, \d{4}[a-z]?", label), label
    labels = {e.key: e.label for e in style.format_entries(bib.entries.values())}
    assert labels["grill2020byol"] == "Grill et al., 2020"
    assert {labels["dehghani2023navit"], labels["dehghani2023vit22b"]} == {
        "Dehghani et al., 2023a",
        "Dehghani et al., 2023b",
    }
    assert labels["loshchilov2019adamw"] == "Loshchilov and Hutter, 2019"


def test_accents_survive_in_names():
    from pybtex.database import Person

    assert vitbook_bib._last_name(Person("Altch{\\'e}, Florent")) == "Altché"
