"""The command line, ``python -m vitbook.bench NAME`` (or ``all``): each benchmark of
the registry measured in turn, then one summary table."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ..train import get_device
from . import contention
from .registry import REGISTRY, describe, run
from .tables import report, summary


def parse_args(argv=None) -> argparse.Namespace:
    # the first line of the package's docstring says what the command does
    about = sys.modules[__package__].__doc__.splitlines()[0]
    parser = argparse.ArgumentParser(
        prog="python -m vitbook.bench",
        description=about,
        epilog="python -m vitbook.bench contention: chapter 1's step on a quiet and a "
        "busy machine, torch's threads against vitbook's choice",
    )
    parser.add_argument("name", choices=sorted(REGISTRY) + ["all"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, batch 8, 5 rounds: about a minute for all",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="vit, navit, mae, dino, byol, mp3: number of blocks (default 12); "
        "swin, twins: depth of the third stage (default 6, 10)",
    )
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # a benchmark of its own kind: the machine's load, not vitbook against a reference
    if argv[:1] == ["contention"]:
        return contention.main(argv[1:])
    args = parse_args(argv)
    device = get_device(args.device)
    names = sorted(REGISTRY) if args.name == "all" else [args.name]
    batch_size = args.batch_size or (8 if args.quick else 16)
    rounds = args.rounds or (5 if args.quick else 7)
    print(
        f"{args.name}: batch {batch_size}, {rounds} rounds (median), device "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    results, settings = {}, {}
    for name in names:
        config = dict(REGISTRY[name].quick) if args.quick else {}
        if args.image_size is not None:
            config["image_size"] = args.image_size
        if args.depth is not None:
            config["depth"] = args.depth
        results[name] = run(
            name,
            batch_size=batch_size,
            rounds=rounds,
            warmup=1 if args.quick else 2,
            device=device,
            **config,
        )
        settings[name] = describe(name, batch_size, config)
        if len(names) == 1:
            print(report(results[name]))
            details = REGISTRY[name].details
            if details is not None:
                size = config.get("image_size", 224)
                print(details(results[name], batch_size, size))
            print()
    print(summary(results, settings))
    peaks = [r.machine["matmul GFLOP/s"] for r in results.values()]
    print(
        f"float32 matmul peak measured in this run: {statistics.median(peaks):.0f} "
        f"GFLOP/s; {time.perf_counter() - start:.0f} s in all"
    )
