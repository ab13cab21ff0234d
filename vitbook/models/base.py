"""The interface every classifier of the book shares, timm's habits in one place.

A model subclasses :class:`Classifier`, builds ``self.head`` from ``self.num_features``
and implements ``forward_features`` and ``forward_head``; it gets, without writing them
again:

- ``reset_classifier(num_classes)``: a new head (``0`` gives ``nn.Identity``, features
out);
- ``no_weight_decay()``: the names of the parameters AdamW must not decay: every 1-D
  parameter (LayerNorm gains and shifts, biases) plus the ones a model lists in
  ``no_weight_decay_keys`` (position embeddings, class tokens, relative position bias
  tables: the "embeddings" timm excludes);
- ``forward_intermediates(x, indices=None)``: the model's own intermediate outputs (ViT:
  tokens after each block; Swin and the other hierarchical models: the map after each
  stage), from the model's ``intermediate_layers()`` generator.

The hierarchical models (Swin, Twins-SVT, ScalableViT) subclass
:class:`PyramidClassifier`, which also writes their shared forward once: an ``embed``
step, the stages, a final LayerNorm and global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn


def check_num_classes(num_classes) -> int:
    """``num_classes`` as an int; 0 is allowed (no head: the model returns its
    features)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes={num_classes} must be >= 0 (0 means no head)")
    return num_classes


def check_positive(**values) -> None:
    """Raise a ValueError naming the first argument that is not >= 1."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name}={value} must be >= 1")


def check_mlp_ratio(mlp_ratio: float) -> float:
    if not mlp_ratio > 0:
        raise ValueError(
            f"mlp_ratio={mlp_ratio} must be > 0 (hidden width = mlp_ratio * dim)"
        )
    return float(mlp_ratio)


class Classifier(nn.Module):
    """Base class of vitbook's classifiers: timm's interface, written once."""

    num_features: int
    num_classes: int
    head: nn.Module
    # names (or name prefixes' last parts) of parameters that must not decay, beyond 1-D
    # ones
    no_weight_decay_keys: tuple[str, ...] = ()
    # names of submodules none of whose parameters decay (Twins' and ScalableViT's PEG,
    # the position encoding, as in their official code)
    no_weight_decay_modules: tuple[str, ...] = ()

    # a subclass defines forward_features(x), forward_head(features, pre_logits=False)
    # and intermediate_layers(x), the generator behind forward_intermediates.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (b, num_classes)

    # ----------------------------------------------------------------- head
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a fresh ``Linear(num_features, num_classes)`` (timm's
        name).

        ``num_classes=0`` removes it: ``forward`` then returns the pooled features.
        """
        self.num_classes = check_num_classes(num_classes)
        device = next(self.parameters()).device
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=device)
            nn.init.zeros_(self.head.bias)
            nn.init.trunc_normal_(self.head.weight, std=0.02, a=-2.0, b=2.0)
        else:
            self.head = nn.Identity()

    # ----------------------------------------------------------------- weight decay
    def no_weight_decay(self) -> set[str]:
        """Parameter names that AdamW must not decay (``train.fit`` builds its groups
        from this).

        Every 1-D parameter (norm gains, biases), every parameter whose name's last
        part is in ``no_weight_decay_keys`` (position embeddings, class tokens, bias
        tables) and every parameter of a submodule named in
        ``no_weight_decay_modules``.
        """
        keys, modules = (
            set(self.no_weight_decay_keys),
            set(self.no_weight_decay_modules),
        )
        return {
            name
            for name, p in self.named_parameters()
            if p.ndim <= 1
            or name.rsplit(".", 1)[-1] in keys
            or modules.intersection(name.split(".")[:-1])
        }

    # ----------------------------------------------------------------- intermediates
    def forward_intermediates(
        self, x: torch.Tensor, indices=None
    ) -> list[torch.Tensor]:
        """The outputs of the layers ``indices`` (all of them by default; negative
        counts from the end; an int ``n`` means the last ``n``), each as
        ``intermediate_layers`` yields it."""
        outputs = list(self.intermediate_layers(x))
        n = len(outputs)
        if indices is None:
            chosen = list(range(n))
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(
                    f"indices={indices} must be between 1 and {n} (the last n layers)"
                )
            chosen = list(range(n - indices, n))
        else:
            chosen = [i % n if -n <= i < n else None for i in indices]
            if None in chosen:
                raise ValueError(
                    f"indices {list(indices)} must lie in [-{n}, {n}) for {n} layers"
                )
        return [outputs[i] for i in chosen]


__all__ = ["Classifier", "check_num_classes", "check_positive", "check_mlp_ratio"]


class PyramidClassifier(Classifier):
    """A classifier made of stages that each map ``(b, h, w, d_i) -> (b, h_i, w_i,
    d_{i+1})``, the last one followed by a LayerNorm, pooled by the mean over the map:
    Swin, Twins-SVT and ScalableViT. A subclass sets ``self.stages``, ``self.norm``,
    ``self.head`` and defines ``embed(images) -> (b, h, w, c)``, the map the first
    stage reads (Swin: its patch embedding; Twins and ScalableViT: the pixels
    themselves, since their stages embed)."""

    stages: nn.ModuleList
    norm: nn.Module

    def intermediate_layers(self, x: torch.Tensor):
        """Yield every stage's map ``(b, d_i, h_i, w_i)``, first to last (a feature
        pyramid for dense tasks); the last one through the final LayerNorm, as timm's
        ``norm=True``."""
        x = self.embed(x)  # (b, h, w, c)
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (b, h_i, w_i, d_i)
            out = self.norm(x) if i == len(self.stages) - 1 else x
            yield out.permute(0, 3, 1, 2)  # (b, d_i, h_i, w_i)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> the last stage's normalized map ``(b, d, h,
        w)``."""
        *_, last = self.intermediate_layers(x)
        return last

    def forward_head(
        self, features: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        x = features.mean(dim=(2, 3))  # (b, d): global average pooling
        return x if pre_logits else self.head(x)
