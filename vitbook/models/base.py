"""The interface every classifier of the book shares, timm's habits in one place.

A model subclasses :class:`Classifier`, sets ``self.num_features``, calls
``self.reset_classifier(num_classes, init=False)`` for its head and defines the three
methods the base class raises ``NotImplementedError`` for: ``forward_features(x)``,
``forward_head(features, pre_logits=False)`` and ``intermediate_layers(x)``. It gets,
without writing them again:

- ``forward(x) = forward_head(forward_features(x))``;
- ``reset_classifier(num_classes, global_pool=None)``: a new head in the model's dtype
  and on its device (``0`` gives ``nn.Identity``, features out), and another pooling
  where the model has more than one (``global_pools``);
- ``no_weight_decay()``: the names of the parameters AdamW must not decay: every 1-D
  parameter (LayerNorm gains and shifts, biases) plus the ones a model lists in
  ``no_weight_decay_keys`` (position embeddings, class tokens, relative position bias
  tables: the "embeddings" timm excludes);
- ``forward_intermediates(x, indices=None)``: the model's own intermediate outputs (ViT:
  tokens after each block; Swin and the other hierarchical models: the map after each
  stage), from the model's ``intermediate_layers()`` generator; ViT and the
  hierarchical models add timm's ``norm`` and ``output_fmt``;
- ``pretrained_cfg``: timm's description of the preprocessing pretrained weights expect
  (``mean``, ``std``, ``input_size``), carried over by ``vitbook.reference``'s
  converters (``None`` for a model trained here).

The hierarchical models (Swin, Twins-SVT, ScalableViT) subclass
:class:`PyramidClassifier`, which also writes their shared forward once: an ``embed``
step, the stages, a final LayerNorm and global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn

# check_mlp_ratio is re-exported: the models import it from here
from ..layers import check_mlp_ratio


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


def take_indices(n: int, indices=None) -> list[int]:
    """timm's ``indices`` of ``forward_intermediates`` for ``n`` layers, as the layers
    to take in layer order: ``None`` all of them, an int ``k`` the last ``k``, a list
    those layers (negative ones counting from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= n:
            raise ValueError(
                f"indices={indices} must be between 1 and {n} (the last n layers)"
            )
        return list(range(n - indices, n))
    chosen = [i % n if -n <= i < n else None for i in indices]
    if None in chosen:
        raise ValueError(
            f"indices {list(indices)} must lie in [-{n}, {n}) for {n} layers"
        )
    return sorted(set(chosen))


def not_defined(model: nn.Module, method: str, base: str) -> NotImplementedError:
    """The error of a model that lacks a method the contract of ``base`` asks for."""
    return NotImplementedError(
        f"{type(model).__name__} must define {method}: every {base} subclass does"
    )


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
    # timm's names of the poolings forward_head can do, and the one it does; a model
    # that names none keeps its one pooling
    global_pools: tuple[str, ...] = ()
    global_pool: str | None = None
    # timm's pretrained_cfg (mean, std, input_size, ...) of converted weights
    pretrained_cfg: dict | None = None

    # ----------------------------------------------------------------- the contract
    def forward_features(self, x: torch.Tensor):
        """Images -> the features ``forward_head`` reads (ViT: the normalized tokens;
        the hierarchical models and the CNN: the last map)."""
        raise not_defined(self, "forward_features(x)", "Classifier")

    def forward_head(self, features, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits ``(b, num_classes)``: pooling, then the head; with
        ``pre_logits=True`` the pooled features ``(b, num_features)``."""
        raise not_defined(self, "forward_head(features, pre_logits)", "Classifier")

    def intermediate_layers(self, x: torch.Tensor):
        """Yield the output of every layer (ViT: block; the others: stage), first to
        last: the generator behind ``forward_intermediates``."""
        raise not_defined(self, "intermediate_layers(x)", "Classifier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, num_classes)
        return self.forward_head(self.forward_features(x))

    # ----------------------------------------------------------------- head
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, *, init: bool = True
    ) -> None:
        """Replace the head by a fresh ``Linear(num_features, num_classes)`` in the
        model's dtype and on its device (timm's name and signature), drawn as timm
        draws it: weights N(0, 0.02) truncated at +-2, zero biases.

        ``num_classes=0`` removes it: ``forward`` then returns the pooled features.
        ``global_pool`` (one of ``global_pools``) changes the pooling too; ``None``
        keeps it. ``init=False`` keeps PyTorch's default init of the ``Linear``: what
        a constructor passes, since its ``reset_parameters`` draws every weight
        afterwards, in module order (one more draw here would change the weights of a
        seeded model).
        """
        check_num_classes(num_classes)
        if global_pool is not None:
            self.global_pool = self.check_global_pool(global_pool)
        self.num_classes = num_classes
        if num_classes > 0:
            like = next(p for p in self.parameters() if p.is_floating_point())
            self.head = nn.Linear(
                self.num_features, num_classes, device=like.device, dtype=like.dtype
            )
            if init:
                nn.init.zeros_(self.head.bias)
                nn.init.trunc_normal_(self.head.weight, std=0.02, a=-2.0, b=2.0)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    def check_global_pool(self, global_pool: str) -> str:
        """``global_pool`` if ``forward_head`` can pool that way, else a ValueError."""
        if global_pool not in self.global_pools:
            if not self.global_pools:
                raise ValueError(
                    f"global_pool={global_pool!r}: {type(self).__name__} has one "
                    "fixed pooling; pass global_pool=None"
                )
            raise ValueError(
                f"global_pool={global_pool!r} is not one of {self.global_pools} "
                f"({type(self).__name__}'s poolings)"
            )
        return global_pool

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
        self, x: torch.Tensor, indices=None, *, intermediates_only: bool = True
    ) -> list[torch.Tensor]:
        """The outputs of the layers ``indices``, each as ``intermediate_layers``
        yields it, in layer order (timm's ``indices``: all by default; an int ``n`` the
        last ``n``; a list those layers, negative ones counting from the end).

        Only ``intermediates_only=True`` here (timm's default is ``False``); the models
        that can give their final features from the same pass (ViT, the hierarchical
        ones) override this and also take timm's ``norm`` and ``output_fmt``."""
        if not intermediates_only:
            raise ValueError(
                f"intermediates_only=False: {type(self).__name__} gives only its "
                "intermediates; call forward_features(x) for the final features"
            )
        outputs = list(self.intermediate_layers(x))
        return [outputs[i] for i in take_indices(len(outputs), indices)]


class PyramidClassifier(Classifier):
    """A classifier made of stages that each map ``(b, h, w, d_i) -> (b, h_i, w_i,
    d_{i+1})``, the last one followed by a LayerNorm, pooled by the mean over the map:
    Swin, Twins-SVT and ScalableViT. A subclass sets ``self.stages``, ``self.norm``,
    ``self.head`` (Twins-SVT and ScalableViT through :meth:`build_stages`) and defines
    ``embed(images) -> (b, h, w, c)``, the map the first stage reads (Swin: its patch
    embedding; Twins and ScalableViT: the pixels themselves, since their stages
    embed)."""

    stages: nn.ModuleList
    norm: nn.Module

    global_pools = ("avg",)
    global_pool = "avg"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` -> the map the first stage reads ``(b, h, w, c)``."""
        raise not_defined(self, "embed(x)", "PyramidClassifier")

    def build_stages(
        self, stage: type[nn.Module], args, drop_path: float, per_stage=None, **block_kw
    ) -> None:
        """Twins-SVT's and ScalableViT's layers from their checked arguments ``args``
        (:func:`vitbook.models.twins.check_stages`), then their init.

        One ``stage`` (the model's ``Stage`` class) per entry of ``args.depths``: the
        first embeds ``args.patch_size`` patches of the image, every later one 2 x 2
        patches of the previous map. Stochastic depth grows linearly to ``drop_path``
        over all the blocks. ``per_stage`` holds the model's own per-stage block
        arguments (ScalableViT's ``c_ratio``: one value per stage); ``block_kw``
        reaches every block. Then the final LayerNorm over ``args.dims[-1]``, the
        head and the model's ``reset_parameters()``."""
        dims, depths = args.dims, args.depths
        per_stage = {**(per_stage or {}), "mlp_ratio": args.mlp_ratios}
        self.image_size, self.patch_size = args.image_size, args.patch_size
        self.channels, self.num_features = args.channels, dims[-1]
        rates = torch.linspace(0, drop_path, sum(depths)).split(list(depths))
        self.stages = nn.ModuleList(
            stage(
                dims[i - 1] if i else args.channels,
                dims[i],
                depths[i],
                args.heads[i],
                args.patch_size if i == 0 else 2,
                args.window_sizes[i],
                args.sr_ratios[i],
                rates[i].tolist(),
                index=i,
                **{name: values[i] for name, values in per_stage.items()},
                **block_kw,
            )
            for i in range(len(depths))
        )
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.reset_classifier(args.num_classes, init=False)
        self.reset_parameters()

    def intermediate_layers(self, x: torch.Tensor, norm: bool = True):
        """Yield every stage's map ``(b, d_i, h_i, w_i)``, first to last (a feature
        pyramid for dense tasks); the last one through the final LayerNorm unless
        ``norm=False`` (timm's ``norm=True`` and ``False``)."""
        x = self.embed(x)  # (b, h, w, c)
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (b, h_i, w_i, d_i)
            out = self.norm(x) if norm and i == len(self.stages) - 1 else x
            yield out.permute(0, 3, 1, 2)  # (b, d_i, h_i, w_i)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices=None,
        *,
        norm: bool = True,
        output_fmt: str = "NCHW",
        intermediates_only: bool = True,
    ):
        """timm's ``forward_intermediates``: the maps after the stages ``indices``
        (all by default; an int ``n`` the last ``n``; a list those stages), in stage
        order, ``(b, d_i, h_i, w_i)`` or with ``output_fmt='NHWC'`` ``(b, h_i, w_i,
        d_i)``. ``norm=True`` passes the last stage's map through the final LayerNorm,
        as timm does (the others have no norm of their own).
        ``intermediates_only=False`` returns ``(forward_features(x), intermediates)``
        from the one pass.

        Two defaults differ from timm's, so that a plain call keeps vitbook's meaning:
        ``norm=True`` and ``intermediates_only=True`` (timm: both ``False``)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt={output_fmt!r} is not one of 'NCHW', 'NHWC'")
        outputs = list(self.intermediate_layers(x, norm=norm))
        chosen = [outputs[i] for i in take_indices(len(outputs), indices)]
        if output_fmt == "NHWC":
            chosen = [m.permute(0, 2, 3, 1) for m in chosen]
        if intermediates_only:
            return chosen
        last = outputs[-1]
        if not norm:
            # (b, d, h, w): the LayerNorm acts on the channels, last in (b, h, w, d)
            last = self.norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return last, chosen

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


__all__ = [
    "Classifier",
    "PyramidClassifier",
    "check_num_classes",
    "check_positive",
    "check_mlp_ratio",
    "take_indices",
]
