"""`make gpu-check`: every chapter at the full scale on a CUDA GPU, one report.

    python tests/gpu_check.py [--chapters 01_vit 07_dino ...] [--out build/gpu-check.md]

Executes each notebook of `book/` (in order, in a fresh kernel, with VITBOOK_SCALE=full
and a fresh results directory, so chapter 11 reads only what this run measured) and
writes `build/gpu-check.md`: the GPU, torch and CUDA versions, then for each chapter its
wall time, its peak GPU memory and every line it printed that reports a result (an
accuracy, a table row, a check). Before the chapters it runs the CUDA-only paths of
`fit` that the chapters may not reach on a GPU with bfloat16 (float16 autocast with its
GradScaler, pinned memory and non-blocking copies). On a machine without a CUDA GPU it
says so in one line and exits with status 2, having run nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "VITBOOK_GPU_PEAK "
# the lines of a chapter's output worth keeping: results, tables, checks
RESULT = re.compile(r"%|accura|k-NN|probe|ok$|loss|seconds|steps| s$|img/s|\|")


def gpu_or_exit():
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is "
            "False); it runs the chapters at full scale on a GPU only"
        )
        raise SystemExit(2)
    return torch


def cuda_only_paths(torch) -> list[str]:
    """One short fit through each CUDA-only path, and what it reached."""
    from vitbook import ViT, data, train

    images = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8)
    toy = data.ImageTensors(
        images, torch.randint(0, 10, (256,)), tuple("0123456789"), (0.5,), (0.3,)
    )
    lines = []
    model = ViT(
        image_size=28,
        patch_size=7,
        num_classes=10,
        channels=1,
        dim=64,
        depth=2,
        heads=2,
        mlp_dim=128,
    )
    history = train.fit(
        model,
        toy.loader(64, shuffle=True, device="cuda"),
        steps=8,
        device="cuda",
        progress=False,
    )
    lines.append(
        f"fit on cuda (autocast {train_autocast_dtype(torch)}, pinned "
        f"batches, non-blocking copies): loss {history.steps[-1]['loss']:.3f}"
    )
    bf16 = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda *a, **k: False  # float16 + GradScaler
    try:
        history = train.fit(
            model,
            toy.loader(64, shuffle=True, device="cuda"),
            steps=8,
            device="cuda",
            progress=False,
        )
    finally:
        torch.cuda.is_bf16_supported = bf16
    lines.append(
        f"fit with float16 autocast and GradScaler: loss "
        f"{history.steps[-1]['loss']:.3f}"
    )
    return lines


def train_autocast_dtype(torch) -> str:
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def run_chapter(path: Path, env: dict, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(
        nbformat.v4.new_code_cell(
            "import json, torch\n"
            f"print({MARK!r} + json.dumps(torch.cuda.max_memory_allocated()))"
        )
    )
    began = time.perf_counter()
    old = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
        error = None
    except Exception as failure:  # the report says which chapter failed, and why
        error = f"{type(failure).__name__}: {str(failure).splitlines()[-1][:300]}"
    finally:
        os.environ.clear()
        os.environ.update(old)
    seconds = time.perf_counter() - began
    printed, peak = [], None
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream" or output.get("name") != "stdout":
                continue
            for line in output["text"].splitlines():
                if line.startswith(MARK):
                    peak = json.loads(line[len(MARK) :])
                elif RESULT.search(line):
                    printed.append(line)
    return {"seconds": seconds, "peak": peak, "printed": printed, "error": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", help="notebook names, default all")
    parser.add_argument("--out", default=str(ROOT / "build" / "gpu-check.md"))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    torch = gpu_or_exit()

    chapters = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        chapters = [p for p in chapters if p.stem in set(args.chapters)]
    results_dir = ROOT / "build" / "gpu-results"
    shutil.rmtree(results_dir, ignore_errors=True)
    env = {"VITBOOK_SCALE": "full", "VITBOOK_RESULTS": str(results_dir)}
    props = torch.cuda.get_device_properties(0)
    lines = [
        "# gpu-check",
        "",
        f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "## CUDA-only paths of fit",
        "",
        *[f"- {line}" for line in cuda_only_paths(torch)],
        "",
        "## Chapters at full scale",
        "",
        "| chapter | wall time | peak GPU memory | status |",
        "|---|---|---|---|",
    ]
    details, failed = [], 0
    for path in chapters:
        print(f"gpu-check: {path.stem} ...", flush=True)
        r = run_chapter(path, env, args.timeout)
        failed += r["error"] is not None
        peak = "?" if r["peak"] is None else f"{r['peak'] / 2**30:.2f} GiB"
        status = "ok" if r["error"] is None else r["error"].replace("|", "/")
        lines.append(f"| {path.stem} | {r['seconds']:.0f} s | {peak} | {status} |")
        details += ["", f"### {path.stem}", "", "```", *r["printed"], "```"]
        print(f"gpu-check: {path.stem} {r['seconds']:.0f} s, {status}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + details) + "\n")
    print(
        f"gpu-check: {len(chapters) - failed} of {len(chapters)} chapters ran; "
        f"the report is {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
