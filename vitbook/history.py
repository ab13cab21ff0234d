"""What a run saw: the :class:`History` ``fit`` returns (one row per optimizer step,
one per evaluation), the :class:`StepLog` that fills it without making a GPU wait on
every step, and the :class:`Tracker` that keeps the run's clock and progress bar."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from . import distributed
from .progress import progress

if TYPE_CHECKING:
    from .train import RunState


@dataclass
class History:
    """What ``fit`` saw: one row per optimizer step, one per evaluation."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run, evaluations included
    eval_seconds: float = 0.0  # of which evaluating

    @property
    def train_seconds(self) -> float:
        """Wall time spent training, evaluations excluded (each evaluation row's
        ``seconds`` is this clock when it was taken: the time-to-accuracy curve)."""
        return self.seconds - self.eval_seconds

    def last(self, key: str, default=None):
        for row in reversed(self.evals + self.steps):
            if key in row:
                return row[key]
        return default

    def accuracy_at(self, seconds: float) -> float | None:
        """The test accuracy of the last evaluation taken within ``seconds`` of
        training (None if there was none yet): one point of the time-to-accuracy
        curve."""
        reached = [r["test_acc"] for r in self.evals if r.get("seconds", 0) <= seconds]
        return reached[-1] if reached else None

    def plot(self, smooth: int = 20, title: str | None = None):
        """Loss per step (smoothed) and accuracy, train and test, side by side."""
        from . import viz

        return viz.plot_history(self, smooth=smooth, title=title)


class StepLog:
    """Per-step losses and metrics kept on the device, read in one transfer when
    flushed.

    Reading a CUDA tensor's value waits for the GPU; ``fit`` flushes only at the
    progress bar's refresh interval, at evaluations and at the end, and checks then that
    every loss since the last flush was finite. On the CPU the history is the same,
    number for number.
    """

    def __init__(self, history: "History", interval: float = 0.5, every=None):
        # every: flush every n steps instead of by the clock (data-parallel ranks must
        # flush at the same steps, since the flush averages over them)
        self.history, self.interval, self.every = history, interval, every
        self.pending: list[tuple[dict, torch.Tensor, dict]] = []
        self.last_flush = time.perf_counter()

    def add(self, row: dict, loss: torch.Tensor, metrics: dict) -> None:
        self.pending.append((row, loss.detach(), metrics))

    def due(self) -> bool:
        if self.every is not None:
            return len(self.pending) >= self.every
        return time.perf_counter() - self.last_flush >= self.interval

    def flush(self, lr: float) -> dict | None:
        """Move the pending rows into the history (losses and metrics averaged over
        data-parallel ranks); the newest row, or None if none waited."""
        if not self.pending:
            return None
        keys = list(self.pending[0][2])
        # (n, 1 + metrics): one read from the device for all
        table = torch.stack(
            [
                torch.stack(
                    [loss.float()]
                    + [
                        torch.as_tensor(m[k], dtype=torch.float32, device=loss.device)
                        for k in keys
                    ]
                )
                for _, loss, m in self.pending
            ]
        )
        table = distributed.mean_over_ranks(table).tolist()
        for (row, _, _), values in zip(self.pending, table):
            if not math.isfinite(values[0]):
                self.pending.clear()
                raise FloatingPointError(
                    f"loss became {values[0]} at step {row['step']}; lower lr (now "
                    f"{lr}) or check the data"
                )
            self.history.steps.append(
                {**row, "loss": values[0], **dict(zip(keys, values[1:]))}
            )
        self.pending.clear()
        self.last_flush = time.perf_counter()
        return self.history.steps[-1]


class Tracker:
    """What a run saw and how far along it is: its history (the steps, logged by
    :class:`StepLog`; the evaluations, taken by ``judge()`` and timed), its clock
    (going on from a resumed run's seconds), the share of its ``budget`` spent, and a
    progress bar that shows the newest of it (on rank 0, when ``show``) and the CPU
    threads of the run (``threads``, a :class:`~vitbook.threads.ThreadPlan`, chosen
    again after each epoch and set back on leaving)."""

    def __init__(
        self, history, budget, state, lr, judge=None, desc="", show=True, threads=None
    ):
        self.history, self.budget, self.lr, self.judge = history, budget, lr, judge
        self.desc, self.threads = desc, threads
        # data-parallel ranks flush at the same steps, since a flush averages them
        every = 25 if distributed.active() else None
        self.log = StepLog(history, every=every)
        self.bar = progress(
            total=budget.total_steps,
            initial=state.step,
            desc=self._description(),
            unit="step",
            disable=not (show and distributed.is_main()),
        )
        self.start = time.perf_counter() - history.seconds

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self.threads is not None:
            self.threads.restore()

    def _description(self) -> str:
        label = self.threads.label if self.threads is not None else ""
        return f"{self.desc} [{label}]" if label else self.desc

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self, state: RunState) -> float:
        return self.budget.fraction(state.step, self.elapsed())

    def spent(self, state: RunState) -> bool:
        return self.budget.spent(state.step, self.elapsed())

    def add(self, row: dict, loss: torch.Tensor, metrics: dict) -> None:
        self.log.add(row, loss, metrics)
        self.bar.update(1)
        # the only place the device is waited for
        if self.log.due():
            self.flush()

    def flush(self) -> None:
        self._show(self.log.flush(self.lr))

    def snapshot(self) -> History:
        """The history as it stands, its pending steps logged and its seconds set:
        what a checkpoint saves."""
        self.flush()
        self.history.seconds = self.elapsed()
        return self.history

    def evaluate(self, state: RunState) -> None:
        """Evaluate, and record it with the training seconds before it."""
        self.flush()
        trained_for = self.elapsed() - self.history.eval_seconds
        began = time.perf_counter()
        result = self.judge()
        self.history.eval_seconds += time.perf_counter() - began
        self.history.evals.append(
            {
                "step": state.step,
                "epoch": state.epoch,
                "seconds": trained_for,
                **{f"test_{k}": v for k, v in result.items()},
            }
        )
        newest = self.history.steps[-1] if self.history.steps else None
        self._show(newest, test_acc=f"{result['acc']:.3f}")

    def end_epoch(self, state: RunState) -> None:
        """Flush, evaluate unless this step was just evaluated, and choose the threads
        again for the next epoch."""
        self.flush()
        if self.threads is not None and self.threads.recheck():
            self.bar.set_description(self._description(), refresh=False)
        evals = self.history.evals
        if self.judge is not None and not (evals and evals[-1]["step"] == state.step):
            self.evaluate(state)

    def _show(self, row: dict | None, **extra) -> None:
        if row is not None:
            shown = {
                k: f"{v:.3f}"
                for k, v in row.items()
                if k not in ("step", "epoch", "lr", "wd")
            }
            self.bar.set_postfix({**shown, **extra}, refresh=False)


__all__ = ["History", "StepLog", "Tracker"]
