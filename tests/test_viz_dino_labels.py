"""Chapter 7's collapse diagnostics name what they measure: DINO's std and effective
rank are computed on the teacher's output distributions, and the dashed uniform line
says its value of log K."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

from vitbook import viz  # noqa: E402
from vitbook.train import History  # noqa: E402


def test_collapse_diagnostics_say_teacher_distribution_and_log_k():
    rows = [
        {"step": i, "entropy": 1.0, "kl": 0.5, "std": 0.1, "erank": 3.0}
        for i in range(5)
    ]
    fig = viz.plot_collapse_diagnostics(
        {"a": History(steps=rows)}, max_entropy=math.log(1024)
    )
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[2:] == [
        "std of teacher distribution",
        "effective rank of teacher distribution",
    ], labels
    assert not any("embedding" in label for label in labels), labels
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "log K = 6.93 (uniform)" in legend, legend
