"""The one registry of the benchmarks ``python -m vitbook.bench`` runs: for each, how
to build its contenders, the batch they run on, the sizes of ``--quick`` and the line
of settings the summary prints; and :func:`run`, which measures one by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..train import get_device
from .classifiers import swin_contenders, twins_contenders, vit_contenders
from .harness import Results, measure
from .methods import byol_contenders, dino_contenders, mae_contenders
from .mp3 import mp3_contenders, mp3_costs
from .navit import navit_contenders, navit_utilization, variable_images


def square_images(batch_size: int, image_size: int, device) -> torch.Tensor:
    """The batch of every benchmark but NaViT's: random ``(batch_size, 3, image_size,
    image_size)`` images."""
    return torch.randn(batch_size, 3, image_size, image_size, device=device)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: what it pits against what, on which batch, at which sizes.

    ``contenders(**sizes)`` builds ``{implementation: model}``, vitbook's under
    ``"vitbook"`` (the baseline of every ratio), at its defaults the papers' small
    sizes at 224 pixels; ``settings``: what it pits against what, for the summary's
    footnotes; ``quick``: the sizes of ``--quick`` (smaller images, shallower, so that
    ``all`` finishes in about a minute on a 2-core CPU); ``inputs(batch_size,
    image_size, device)`` makes the batch; ``details(results, batch_size,
    image_size)``, where given, is what a run of this benchmark alone prints under its
    table."""

    contenders: Callable[..., dict[str, nn.Module]]
    settings: str
    quick: dict
    inputs: Callable = square_images
    details: Callable[[Results, int, int], str] | None = None


# each entry: the contenders, the settings line, --quick's sizes (and, where they are
# not the defaults, the inputs and the details)
REGISTRY: dict[str, Benchmark] = {
    "vit": Benchmark(
        vit_contenders,
        "ViT-Ti/16 (DeiT-Tiny), classification",
        quick=dict(image_size=96, depth=4),
    ),
    "swin": Benchmark(
        swin_contenders,
        "Swin-T, window 7, stochastic depth 0.1 on both sides",
        quick=dict(image_size=112, depth=2),
    ),
    "twins": Benchmark(
        twins_contenders,
        "Twins-SVT-S, windows 7, sub-sampling 8, 4, 2, 1",
        quick=dict(image_size=128, depth=2),
    ),
    "navit": Benchmark(
        navit_contenders,
        "ViT-Ti/16 widths on variable-size images, one token budget",
        quick=dict(image_size=96, depth=4),
        inputs=variable_images,
        details=lambda results, b, size: navit_utilization(b, size),
    ),
    "mae": Benchmark(
        mae_contenders,
        "MAE step, ViT-Ti/16 encoder, 75% masked, normalized pixels",
        quick=dict(image_size=96, depth=4, decoder_depth=2),
    ),
    "dino": Benchmark(
        dino_contenders,
        "DINO step (seed setting: 2+2 crops), ViT-Ti/16, EMA update",
        quick=dict(image_size=64, depth=4, out_dim=1024),
    ),
    "byol": Benchmark(
        byol_contenders,
        "BYOL step, ViT-Ti/16 in both, paper's heads, EMA update",
        quick=dict(image_size=64, depth=4, hidden_dim=1024),
    ),
    "mp3": Benchmark(
        mp3_contenders,
        "MP3 step, ViT-Ti/16, 75% masked, gathered context against masked",
        quick=dict(image_size=96, depth=4),
        details=lambda results, b, size: mp3_costs(results),
    ),
}

# the four tables the registry replaced, each read from it; their names stay importable
BENCHMARKS = {name: b.contenders for name, b in REGISTRY.items()}
INPUTS = {name: b.inputs for name, b in REGISTRY.items()}
QUICK = {name: b.quick for name, b in REGISTRY.items()}
SETTINGS = {name: b.settings for name, b in REGISTRY.items()}


def run(
    name: str,
    batch_size: int = 16,
    rounds: int = 7,
    warmup: int = 2,
    device=None,
    peak: float | None = None,
    **config,
) -> Results:
    """Measure every contender of ``REGISTRY[name]``; returns ``{impl: {metric:
    value}}`` (:class:`Results`, whose ``machine`` holds the matmul peak: this run's,
    or ``peak`` in FLOP/s when given, as :func:`measure` takes it)."""
    if name not in REGISTRY:
        raise ValueError(f"no benchmark called {name!r}; there are {sorted(REGISTRY)}")
    benchmark = REGISTRY[name]
    device = get_device() if device is None else torch.device(device)
    x = benchmark.inputs(batch_size, config.get("image_size", 224), device)
    contenders = benchmark.contenders(**config)
    return measure(
        contenders, x, rounds=rounds, warmup=warmup, device=device, peak=peak
    )


def describe(name: str, batch_size: int, config: dict) -> str:
    """The settings of one benchmark run, for the summary's footnotes."""
    knobs = "".join(f", {k.replace('_', ' ')} {v}" for k, v in config.items())
    return f"{REGISTRY[name].settings}; batch {batch_size}{knobs}"
