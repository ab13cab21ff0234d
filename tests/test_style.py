"""The package source is what the book shows (vitbook.show): it must fit the page."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_source_fits_the_page_width_of_88_characters():
    ruff = shutil.which("ruff") or str(Path(__import__("sys").executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (requirements.txt pins it)")
    result = subprocess.run([ruff, "check", "--select", "E501", "--line-length", "88",
                             "vitbook"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _ruff() -> str:
    ruff = shutil.which("ruff") or str(Path(__import__("sys").executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (requirements.txt pins it)")
    return ruff


def test_package_source_is_formatted_as_the_page_shows_it():
    """ruff format leaves the package unchanged: the code show() prints is the
    formatter's, with no statement split by a trailing comment."""
    result = subprocess.run([_ruff(), "format", "--check", "vitbook"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_imports_nothing_it_does_not_use():
    result = subprocess.run([_ruff(), "check", "--select", "F401", "vitbook"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_fmt_skip_only_where_a_table_needs_it():
    """`# fmt: skip` keeps a hand layout the formatter would undo: only for tables."""
    skipped = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "vitbook").rglob("*.py"))
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if "fmt: skip" in line and "table" not in line]
    assert not skipped, f"# fmt: skip outside a table: {skipped}"


def test_no_statement_is_split_by_a_trailing_comment():
    """A comment after a long statement makes the formatter split it over three lines,
    ending in `)  # comment`: the comment goes on its own line above instead."""
    import re

    scars = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "vitbook").rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.match(r"^\s*[)\]}]+,?\s+#", line)]
    assert not scars, f"statements split by a trailing comment: {scars}"
