"""DINO's and EsViT's centers under torchrun: two CPU processes (gloo, on the loopback
interface) keep one center, the mean of the teacher's outputs over both ranks' batches,
as the official update_center (an all-reduced sum) does."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from vitbook.ssl import DINO, EsViT

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "workers" / "train_dino.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
sys.path.insert(0, str(WORKER.parent))
from train_dino import SIZES, toy_vit  # noqa: E402


def test_two_ranks_keep_one_center_the_mean_over_both_batches(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    # the worker runs as a script: it must import this checkout's vitbook too
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(WORKER),
         str(tmp_path / "dino")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"dino.rank{r}.pt") for r in (0, 1))

    # after training steps on different shards, both ranks hold the same centers
    for name, center in rank0["trained"].items():
        assert center.abs().sum() > 0, name  # it moved
        assert torch.equal(center, rank1["trained"][name]), f"ranks differ: {name}"

    # each rank's half of fixed teacher outputs gives the center that one process
    # computes on all of them
    dino, esvit = DINO(toy_vit(), **SIZES), EsViT(toy_vit(), **SIZES)
    for center in (dino.center, esvit.center, esvit.region_center):
        center.fill_(0.5)
    dino.update_center(rank0["view"])
    esvit.update_centers(rank0["view"], rank0["regions"])
    single = {
        "dino": dino.center,
        "esvit": esvit.center,
        "esvit regions": esvit.region_center,
    }
    for name, center in single.items():
        assert torch.equal(rank0["given"][name], rank1["given"][name]), name
        torch.testing.assert_close(rank0["given"][name], center)
