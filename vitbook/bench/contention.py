"""``python -m vitbook.bench contention``: chapter 1's training step on a quiet machine
and beside one busy process, with torch's default number of threads and with
vitbook's choice (:mod:`vitbook.threads`), measured in one run.

The busy process is started and stopped by the benchmark itself: one Python process
spinning on one core, what a browser tab or an IDE's indexer does to a laptop. The
rounds alternate quiet and busy and, within each, the two choices, so that a drift of
the machine hits all four alike; each number is the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .. import threads
from ..models import ViT

# chapter 1's small model and batch (book/01_vit.ipynb)
CHAPTER_1 = dict(image_size=28, channels=1, num_classes=10, patch_size=7, dim=64)
CHAPTER_1 |= dict(depth=4, heads=4, mlp_dim=128)
BATCH_SIZE = 256
# a Python loop keeps one core busy until it is stopped
SPIN = "while True: pass"


def chapter_1_step(seed: int = 0):
    """One AdamW step of chapter 1's ViT on a batch of 256 random 28x28 images."""
    torch.manual_seed(seed)
    model = ViT(**CHAPTER_1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(BATCH_SIZE, 1, 28, 28)
    labels = torch.randint(0, 10, (BATCH_SIZE,))

    def step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class BusyProcess:
    """One other process keeping one core busy while the ``with`` block runs."""

    def __init__(self, settle: float = 0.5):
        self.settle = settle

    def __enter__(self) -> BusyProcess:
        self.process = subprocess.Popen([sys.executable, "-c", SPIN])
        # let the scheduler see it running before anything is measured
        time.sleep(self.settle)
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()


def seconds_per_step(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def use(choice: str) -> str:
    """Set the threads as ``choice`` would: torch's default, or vitbook's plan (which
    looks at the machine first). Returns what was set, in words."""
    if choice == "torch default":
        torch.set_num_threads(threads.TORCH_DEFAULT)
        return f"{threads.TORCH_DEFAULT} threads"
    return threads.ThreadPlan(torch.device("cpu")).start().label


def measure(
    rounds: int = 5, steps: int = 10, warmup: int = 2, settle: float = 0.5
) -> dict:
    """Median seconds per step of chapter 1's step for each (machine, choice), and
    what vitbook chose on each machine; the busy process runs ``settle`` seconds
    before anything is measured beside it."""
    step = chapter_1_step()
    choices = ("torch default", "vitbook")
    times = {(m, c): [] for m in ("quiet", "busy") for c in choices}
    chosen = {}
    for r in range(rounds + warmup):
        # the order of the two choices turns from round to round
        order = choices if r % 2 == 0 else choices[::-1]
        for machine in ("quiet", "busy"):
            with BusyProcess(settle) if machine == "busy" else nullcontext():
                for choice in order:
                    said = use(choice)
                    step()
                    took = seconds_per_step(step, steps)
                    if r >= warmup:
                        times[machine, choice].append(took)
                        if choice == "vitbook":
                            chosen[machine] = said
    torch.set_num_threads(threads.TORCH_DEFAULT)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": medians, "chosen": chosen}


def table(result: dict) -> str:
    s, chosen = result["seconds"], result["chosen"]
    lines = [
        "chapter 1's training step (batch 256), ms per step, median over rounds",
        f"{'threads':<16}{'quiet':>9}{'busy':>9}{'busy / quiet':>15}",
    ]
    for choice in ("torch default", "vitbook"):
        quiet, busy = s["quiet", choice] * 1e3, s["busy", choice] * 1e3
        lines.append(f"{choice:<16}{quiet:>9.1f}{busy:>9.1f}{busy / quiet:>14.2f}x")
    cost = s["quiet", "vitbook"] / s["quiet", "torch default"]
    gain = s["busy", "torch default"] / s["busy", "vitbook"]
    lines += [
        f"vitbook chose, quiet: {chosen['quiet']}",
        f"vitbook chose, busy:  {chosen['busy']}",
        f"quiet: vitbook's choice takes {cost:.2f}x torch's default time",
        f"busy:  vitbook's choice is {gain:.1f}x faster than torch's default",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitbook.bench contention",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds {args.rounds} and --steps {args.steps} must be >= 1")
    owner = threads.user_choice()
    if owner is not None:
        print(
            f"note: {owner} is set, so vitbook's choice is the user's "
            f"({torch.get_num_threads()} threads); unset it to see vitbook's own"
        )
    print(
        f"torch {torch.__version__}, {threads.cores()} cores, torch's default "
        f"{threads.TORCH_DEFAULT} threads; {args.rounds} rounds of {args.steps} steps"
    )
    start = time.perf_counter()
    print(table(measure(args.rounds, args.steps)))
    print(f"{time.perf_counter() - start:.0f} s in all")


__all__ = ["chapter_1_step", "BusyProcess", "measure", "table", "main"]
