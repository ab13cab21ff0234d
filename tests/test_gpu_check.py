"""`make gpu-check` on a machine without a GPU: one line that says so, a non-zero exit,
and nothing run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_fails(tmp_path):
    out = tmp_path / "gpu-check.md"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stdout.count("\n") == 1 and "no CUDA GPU" in run.stdout
    assert not out.exists()


def test_the_report_keeps_the_lines_that_report_results():
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import RESULT

    kept = ["DINO over random init: k-NN +4.4, probe +9.3", "300 steps in 206 s",
            "at least 5 points over the random backbone: ok"]
    assert all(RESULT.search(line) for line in kept)
    assert not RESULT.search("scale: full, device: cuda")
