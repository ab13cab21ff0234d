"""Chapter 11's figures: the chapters' models and methods side by side."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_time_to_accuracy(histories: dict, title: str | None = None):
    """Test accuracy against training seconds (left: what a reader waits for on this
    machine) and against optimizer steps (right: the same runs, free of the clock),
    one line per model. ``histories``: ``{name: History}`` from ``fit(...,
    eval_loader=..., eval_every=...)``."""
    fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(8.4, 3.9), sharey=True)
    for name, history in histories.items():
        rows = history.evals
        acc = [100 * r["test_acc"] for r in rows]
        (line,) = by_time.plot(
            [r["seconds"] for r in rows], acc, "o-", ms=3, label=name
        )
        by_step.plot([r["step"] for r in rows], acc, "o-", ms=3, color=line.get_color())
    by_time.set_xlabel("training seconds on this machine (evaluation excluded)")
    by_step.set_xlabel("optimizer steps")
    for ax in (by_time, by_step):
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    by_time.legend(fontsize=9, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# the two panels of chapter 11's accuracy bar charts: k-NN, then the linear probe
PROTOCOLS = (("knn", "k-NN"), ("linear", "linear probe"))


def _accuracy_panels():
    """A figure of two panels sharing the accuracy axis, one per protocol."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2), sharey=True)
    return fig, axes


def _finish_accuracy_panels(fig, axes, methods, ncol: int, title=None):
    """Label both panels (methods along x, accuracy from 0 to 100% along y: bars
    start at zero, their lengths are the accuracies), one legend under them."""
    for ax, (_, label) in zip(axes, PROTOCOLS):
        ax.set_xticks(np.arange(len(methods)), methods)
        ax.set_xlabel("self-supervised method")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{label}, Fashion-MNIST test set", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 100)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_representation_comparison(reports: dict, title: str | None = None):
    """Every method's representation table as bars: k-NN (left) and linear probe
    (right), the pretrained backbone next to the same backbone at random
    initialization and the supervised model, with raw pixels as a dashed line per
    method. ``reports``: ``{method: RepresentationReport}``."""
    methods = list(reports)
    rows = [
        ("pretrained", "tab:blue"),
        ("random init", "tab:gray"),
        ("supervised", "tab:green"),
    ]
    fig, axes = _accuracy_panels()
    x = np.arange(len(methods))
    width = 0.8 / len(rows)
    for ax, (protocol, _) in zip(axes, PROTOCOLS):
        for i, (row, color) in enumerate(rows):
            values = [
                100 * reports[m].rows[row][protocol] if row in reports[m].rows else 0
                for m in methods
            ]
            ax.bar(x + (i - 1) * width, values, width, color=color, label=row)
        for j, m in enumerate(methods):
            if "raw pixels" in reports[m].rows:
                pixels = 100 * reports[m].rows["raw pixels"][protocol]
                ax.hlines(
                    pixels,
                    j - 0.45,
                    j + 0.45,
                    colors="k",
                    linestyles="--",
                    label="raw pixels" if j == 0 else None,
                )
    return _finish_accuracy_panels(fig, axes, methods, ncol=4, title=title)


def plot_equal_seconds(raced: dict, chapters: dict | None = None, title=None):
    """The race of :func:`vitbook.ssl.race.equal_seconds` as bars: each method's k-NN
    (left) and linear-probe (right) accuracy after the same pretraining seconds, the
    shared random initialization as a dashed line, and, where ``chapters`` holds a
    method's saved report (``{method: RepresentationReport}``), the accuracy of its
    chapter's own, longer run as a black diamond. Bars start at zero."""
    methods = [m for m in raced if m != "random init"]
    chapters = chapters or {}
    fig, axes = _accuracy_panels()
    x = np.arange(len(methods))
    for ax, (protocol, _) in zip(axes, PROTOCOLS):
        values = [100 * raced[m][protocol] for m in methods]
        ax.bar(x, values, 0.6, color="tab:blue", label="the same seconds each")
        if "random init" in raced:
            floor = 100 * raced["random init"][protocol]
            ax.axhline(floor, color="k", ls="--", lw=1, label="random init")
        own = [(i, m) for i, m in enumerate(methods) if m in chapters]
        if own:
            ax.plot(
                [i for i, _ in own],
                [100 * chapters[m].rows["pretrained"][protocol] for _, m in own],
                "D",
                color="k",
                ms=7,
                label="its chapter's own run",
            )
    return _finish_accuracy_panels(fig, axes, methods, ncol=3, title=title)


__all__ = [
    "plot_time_to_accuracy",
    "plot_representation_comparison",
    "plot_equal_seconds",
]
