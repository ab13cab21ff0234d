"""No number in a chapter's prose can go stale: a result-like number (a percentage, a
time, a speed ratio) in the markdown is inserted from the run with myst-nb's
``{glue:text}`name``` (recorded by ``vitbook.glue`` in a code cell of the same
notebook), quoted from a paper (its sentence cites it with ``{cite}``, or it stands in
a table column headed "paper" or "official"), or a setting of the run that the code
fixes (listed in SETTINGS with where it comes from). Checked on the committed
notebooks, without running them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))

# A percentage, a time, a speed ratio, a gap in points: what a run measures.
RESULT = re.compile(
    r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?:-\d+(?:\.\d+)?)?"
    r"(?:\s?%|\s?ms\b|\s?s\b|\s(?:seconds?|minutes?|points?)\b|x(?![\w]))"
    r"|\b(?:a|one|two|three|four|five|half a) minutes?(?: and a half)?\b",
    re.IGNORECASE,
)
# what is not prose a run could contradict: code, maths, glued values, links' targets
NOT_PROSE = re.compile(
    r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\]\([^)]*\)|<[^>]*>", re.DOTALL
)
CITED = re.compile(r"\{cite[^}]*\}`([^`]*)`")
# cited for their code or optimizer, not for numbers a chapter could quote (the
# Fashion-MNIST paper is quoted: its benchmark of classifiers)
NOT_RESULTS = {"wang2020vitpytorch", "wightman2019timm", "wolf2020transformers"}
NOT_RESULTS |= {"loshchilov2019adamw"}
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")
GLUE_CALL = re.compile(r"""glue\(\s*f?["']([^"']+)["']""")

# Numbers in the prose that the code sets, not measures: (chapter, text) -> where the
# code fixes it. The bars the chapters assert (85% for a Fashion-MNIST classifier) are
# settings too: the assert is in the code next to them. A result that happens to equal
# a setting's text passes; keep the list short.
BAR = "the accuracy the chapter asserts"
WARMUP = "fit's warmup=0.1: the share of steps the learning rate climbs"
MASKING = "the masking ratio the chapter sets (mask_ratio)"
SETTINGS = {
    ("01_vit", "10%"): WARMUP,
    ("01_vit", "85%"): BAR,
    ("02_swin", "10%"): WARMUP,
    ("02_swin", "85%"): BAR,
    ("02_swin", "2.25x"): "the padding formula of the same sentence, worked out",
    ("03_twins", "85%"): BAR,
    ("04_scalable_vit", "85%"): BAR,
    ("04_scalable_vit", "13%"): "the FLOP formula of the same cell at c = 1.25",
    ("05_navit", "80%"): BAR,
    ("06_mae", "75%"): MASKING,
    ("06_mae", "25%"): MASKING,
    ("06_mae", "90%"): MASKING,
    ("07_dino", "40-100%"): "MultiCrop's global_scale=(0.4, 1.0)",
    ("07_dino", "5-40%"): "the paper's local_scale=(0.05, 0.4)",
    (
        "07_dino",
        "1%",
    ): "freeze_last_layer_steps: 1% of the run, the official first epoch",
    ("08_esvit", "40-100%"): "MultiCrop's global_scale=(0.4, 1.0)",
    ("08_esvit", "5 points"): "the margin over random init the chapter asserts",
    ("08_esvit", "10-40%"): "MultiCrop's local_scale=(0.1, 0.4)",
    ("09_byol", "40-100%"): "the views' global_scale=(0.4, 1.0)",
    (
        "09_byol",
        "8%",
    ): "the paper's smallest crop, global_scale=(0.08, 1.0) in exercise 2",
    ("10_mp3", "75%"): MASKING,
    ("10_mp3", "90%"): MASKING,
    ("10_mp3", "6.25%"): "chance: 1 position in 16",
    ("10_mp3", "100%"): "the ceiling of an accuracy",
    ("11_comparison", "10%"): WARMUP,
    ("11_comparison", "80%"): "the accuracy whose first step the table reports",
    ("11_comparison", "85%"): "the accuracy an exercise asks about",
    ("11_comparison", "30 s"): "seconds=30, the budget an exercise sets",
    ("11_comparison", "0.9x"): "the band of ratios the text reads as a tie",
    ("11_comparison", "1.1x"): "the band of ratios the text reads as a tie",
    ("11_comparison", "5 points"): "the margin over the random init every chapter asserts",
}


def markdown(path: Path) -> list[tuple[int, str]]:
    cells = json.loads(path.read_text())["cells"]
    return [
        (i, "".join(c["source"]))
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
    ]


def code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def quoted_columns(table: list[str]) -> set[int]:
    """The columns of a markdown table whose header names a paper or official code."""
    header = [h.strip().lower() for h in table[0].strip().strip("|").split("|")]
    return {i for i, h in enumerate(header) if "paper" in h or "official" in h}


def unmarked_numbers(text: str) -> list[str]:
    """The result-like numbers of one markdown cell that nothing marks."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            table = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                table.append(lines[i])
                i += 1
            quoted = quoted_columns(table)
            for row in table[2:]:
                cells = row.strip().strip("|").split("|")
                for j, cell in enumerate(cells):
                    if j not in quoted and not cites_a_paper(cell):
                        found += _numbers(cell)
            continue
        # sentences of the paragraph this line starts
        paragraph = []
        while i < len(lines) and not lines[i].lstrip().startswith("|"):
            paragraph.append(lines[i])
            i += 1
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph)):
            if not cites_a_paper(sentence):
                found += _numbers(sentence)
    return found


