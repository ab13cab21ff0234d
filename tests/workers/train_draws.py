"""What every random draw of a training step was, for the torchrun and resume tests
(run as a script, or imported for the in-process tests).

    python train_draws.py OUT [--steps N]

Trains a ``Probe`` (a MultiCrop, a dropout and MAE's random masking around one
parameter) three times: straight through; then with a checkpoint every 2 steps and a
loss that raises at step 3, as a crash would; then again with the same arguments, which
resumes from step 2. Writes each step's draws of the first and the last run to OUT
(under torchrun: OUT.rank<r>)."""

import argparse

import torch
from torch import nn

from vitbook import data, distributed, train
from vitbook.ssl import MultiCrop, random_masking


class Probe(nn.Module):
    """Draws what a self-supervised step draws and keeps it: ``draws[i]`` holds the
    i-th forward's first crop boxes, dropout mask and MAE mask."""

    def __init__(self):
        super().__init__()
        self.multicrop = MultiCrop(8, 4, num_local=1, seed=0)
        self.dropout = nn.Dropout(0.5)
        self.weight = nn.Parameter(torch.ones(()))
        self.draws = []

    def forward(self, images):
        views = self.multicrop(images)
        kept = self.dropout(torch.ones(len(images), 16))
        _, mae_mask, _ = random_masking(torch.zeros(len(images), 16, 1), 0.75)
        self.draws.append(
            {
                "boxes": self.multicrop.last_boxes[0].clone(),
                "dropout": kept != 0,
                "mae": mae_mask,
            }
        )
        return self.weight * views[0].mean() + kept.mean()


def toy_set(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return data.ImageTensors(
        images, torch.zeros(n, dtype=torch.long), ("x",), (0.5,), (0.3,)
    )


def train_probe(probe, steps, checkpoint=None, crash_at=None):
    """``fit`` the probe for ``steps``; ``crash_at``: the loss raises at that step."""
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError(f"crash at step {crash_at}")
        return train.self_supervised_loss(model, batch)

    return train.fit(
        probe,
        toy_set().loader(16, shuffle=True, seed=3),
        steps=steps,
        device="cpu",
        loss=loss,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=2 if checkpoint is not None else None,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    straight = Probe()
    train_probe(straight, args.steps)
    out = args.out + (f".rank{distributed.rank()}" if distributed.active() else "")
    checkpoint = args.out + ".ckpt"
    try:
        train_probe(Probe(), args.steps, checkpoint, crash_at=3)
    except RuntimeError as error:
        assert "crash at step 3" in str(error)
    resumed = Probe()
    train_probe(resumed, args.steps, checkpoint)
    torch.save({"straight": straight.draws, "resumed": resumed.draws}, out + ".pt")


if __name__ == "__main__":
    main()
