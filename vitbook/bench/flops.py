"""FLOPs: counted for one call of a model by PyTorch's dispatcher, and the machine's
float32 matmul throughput, the roofline each step's achieved FLOP/s is compared with."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .timing import interleaved_median


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul throughput in FLOP/s (median of ``repeats``): the
    roofline every model's achieved FLOP/s is compared with, measured in the same
    run."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    # one warm-up round: threads, caches, kernels
    seconds = interleaved_median({"a @ b": lambda: a @ b}, repeats, 1, device)
    return 2 * n**3 / seconds["a @ b"]


def _sdpa_cpu_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flop(
    grad_out, query, key, value, *args, out_shape=None, **kwargs
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention_formulas() -> dict:
    """SDPA's CPU kernel and its backward, with the formulas ``FlopCounterMode`` applies
    to the CUDA kernels: its table leaves the CPU kernel out, so that on the CPU
    attention would count no FLOPs at all."""
    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            _sdpa_cpu_backward_flop
        ),
    }


def count_flops(fn) -> int:
    """Floating-point operations of one call of ``fn``, counted by PyTorch's dispatcher
    with ``FlopCounterMode``'s formulas (matmuls, convolutions and attention, on the
    CPU too; elementwise work is not counted, as in every FLOP count of these
    models)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(
            display=False, custom_mapping=_cpu_attention_formulas()
        )
        with counter:
            fn()
        return counter.get_total_flops()
    except (RuntimeError, AssertionError):
        # its per-module bookkeeping trips over some inputs (NaViT's packed batches):
        # the same formulas, applied without the module hooks
        with DispatchFlops() as counter:
            fn()
        return counter.total


class DispatchFlops(TorchDispatchMode):
    """Sum ``FlopCounterMode``'s formulas over every op the dispatcher runs."""

    def __enter__(self):
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        self.total = 0
        extra = _cpu_attention_formulas()
        self.formulas = {
            **flop_registry,
            **{k: shape_wrapper(f) for k, f in extra.items()},
        }
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
