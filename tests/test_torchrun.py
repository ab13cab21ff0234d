"""`fit` under torchrun: two CPU processes (gloo, on the loopback interface) end with
identical weights, and with the weights of one process that sees the same global batch;
each draws its own crops, dropout and masks, and resumes them from its own state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).parent / "workers" / "train_toy.py"
DRAWS = Path(__file__).parent / "workers" / "train_draws.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
ROOT = Path(__file__).resolve().parents[1]
# the workers import the vitbook of this checkout (a script's own folder, not the
# working directory, heads sys.path; the installed vitbook may be another checkout's)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                   os.environ.get("PYTHONPATH")]))}


def test_two_ranks_match_each_other_and_a_single_process(tmp_path):
    env = ENV
    common = ["--steps", "12", "--dropout", "0"]  # ranks draw their own dropout masks
    ddp = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(WORKER),
         str(tmp_path / "ddp"), *common],
        capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one"), *common],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr

    rank0, rank1 = (torch.load(tmp_path / f"ddp.rank{r}.pt") for r in (0, 1))
    one = torch.load(tmp_path / "one.pt")
    for key in rank0:  # student and EMA teacher alike
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
        torch.testing.assert_close(rank0[key], one[key], atol=1e-4, rtol=1e-4)
    h0, h1, h = (json.loads((tmp_path / n).read_text())
                 for n in ("ddp.rank0.json", "ddp.rank1.json", "one.json"))
    assert h0 == h1  # losses averaged over the ranks: one history
    assert len(h0["steps"]) == len(h["steps"]) == 12
    for a, b in zip(h0["steps"], h["steps"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["lr"] == b["lr"]


def test_each_rank_draws_its_own_crops_dropout_and_masks_and_resumes_them(tmp_path):
    ddp = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(DRAWS),
         str(tmp_path / "draws"), "--steps", "4"],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"draws.rank{r}.pt") for r in (0, 1))
    assert len(rank0["straight"]) == len(rank1["straight"]) == 4
    for step, (a, b) in enumerate(zip(rank0["straight"], rank1["straight"]), start=1):
        for kind in ("boxes", "dropout", "mae"):  # same shapes, other draws
            assert a[kind].shape == b[kind].shape
            assert not torch.equal(a[kind], b[kind]), f"same {kind} at step {step}"
    for rank, run in enumerate((rank0, rank1)):  # each rank's draws go on from its own
        assert len(run["resumed"]) == 2  # steps 3 and 4, after the checkpoint at 2
        for a, b in zip(run["straight"][2:], run["resumed"]):
            for kind in ("boxes", "dropout", "mae"):
                assert torch.equal(a[kind], b[kind]), f"rank {rank}: {kind}"
