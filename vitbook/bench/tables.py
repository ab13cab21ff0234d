"""The tables ``python -m vitbook.bench`` prints: one benchmark's numbers with their
ratios to vitbook's, and the summary of many benchmarks, vitbook against each
reference."""

from __future__ import annotations


def report(results: dict, baseline: str = "vitbook") -> str:
    """One row per implementation: each number, and its ratio to ``baseline``'s, in
    blocks of three metrics so that no line is wider than 88 characters."""
    machine = getattr(results, "machine", {})
    metrics = list(next(iter(results.values())))
    lines = []
    for group in range(0, len(metrics), 3):
        lines += report_block(results, metrics[group : group + 3], baseline) + [""]
    if machine:
        lines.append(
            f"float32 matmul peak, measured in this run: "
            f"{machine['matmul GFLOP/s']:.0f} GFLOP/s.\n'% peak': each step's "
            "achieved FLOP/s (counted by FlopCounterMode) against that peak."
        )

    lines.append(
        f"ratios are against {baseline}; img/s and % peak: higher is better;\n"
        "peak MiB (CUDA only, each contender alone on the device): lower is leaner"
    )
    return "\n".join(lines)


def report_block(results: dict, metrics: list[str], baseline: str) -> list[str]:
    """The lines of one block of :func:`report`: a header of ``metrics``, then one row
    per implementation, each value with its ratio to ``baseline``'s."""
    lines = [f"{'implementation':<14}" + "".join(f"{m:>24}" for m in metrics)]
    for impl, values in results.items():
        cells = []
        for m in metrics:
            v, base = values[m], results[baseline][m]
            cells.append(
                f"{v:>12.1f}"
                + (f" ({v / base:>5.2f}x)" if impl != baseline else " " * 9)
            )
        lines.append(f"{impl:<14}" + "".join(f"{c:>24}" for c in cells))
    return lines


def summary(results: dict[str, dict], settings: dict[str, str] | None = None) -> str:
    """One table for many benchmarks: for every reference of every benchmark, the
    parameters on both sides and vitbook's throughput divided by the reference's
    (above 1.00x: vitbook is faster), with each side's share of the matmul peak."""
    head = (
        f"{'model':<7}{'reference':<16}{'params (M)':>12}{'train step':>16}"
        f"{'forward':>16}{'% peak, train':>16}\n"
        f"{'':<7}{'':<16}{'vitbook':>8}{'ref':>6}{'img/s':>9}{'vb/ref':>7}"
        f"{'img/s':>9}{'vb/ref':>7}{'vitbook':>9}{'ref':>7}"
    )
    lines = [head]
    for name, rows in results.items():
        vb = rows["vitbook"]
        for ref, r in rows.items():
            if ref == "vitbook":
                continue
            lines.append(
                f"{name:<7}{ref:<16}{vb['params (M)']:>8.2f}{r['params (M)']:>6.2f}"
                f"{r['train step img/s']:>9.1f}"
                f"{vb['train step img/s'] / r['train step img/s']:>6.2f}x"
                f"{r['forward img/s']:>9.1f}"
                f"{vb['forward img/s'] / r['forward img/s']:>6.2f}x"
                f"{vb['train step % peak']:>9.1f}{r['train step % peak']:>7.1f}"
            )
    if settings:
        lines += [""] + [f"{name}: {text}" for name, text in settings.items()]
    lines.append(
        "img/s: the reference's throughput; vb/ref: vitbook's divided by it (medians)"
    )
    return "\n".join(lines)