def cites_a_paper(text: str) -> bool:
    keys = {k.strip() for group in CITED.findall(text) for k in group.split(",")}
    return bool(keys - NOT_RESULTS)


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in RESULT.finditer(NOT_PROSE.sub(" ", text))]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_result_in_the_prose_is_glued_quoted_or_a_setting(path):
    allowed = {text for (chapter, text) in SETTINGS if chapter == path.stem}
    stale = [
        f"cell {i}: {number!r}"
        for i, text in markdown(path)
        for number in unmarked_numbers(text)
        if number not in allowed
    ]
    assert not stale, (
        f"{path.name}: numbers in the prose that a run could contradict; glue them "
        "from the run ({glue:text}`name` and vitbook.glue), cite the paper in their "
        "sentence, or list a setting in SETTINGS:\n  " + "\n  ".join(stale)
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_name_is_recorded_by_the_notebook(path):
    recorded = set(GLUE_CALL.findall(code(path)))
    # names built in a loop (glue(f"margin_{p}", ...)) match by their fixed start
    prefixes = {name.split("{")[0] for name in recorded if "{" in name}
    used = {name for _, text in markdown(path) for name in GLUE_ROLE.findall(text)}
    missing = sorted(
        name
        for name in used
        if name not in recorded and not any(name.startswith(p) for p in prefixes)
    )
    assert not missing, f"{path.name}: glued in the prose but never recorded: {missing}"


def test_the_check_finds_what_it_must():
    prose = (
        "The model reached 85.8% after 332 s, 2.4x faster, in about a minute, "
        "3.5 points ahead.\n"
        "The paper reports 81.7% {cite}`x`. Ours: 80.1% {cite}`wightman2019timm`. "
        "Glued: {glue:text}`acc`. A `7x7` patch, "
        "$4x$, 4x4 windows, 16 tokens.\n\n"
        "| | paper | this chapter |\n|---|---|---|\n| top-1 | 76.1% | 80.2% |"
    )
    assert unmarked_numbers(prose) == [
        "85.8%",
        "332 s",
        "2.4x",
        "a minute",
        "3.5 points",
        "80.1%",
        "80.2%",
    ]
