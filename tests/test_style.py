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
