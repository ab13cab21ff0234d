"""Judging frozen representations: k-NN and a linear probe on a backbone's features.

    report = representation_report(method.backbone, fresh_backbone, train_set, test_set)
    print(report)

Every self-supervised chapter ends on this table and the comparison chapter puts them
side by side (:func:`load_reports`). Evaluation stays apart from training, as in
DINOv2's code: nothing here trains the backbone, which is only read in eval mode.
``vitbook.train`` re-exports these names.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module, loader, device=None, pool: Callable | None = None
):
    """Frozen features ``(n, d)`` and labels ``(n,)``. ``pool`` turns
    ``forward_features`` output into one vector per image; by default the model's own
    ``forward_head(..., pre_logits=True)``."""
    device = (
        next(backbone.parameters()).device if device is None else torch.device(device)
    )
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in loader:
        tokens = backbone.forward_features(images.to(device))
        f = (
            pool(tokens)
            if pool is not None
            else backbone.forward_head(tokens, pre_logits=True)
        )
        feats.append(f.float().cpu())
        labels.append(y.cpu())
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Weighted k-NN on cosine similarity, as DINO evaluates frozen features (Wu et al.
    2018)."""
    if k < 1 or k > len(train_features):
        raise ValueError(
            f"k={k} must be between 1 and the number of training features "
            f"{len(train_features)}"
        )
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    train_f = F.normalize(train_features.float(), dim=1)
    test_f = F.normalize(test_features.float(), dim=1)
    correct = 0
    for i in range(0, len(test_f), 1024):
        # (q, k): the k most similar training features of each of q test features
        sim, idx = (test_f[i : i + 1024] @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(
            1, train_labels[idx], (sim / temperature).exp()
        )
        correct += (votes.argmax(1) == test_labels[i : i + 1024]).sum().item()
    return correct / len(test_f)


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Accuracy of a linear classifier trained on frozen features (full-batch AdamW,
    standardized inputs)."""
    torch.manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(xtr), train_labels).backward()
        opt.step()
    with torch.no_grad():
        return (head(xte).argmax(1) == test_labels).float().mean().item()


def features_accuracy(
    train_f, train_y, test_f, test_y, k: int = 20, probe_epochs: int = 100, seed=0
) -> dict:
    """``{"knn", "linear"}``: weighted k-NN and linear-probe test accuracy of
    features already extracted."""
    return {
        "knn": knn_accuracy(train_f, train_y, test_f, test_y, k=k),
        "linear": linear_probe(
            train_f, train_y, test_f, test_y, epochs=probe_epochs, seed=seed
        ),
    }


def frozen_accuracy(
    model: nn.Module,
    train_loader,
    test_loader,
    k: int = 20,
    probe_epochs: int = 100,
    pool: Callable | None = None,
    device=None,
    seed: int = 0,
) -> dict:
    """``{"knn", "linear"}``: how well ``model``'s frozen features of
    ``train_loader`` classify those of ``test_loader`` (one row of the table)."""
    model = model.to(device) if device is not None else model
    train_f, train_y = extract_features(model, train_loader, pool=pool)
    test_f, test_y = extract_features(model, test_loader, pool=pool)
    return features_accuracy(
        train_f, train_y, test_f, test_y, k=k, probe_epochs=probe_epochs, seed=seed
    )


@dataclass
class RepresentationReport:
    """k-NN and linear-probe test accuracy of several frozen feature extractors.

    ``rows`` maps a row's name to ``{"knn": acc, "linear": acc, "note": str}``; printing
    the report gives the table every self-supervised chapter shows.
    """

    rows: dict[str, dict]
    k: int
    n_train: int
    n_test: int
    # what the pretrained row's method spent (vitbook.baselines.pretraining_budget)
    budget: dict | None = None

    def margin(
        self, row: str = "pretrained", over: str = "random init"
    ) -> dict[str, float]:
        """Accuracy points of ``row`` above ``over``, per protocol: ``{"knn": ..,
        "linear": ..}``."""
        for name in (row, over):
            if name not in self.rows:
                raise KeyError(f"no row {name!r}; the rows are {list(self.rows)}")
        return {
            p: 100 * (self.rows[row][p] - self.rows[over][p]) for p in ("knn", "linear")
        }

    def __str__(self) -> str:
        lines = [
            f"{'features':<24}{f'k-NN (k={self.k})':>14}{'linear probe':>14}  note",
            "-" * 64,
        ]
        for name, r in self.rows.items():
            lines.append(
                f"{name:<24}{100 * r['knn']:>13.2f}%{100 * r['linear']:>13.2f}%"
                f"  {r.get('note', '')}"
            )
        lines.append(
            f"(Fashion-MNIST test set, {self.n_test} images; "
            f"features of {self.n_train} training images)"
        )
        if self.budget:
            b = self.budget
            lines.append(
                f"(pretraining: {b['steps']:,} steps, {b['views']} view"
                f"{'' if b['views'] == 1 else 's'} per image, "
                f"{b['images_seen']:,} images seen, {b['seconds']:.0f} s)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def save(self, method: str, directory=None) -> None:
        """Write this table to ``<results dir>/<method>.json`` (see
        :func:`results_dir`), with the time and scale it was measured at, so the
        comparison chapter can put every method's table side by side."""
        # imported here: vitbook.train imports this module to re-export its names
        from .runtime import scale

        path = results_dir(directory) / f"{method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "method": method,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "scale": scale(),
            **asdict(self),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)  # atomic: a reader never sees half a file


