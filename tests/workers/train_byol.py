"""A tiny BYOL run for the torchrun test (run as a script, not imported).

    python train_byol.py OUT [--steps N]

Pretrains a toy ViT with BYOL on random images and writes every parameter (online,
predictor, EMA target) and the kind of BatchNorm the heads ended with to OUT (under
torchrun: OUT.rank<r>)."""

import argparse

import torch

from vitbook import ViT, data, distributed, train
from vitbook.ssl import BYOL, method_loss


def toy_set(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return data.ImageTensors(
        images, torch.zeros(n, dtype=torch.long), ("x",), (0.5,), (0.3,)
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = ViT(
        image_size=8, patch_size=4, num_classes=0, dim=16, depth=1, heads=2, channels=1
    )
    byol = BYOL(
        backbone,
        total_steps=args.steps,
        image_size=8,
        projection_dim=8,
        hidden_dim=16,
        predictor_hidden_dim=16,
        momentum=0.9,
    )
    history = train.fit(
        byol,
        toy_set().loader(16, shuffle=True, seed=3),
        steps=args.steps,
        lr=3e-3,
        device="cpu",
        loss=method_loss,
        progress=False,
    )
    out = args.out + (f".rank{distributed.rank()}" if distributed.active() else "")
    norms = sorted(
        {
            type(m).__name__
            for m in byol.modules()
            if "Norm" in type(m).__name__ and "Layer" not in type(m).__name__
        }
    )
    torch.save(
        {
            "params": dict(byol.named_parameters()),
            "norms": norms,
            "logged": sorted(history.steps[-1]),
        },
        out + ".pt",
    )


if __name__ == "__main__":
    main()
