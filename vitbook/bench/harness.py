"""Measuring contenders against each other on one batch: a forward and a training step
of each, timed interleaved (:func:`~vitbook.bench.timing.interleaved_median`), their
FLOPs counted, their parameters and, on CUDA, their peak memory."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..train import get_device
from .flops import count_flops, matmul_peak
from .methods import LossOf
from .timing import interleaved_median, sync

# what is timed of every contender
TASKS = ("forward", "train step")


def forward_step(model, x):
    with torch.no_grad():
        model(x)


def train_step(model, x, y, optimizer):
    optimizer.zero_grad(set_to_none=True)
    if isinstance(model, LossOf):  # a self-supervised method: its own loss, no labels
        model(x).backward()
        optimizer.step()
        model.step_teacher()
    else:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def peak_memory(make_step, device) -> float | None:
    """Peak CUDA memory (MiB) of one step, with nothing else of the benchmark resident:
    ``make_step()`` builds a fresh contender (model and optimizer) on the device."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step = make_step()
    step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del step
    torch.cuda.empty_cache()
    return peak


class Results(dict):
    """``{implementation: {metric: value}}``, ``machine``: what was measured of the
    machine in the same run (the matmul peak), and ``flops``: ``{implementation:
    {"forward" or "train step": FLOPs counted for one call}}``."""

    def __init__(
        self, rows: dict, machine: dict | None = None, flops: dict | None = None
    ):
        super().__init__(rows)
        self.machine = machine or {}
        self.flops = flops or {}


def measure(
    contenders: dict[str, nn.Module],
    x,
    rounds: int = 7,
    warmup: int = 2,
    device=None,
    peak: float | None = None,
) -> Results:
    """Time a forward and a training step of every model of ``contenders`` on the
    batch ``x`` (a tensor or a list of images), interleaved, the median of
    ``rounds``; also their FLOP/s as a share of the matmul peak and, on CUDA, their
    peak memory. The models are copied, never trained themselves. ``peak`` (FLOP/s)
    is the roofline to compare with: pass one measured earlier (``results.machine``)
    so that two tables share it; by default it is measured here (on a 2-core CPU two
    measurements can differ by half)."""
    if peak is not None and not peak > 0:
        raise ValueError(f"peak={peak} must be a positive number of FLOP/s")
    device = get_device() if device is None else torch.device(device)
    batch_size = len(x)
    y = torch.randint(0, 10, (batch_size,), device=device)
    templates = {k: copy.deepcopy(m) for k, m in contenders.items()}

    def steps(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        return {
            "forward": lambda: forward_step(model.eval(), x),
            "train step": lambda: train_step(model.train(), x, y, optimizer),
        }

    def fresh_step(k, task):
        # a new copy of the contender and its optimizer, on the device
        return steps(copy.deepcopy(templates[k]).to(device))[task]

    # peak memory first, each contender alone on the device, built fresh
    memory = {
        k: {t: peak_memory(lambda: fresh_step(k, t), device) for t in TASKS}
        for k in templates
    }
    models = {k: m.to(device) for k, m in templates.items()}
    tasks = {k: steps(m) for k, m in models.items()}
    results = {
        # trainable ones: fixed sin-cos tables and EMA teachers are not counted
        k: {
            "params (M)": sum(p.numel() for p in m.parameters() if p.requires_grad)
            / 1e6
        }
        for k, m in models.items()
    }
    peak = matmul_peak(device) if peak is None else peak
    names = list(models)
    flops = {k: {t: count_flops(fn) for t, fn in tasks[k].items()} for k in names}
    for task in TASKS:
        calls = {k: tasks[k][task] for k in names}
        medians = interleaved_median(calls, rounds, warmup, device)
        for k in names:
            seconds = medians[k]
            results[k][f"{task} img/s"] = batch_size / seconds
            results[k][f"{task} % peak"] = 100 * flops[k][task] / seconds / peak
            if memory[k][task] is not None:
                results[k][f"{task} peak MiB"] = memory[k][task]
    return Results(results, machine={"matmul GFLOP/s": peak / 1e9}, flops=flops)
