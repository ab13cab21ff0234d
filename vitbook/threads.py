"""How many CPU threads a training run gets, on a machine that may be busy.

PyTorch starts as many OpenMP threads as the machine has cores. On a busy machine (a
browser, an IDE, another notebook) that is the worst choice: each step ends at a
barrier where every thread waits for the slowest, and a thread that shares its core
with another process is always the slowest. On the project's 2-core CPU one busy
process makes chapter 1's step 3-4x slower with 2 threads, and 1.6x slower with 1.

So ``fit`` on the CPU measures, before it starts (a quarter of a second, twice when the
first look finds load) and again after every epoch, how much of the cores the other
processes use (Linux's ``/proc/stat`` less this process's own
CPU time) and trains on the cores they leave free: on a quiet machine torch's own
number, so nothing changes there. Its progress bar says what it chose. It leaves
alone what a user set: ``VITBOOK_THREADS=n`` fixes the number, and so do
``OMP_NUM_THREADS`` and a ``torch.set_num_threads`` call of the user's own. When the
run ends, the number it found is set back.

The number of threads changes the order of floating-point sums, so a seeded run gives
the same numbers again on the same number of threads; ``VITBOOK_THREADS`` fixes it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

# torch's own number in this process, before anyone changed it
TORCH_DEFAULT = torch.get_num_threads()
# how long the first look at the machine watches it, in seconds
PROBE_SECONDS = 0.25
_set_by_us: int | None = None


def choose_threads(cores: int, others: float, default: int) -> int:
    """The threads for a run: the ``cores`` this process may use less the cores the
    other processes keep busy (``others``, a float: 0.7 is 70% of one core), rounded,
    at least 1 and at most torch's ``default``.

    >>> choose_threads(cores=2, others=0.0, default=2)
    2
    >>> choose_threads(cores=2, others=1.0, default=2)
    1
    """
    if cores < 1 or default < 1 or others < 0:
        raise ValueError(
            f"choose_threads(cores={cores}, others={others}, default={default}): "
            "cores and default must be >= 1 and others >= 0"
        )
    free = math.floor(cores - others + 0.5)
    return max(1, min(default, free))


def threads_from_env(environ=os.environ) -> int | None:
    """``VITBOOK_THREADS`` as a number of threads, None when it is not set."""
    value = environ.get("VITBOOK_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VITBOOK_THREADS={value!r} must be a whole number >= 1")
    return int(value)


def user_choice(environ=os.environ, current: int | None = None) -> str | None:
    """Who, other than vitbook, chose the number of threads: ``"VITBOOK_THREADS"``,
    ``"OMP_NUM_THREADS"`` or ``"torch.set_num_threads"`` (the number differs from
    torch's default and from what vitbook last set); None when nobody did."""
    current = torch.get_num_threads() if current is None else current
    if threads_from_env(environ) is not None:
        return "VITBOOK_THREADS"
    if environ.get("OMP_NUM_THREADS"):
        return "OMP_NUM_THREADS"
    if current not in (TORCH_DEFAULT, _set_by_us):
        return "torch.set_num_threads"
    return None


@dataclass
class CpuClock:
    """A reading of the machine's busy CPU time (every core, every process), this
    process's own CPU time and the wall clock, all in seconds."""

    busy: float
    own: float
    wall: float

    @staticmethod
    def read() -> CpuClock | None:
        """Now; None where the machine does not say (no ``/proc/stat``: not Linux)."""
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        # cpu user nice system idle iowait irq softirq steal ...: idle, iowait and
        # steal (another virtual machine's) are not busy here
        user, nice, system, _, _, irq, softirq = map(int, fields[1:8])
        ticks = os.sysconf("SC_CLK_TCK")
        times = os.times()
        return CpuClock(
            busy=(user + nice + system + irq + softirq) / ticks,
            own=times.user + times.system,
            wall=time.perf_counter(),
        )

    def others_since(self, before: CpuClock) -> float:
        """The cores the other processes kept busy between ``before`` and this one."""
        wall = self.wall - before.wall
        if wall <= 0:
            return 0.0
        return max(0.0, (self.busy - before.busy) - (self.own - before.own)) / wall


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ThreadPlan:
    """The threads of one run on the CPU: chosen when it starts (:meth:`start`),
    checked again after each epoch (:meth:`recheck`, from the CPU time the other
    processes used during it), set back when it ends (:meth:`restore`).
    :attr:`label` says in a few words what was chosen and why, for the progress
    bar."""

    def __init__(self, device: torch.device):
        self.on_cpu = torch.device(device).type == "cpu"
        self.found = torch.get_num_threads()
        self.owner = user_choice(current=self.found) if self.on_cpu else None
        self.threads, self.others, self.clock = self.found, None, None

    def start(self) -> ThreadPlan:
        forced = threads_from_env()
        if forced is not None and self.on_cpu:
            self._set(forced)
        elif self.on_cpu and self.owner is None and CpuClock.read() is not None:
            # a second look when the first finds load: a burst (a test, a save)
            # rarely lasts both, and it would cost the run a core for an epoch
            others = self._look()
            if others >= 0.5:
                others = min(others, self._look())
            self._choose(others)
        self.clock = CpuClock.read()
        return self

    @staticmethod
    def _look() -> float:
        """The cores the other processes use over the next ``PROBE_SECONDS``."""
        before = CpuClock.read()
        time.sleep(PROBE_SECONDS)
        return CpuClock.read().others_since(before)

    def recheck(self) -> bool:
        """Choose again from what the other processes used since the last look;
        True when the number changed."""
        if not self.on_cpu or self.owner is not None or self.clock is None:
            return False
        now, was = CpuClock.read(), self.threads
        self._choose(now.others_since(self.clock))
        self.clock = now
        return self.threads != was

    def restore(self) -> None:
        if self.on_cpu and torch.get_num_threads() != self.found:
            self._set(self.found)

    @property
    def label(self) -> str:
        if not self.on_cpu:
            return ""
        unit = "thread" if self.threads == 1 else "threads"
        if self.owner is not None:
            return f"{self.threads} {unit}, {self.owner}"
        if self.others is None:
            return f"{self.threads} {unit}"
        return f"{self.threads} {unit}, {self.others:.1f} cores busy elsewhere"

    def _choose(self, others: float) -> None:
        self.others = others
        self._set(choose_threads(cores(), others, TORCH_DEFAULT))

    def _set(self, n: int) -> None:
        global _set_by_us
        self.threads = n
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _set_by_us = n


__all__ = [
    "TORCH_DEFAULT",
    "choose_threads",
    "threads_from_env",
    "user_choice",
    "CpuClock",
    "cores",
    "ThreadPlan",
]
