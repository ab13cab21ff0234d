"""A tiny training run for the resume and torchrun tests (run as a script, not imported).

    python train_toy.py OUT [--checkpoint PATH] [--every N] [--kill-at STEP]

Trains a toy ViT with an EMA teacher on a synthetic, learnable problem and writes the
final weights and history to OUT (under torchrun: OUT.rank<r>). --kill-at sends SIGKILL to
this very process in the middle of that step, as a crash or a lost runtime would."""

import argparse
import copy
import json
import os
import signal

import torch
from torch import nn

from vitbook import ViT, data, distributed, train


class WithTeacher(nn.Module):
    """A classifier and its EMA copy: fit steps the teacher after every optimizer step."""

    def __init__(self, dropout: float):
        super().__init__()
        self.student = ViT(image_size=8, patch_size=4, num_classes=2, dim=16, depth=1,
                           heads=2, channels=1, dropout=dropout)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)

    def forward(self, x):
        return self.student(x)

    @torch.no_grad()
    def step_teacher(self, momentum=0.9):
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s, alpha=1 - momentum)


def toy_set(n=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = (images[:, 0, :4].float().mean((1, 2)) > 127.5).long()
    return data.ImageTensors(images, labels, ("dark", "bright"), (0.5,), (0.3,))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--checkpoint")
    parser.add_argument("--every", type=int)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--steps", type=int, default=30)
    # random draws differ between one process and two (each rank draws its own dropout
    # masks), so the torchrun comparison trains without dropout
    parser.add_argument("--dropout", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = WithTeacher(args.dropout)
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if args.kill_at is not None and calls["n"] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return train.classification_loss(model, batch)

    history = train.fit(
        model, toy_set().loader(16, shuffle=True, seed=3), steps=args.steps, lr=3e-3,
        eval_loader=toy_set(64, seed=1).loader(32), device="cpu", loss=loss,
        checkpoint=args.checkpoint, checkpoint_every=args.every, progress=False,
    )
    out = args.out + (f".rank{distributed.rank()}" if distributed.active() else "")
    torch.save(model.state_dict(), out + ".pt")
    with open(out + ".json", "w") as f:
        # everything but the clock: each evaluation's training seconds differ by run
        evals = [{k: v for k, v in r.items() if k != "seconds"} for r in history.evals]
        json.dump({"steps": history.steps, "evals": evals}, f)


if __name__ == "__main__":
    main()
