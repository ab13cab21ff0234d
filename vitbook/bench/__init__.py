"""``python -m vitbook.bench vit`` (or ``swin``, ``twins``): vitbook against the
reference implementations (``mp3``: MP3's gathered context against its masked form).

Prints throughput (images per second, forward only and a full training step) and, on
CUDA, peak memory, each as a ratio to vitbook's own number. Implementations are timed
interleaved (one call of each per round, the order rotating) and each number is the
median over rounds, so background load hits them all alike. These are measurements,
never test assertions.
"""

from .classifiers import swin_contenders, twins_contenders, vit_contenders
from .cli import main
from .flops import DispatchFlops, count_flops, matmul_peak
from .harness import Results, forward_step, measure, train_step
from .methods import LossOf, byol_contenders, dino_contenders, mae_contenders
from .mp3 import mp3_contenders, mp3_costs
from .navit import (
    PaddedViT,
    SeedNaViT,
    TimmNaFlex,
    navit_contenders,
    navit_utilization,
    variable_images,
)
from .registry import (
    BENCHMARKS,
    INPUTS,
    QUICK,
    REGISTRY,
    SETTINGS,
    Benchmark,
    describe,
    run,
    square_images,
)
from .tables import report, report_block, summary
from .timing import interleaved_median

__all__ = [
    "Benchmark",
    "REGISTRY",
    "BENCHMARKS",
    "INPUTS",
    "QUICK",
    "SETTINGS",
    "run",
    "describe",
    "main",
    "measure",
    "Results",
    "forward_step",
    "train_step",
    "interleaved_median",
    "count_flops",
    "DispatchFlops",
    "matmul_peak",
    "report",
    "report_block",
    "summary",
    "square_images",
    "vit_contenders",
    "swin_contenders",
    "twins_contenders",
    "navit_contenders",
    "PaddedViT",
    "SeedNaViT",
    "TimmNaFlex",
    "variable_images",
    "navit_utilization",
    "LossOf",
    "mae_contenders",
    "dino_contenders",
    "byol_contenders",
    "mp3_contenders",
    "mp3_costs",
]
