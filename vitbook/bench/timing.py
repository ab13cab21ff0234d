"""Timing calls against each other: in rounds that call each one once, the order
rotating from round to round, and the median over rounds. Background load on a shared
machine then hits every call alike, and one slow round does not move the result."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable, TypeVar

import torch

Key = TypeVar("Key", bound=Hashable)


def sync(device: torch.device | None) -> None:
    """Wait until ``device`` has run what was queued on it (CUDA runs asynchronously);
    ``None`` is the CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Wall-clock seconds of one call of ``fn``, with the device's queue drained before
    and after it, so that the call's own work is what is timed."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_median(
    calls: dict[Key, Callable[[], object]],
    rounds: int,
    warmup: int = 0,
    device: torch.device | None = None,
) -> dict[Key, float]:
    """Seconds per call of each of ``calls``, the median over ``rounds`` rounds. Each
    round calls every one once, the order rotating by one from round to round, so that
    no call always runs right after the same other one; the first ``warmup`` rounds run
    the same way and are not counted (threads, caches, kernels)."""
    if not calls:
        raise ValueError("calls is empty: there is nothing to time")
    if rounds < 1:
        raise ValueError(f"rounds {rounds} must be >= 1 (the median of no rounds)")
    if warmup < 0:
        raise ValueError(f"warmup {warmup} must be >= 0")
    keys = list(calls)
    times = {k: [] for k in keys}
    for r in range(warmup + rounds):
        first = r % len(keys)
        for k in keys[first:] + keys[:first]:
            t = seconds(calls[k], device)
            if r >= warmup:
                times[k].append(t)
    return {k: statistics.median(times[k]) for k in keys}
