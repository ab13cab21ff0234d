"""The bibliography's labels: "Grill et al., 2020", the way the chapters cite.

pybtex's default label style ("alpha") builds labels such as [GSAltche+20] from the
authors' initials, and mangles accents in them; two papers of the same first author and
year (Dehghani et al. 2023, NaViT and ViT-22B) get labels a reader cannot tell apart in
the text. This registers a pybtex formatting style ``vitbook``: pybtex's ``plain`` with
author-year labels ("Xiao et al., 2017", "Loshchilov and Hutter, 2019"), accents kept,
and a/b suffixes where two labels would be equal. `_config.yml` selects it
(``bibtex_default_style: vitbook``) with ``bibtex_reference_style: label``, so a citation
in the text shows the same label as the bibliography.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _last_name(person) -> str:
    latex = " ".join(person.prelast_names + person.last_names)
    return Text.from_latex(latex).render_as("text").replace("{", "").replace("}", "")


def author_year(entry) -> str:
    """``"First et al., 2021"``, ``"First and Second, 2021"`` or ``"First, 2021"``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in people]
    if not names:
        who = entry.fields.get("organization") or entry.fields.get("title", "?")
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        sorted_entries = list(sorted_entries)
        labels = [author_year(e) for e in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] > 1:  # "2023a", "2023b" in the bibliography's order
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class Style(PlainStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = SortingStyle


register_plugin("pybtex.style.formatting", "vitbook", Style)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