def results_dir(directory=None) -> Path:
    """Where chapters leave their measured tables: ``directory``, else
    ``$VITBOOK_RESULTS``, else ``~/.cache/vitbook/results``."""
    if directory is not None:
        return Path(directory)
    default = Path.home() / ".cache" / "vitbook" / "results"
    return Path(os.environ.get("VITBOOK_RESULTS", default))


def load_reports(directory=None) -> dict[str, dict]:
    """Every table :meth:`RepresentationReport.save` left in :func:`results_dir`:
    ``{method: {"report": RepresentationReport, "measured": ..., "scale": ...}}``."""
    found = {}
    for path in sorted(results_dir(directory).glob("*.json")):
        record = json.loads(path.read_text())
        fields = {k: record[k] for k in ("rows", "k", "n_train", "n_test")}
        fields["budget"] = record.get("budget")
        found[record["method"]] = {
            "report": RepresentationReport(**fields),
            "measured": record["measured"],
            "scale": record["scale"],
        }
    return found


def representation_report(
    pretrained: nn.Module,
    random_init: nn.Module,
    train_set,
    test_set,
    *,
    supervised: nn.Module | dict | None = None,
    teacher: nn.Module | None = None,
    pixels: bool = True,
    n_train: int | None = None,
    k: int = 20,
    batch_size: int = 512,
    probe_epochs: int = 100,
    pool: Callable | None = None,
    budget: dict | None = None,
    device=None,
    seed: int = 0,
) -> RepresentationReport:
    """The one table every self-supervised chapter prints (and the comparison chapter
    reuses).

    Rows: the ``pretrained`` backbone, the ``teacher`` backbone when given (a
    self-distillation method's EMA teacher, ``method.teacher_backbone``: the official
    DINO evaluates the teacher), the same architecture at ``random_init``, raw pixels,
    and the ``supervised`` model (a trained backbone, or a dict ``{"knn", "linear",
    "note"}`` cited from where it was measured). Each row is judged twice on
    the frozen features: weighted k-NN (cosine, as DINO) and a linear probe, both on the
    ``test_set``. ``n_train`` subsamples the training split (seeded) to fit a notebook's
    budget. ``budget``: what the pretrained row's method spent
    (:func:`vitbook.baselines.pretraining_budget`), printed under the table and saved
    with it. The chapters share their baselines: :mod:`vitbook.baselines`.
    """
    train_part = train_set.subset(n_train, seed=seed)
    loaders = (train_part.loader(batch_size), test_set.loader(batch_size))

    def judge(train_f, train_y, test_f, test_y, note):
        accuracy = features_accuracy(
            train_f, train_y, test_f, test_y, k=k, probe_epochs=probe_epochs, seed=seed
        )
        return {**accuracy, "note": note}

    def of_model(model, note):
        accuracy = frozen_accuracy(
            model,
            *loaders,
            k=k,
            probe_epochs=probe_epochs,
            pool=pool,
            device=device,
            seed=seed,
        )
        return {**accuracy, "note": note}

    rows = {
        "pretrained": of_model(pretrained, f"{type(pretrained).__name__} backbone"),
    }
    if teacher is not None:
        rows["pretrained (teacher)"] = of_model(teacher, "the EMA teacher's backbone")
    rows["random init"] = of_model(random_init, "same architecture, untrained")
    if pixels:
        flat = [
            (s.normalize(s.images).flatten(1), s.labels) for s in (train_part, test_set)
        ]
        rows["raw pixels"] = judge(*flat[0], *flat[1], "normalized, flattened")
    if isinstance(supervised, dict):
        missing = {"knn", "linear"} - set(supervised)
        if missing:
            raise ValueError(
                f"supervised={supervised!r} needs the keys {sorted(missing)}"
            )
        rows["supervised"] = {"note": "cited", **supervised}
    elif supervised is not None:
        rows["supervised"] = of_model(supervised, "trained with labels")
    return RepresentationReport(rows, k, len(train_part), len(test_set), budget)


__all__ = [
    "extract_features",
    "knn_accuracy",
    "linear_probe",
    "RepresentationReport",
    "results_dir",
    "load_reports",
    "representation_report",
]
