"""Data-parallel training under ``torchrun``, with PyTorch's own engine (DDP).

    torchrun --standalone --nproc_per_node=2 my_training_script.py

``train.fit`` needs no change: when ``torchrun`` has set ``WORLD_SIZE > 1`` it joins the
process group (gloo on the CPU, NCCL on GPUs), wraps the model in
``DistributedDataParallel``, gives every rank its shard of each global batch, averages
the logged losses over ranks, and lets only rank 0 print and write checkpoints.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True in a process that ``torchrun`` started with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (once); True when data-parallel."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return active()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints and saves."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """On GPUs each rank uses its own: ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as every rank trains it: DDP around it (BatchNorm made synchronous on
    GPUs, where ``SyncBatchNorm`` runs); the model itself when not data-parallel."""
    if not active():
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    unused = getattr(model, "ddp_find_unused_parameters", False)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=unused
    )


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over all ranks (itself when
    single-process)."""
    if not active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / dist.get_world_size()


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (itself when
    single-process); ``tensor`` is not changed."""
    if not active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if active():
        dist.barrier()


__all__ = [
    "launched",
    "active",
    "setup",
    "rank",
    "world_size",
    "is_main",
    "local_device",
    "wrap",
    "mean_over_ranks",
    "sum_over_ranks",
    "barrier",
]
