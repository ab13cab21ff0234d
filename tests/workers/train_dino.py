"""Tiny DINO and EsViT runs for test_torchrun_dino.py (run as a script, not imported).

    python train_dino.py OUT

Trains a toy DINO and a toy EsViT for two steps each (under torchrun every rank on its
shard of each batch) and keeps their centers; then sets every center to 0.5 and calls
``update_center`` / ``update_centers`` on this rank's part of fixed teacher outputs
(drawn from seed 1, the same on every rank: rank r takes images r, r + world, ...).
Writes both sets of centers and the fixed outputs to OUT.pt (under torchrun:
OUT.rank<r>.pt)."""

import sys

import torch

from vitbook import ViT, data, distributed, train
from vitbook.ssl import DINO, EsViT, method_loss

SIZES = dict(
    total_steps=2,
    global_size=8,
    local_size=4,
    num_local=2,
    out_dim=16,
    hidden_dim=16,
    bottleneck_dim=8,
)


def toy_vit():
    return ViT(image_size=8, patch_size=4, num_classes=0, dim=16, depth=1, heads=2,
               channels=1, dynamic_img_size=True)  # fmt: skip


def toy_set(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return data.ImageTensors(
        images, torch.zeros(n, dtype=torch.long), ("x",), (0.5,), (0.3,)
    )


def fixed_teacher_outputs():
    """A view output (2 views, 8 images, K=16) and a region output (2 views, 8
    images, 4 regions, K)."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 8, 16, generator=g), torch.randn(2, 8, 4, 16, generator=g)


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dino, esvit = DINO(toy_vit(), **SIZES), EsViT(toy_vit(), **SIZES)
    for method in (dino, esvit):
        train.fit(method, toy_set().loader(16, shuffle=True, seed=3), steps=2,
                  lr=1e-2, device="cpu", loss=method_loss, progress=False)  # fmt: skip
    trained = {
        "dino": dino.center.clone(),
        "esvit": esvit.center.clone(),
        "esvit regions": esvit.region_center.clone(),
    }

    view, regions = fixed_teacher_outputs()
    mine = slice(distributed.rank(), None, distributed.world_size())  # (2, 4, ...)
    for center in (dino.center, esvit.center, esvit.region_center):
        center.fill_(0.5)
    dino.update_center(view[:, mine])
    esvit.update_centers(view[:, mine], regions[:, mine])
    given = {
        "dino": dino.center,
        "esvit": esvit.center,
        "esvit regions": esvit.region_center,
    }

    suffix = f".rank{distributed.rank()}" if distributed.active() else ""
    torch.save(
        {"trained": trained, "given": given, "view": view, "regions": regions},
        out + suffix + ".pt",
    )


if __name__ == "__main__":
    main()
