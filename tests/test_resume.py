"""Interrupted runs lose nothing: a training process killed with SIGKILL and started again
with the same arguments ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "workers" / "train_toy.py"
# the workers import this checkout's vitbook, not whichever one is installed
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def train_toy(out, *args, expect_kill=False):
    result = subprocess.run([sys.executable, str(WORKER), str(out), *map(str, args)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    if expect_kill:
        assert result.returncode == -signal.SIGKILL, result.stderr
    else:
        assert result.returncode == 0, result.stderr
    return result


def outcome(out):
    weights = torch.load(f"{out}.pt")
    history = json.loads(Path(f"{out}.json").read_text())
    return weights, history


def assert_same_run(a, b):
    (wa, ha), (wb, hb) = a, b
    assert wa.keys() == wb.keys()
    for key in wa:  # bit for bit, teacher included
        assert torch.equal(wa[key], wb[key]), key
    assert ha == hb  # every step's loss, accuracy and learning rate, every evaluation


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    train_toy(out)
    return outcome(out)


def test_a_killed_run_resumes_to_the_same_weights_and_history(tmp_path, uninterrupted):
    ckpt = tmp_path / "toy.ckpt"
    train_toy(tmp_path / "a", "--checkpoint", ckpt, "--every", 5, "--kill-at", 13,
              expect_kill=True)
    assert ckpt.exists() and not (tmp_path / "a.pt").exists()  # died mid-run
    assert torch.load(ckpt)["extra"]["at"]["step"] == 10
    train_toy(tmp_path / "a", "--checkpoint", ckpt, "--every", 5)
    assert_same_run(outcome(tmp_path / "a"), uninterrupted)


def test_a_truncated_checkpoint_is_refused_and_the_previous_one_used(tmp_path,
                                                                      uninterrupted):
    ckpt = tmp_path / "toy.ckpt"
    train_toy(tmp_path / "b", "--checkpoint", ckpt, "--every", 5, "--kill-at", 13,
              expect_kill=True)
    prev = ckpt.with_name(ckpt.name + ".prev")
    assert torch.load(prev)["extra"]["at"]["step"] == 5
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a torn write
    result = train_toy(tmp_path / "b", "--checkpoint", ckpt, "--every", 5)
    assert "not a readable checkpoint (corrupt or truncated?)" in result.stderr
    assert "resuming from" in result.stderr and ".prev" in result.stderr
    assert_same_run(outcome(tmp_path / "b"), uninterrupted)


def test_a_finished_run_called_again_returns_its_history_without_training(tmp_path):
    from vitbook import train
    from workers.train_toy import WithTeacher, toy_set

    ckpt = tmp_path / "done.ckpt"
    kwargs = dict(steps=4, device="cpu", progress=False, checkpoint=ckpt,
                  checkpoint_every=2)
    first = train.fit(WithTeacher(0.0), toy_set().loader(16), **kwargs)
    model = WithTeacher(0.0)
    again = train.fit(model, toy_set().loader(16), **kwargs)
    assert again.steps == first.steps
    saved = torch.load(ckpt)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_resuming_with_other_arguments_is_refused_by_name(tmp_path):
    from vitbook import train
    from workers.train_toy import WithTeacher, toy_set

    ckpt = tmp_path / "run.ckpt"
    train.fit(WithTeacher(0.0), toy_set().loader(16), steps=2, lr=1e-3, device="cpu",
              progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"lr=0.001 then, 0.002 now"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), steps=2, lr=2e-3,
                  device="cpu", progress=False, checkpoint=ckpt)


def test_checkpoint_arguments_are_checked():
    from vitbook import train
    from workers.train_toy import WithTeacher, toy_set

    with pytest.raises(ValueError, match="checkpoint_every=5 needs checkpoint=path"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), steps=2, checkpoint_every=5)
    with pytest.raises(ValueError, match="cannot resume a seconds= budget"):
        train.fit(WithTeacher(0.0), toy_set().loader(16), seconds=2, checkpoint="x.pt")
