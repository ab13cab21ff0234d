"""Projection heads: DINO's (the logits a teacher and a student compare) and the
BatchNorm MLPs of BYOL and SimSiam, with what feeds them (:func:`embed`, one vector per
image) and the switch to ``SyncBatchNorm`` under ``torchrun``.

    head = DINOHead(64, out_dim=1024)
    projector, predictor = byol_mlp(64), byol_mlp(256)
    projector, predictor = simsiam_projector(64), simsiam_predictor()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import trunc_normal_init


class DINOHead(nn.Module):
    """DINO's projection head: an MLP (``nlayers`` Linear layers, GELU between) down to
    a ``bottleneck_dim`` vector that is L2-normalized, then a weight-normalized Linear
    without bias to ``out_dim`` logits. With ``norm_last_layer`` the weight norm's gain
    is fixed at 1, so every output unit is a unit vector: the logits are cosines.
    ``use_bn`` puts BatchNorm after the hidden layers (the official
    ``--use_bn_in_head``, off by default). Takes ``(b, d)`` or, for region tokens,
    ``(b, n, d)``.

    BatchNorm takes its statistics over everything one call is given, so what a call
    holds matters: DINO and EsViT call the head once on the features of every crop of
    the batch, global and local together (EsViT's region head once on every region of
    every crop), as the official ``MultiCropWrapper`` does.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers={nlayers} must be >= 1")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < nlayers - 1:
                layers += [nn.BatchNorm1d(b), nn.GELU()] if use_bn else [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(trunc_normal_init)  # N(0, 0.02), zero bias, as the official code
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        gain = self.last_layer.parametrizations.weight.original0  # (out_dim, 1)
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` -> ``(..., out_dim)``: one vector ``(b, d)`` per image, or
        one per region ``(b, n, d)``. The leading dimensions are flattened into one
        batch ``(b * n, d)`` for the MLP, so that BatchNorm takes its statistics over
        every image and region of the call."""
        lead = x.shape[:-1]
        x = self.mlp(x.reshape(-1, x.shape[-1]))  # (b * n, bottleneck_dim)
        x = F.normalize(x, dim=-1)  # unit length, each vector by itself
        return self.last_layer(x).reshape(*lead, -1)  # (..., out_dim)


def bn_mlp(dims, *, bias: bool = True, last_norm: bool = False) -> nn.Sequential:
    """The BatchNorm MLP of BYOL and SimSiam: ``Linear-BN-ReLU`` between consecutive
    ``dims``, a plain ``Linear`` at the end (followed by a BatchNorm without affine
    parameters when ``last_norm``, SimSiam's projector). ``bias=False`` drops the bias
    of every Linear that a BatchNorm follows (it would be cancelled by the mean
    subtraction). PyTorch's default initialization, as byol-pytorch and the SimSiam
    code.

    ``bn_mlp([in_dim, hidden, out])`` is BYOL's projector and predictor; its layer
    indices (``0`` Linear, ``1`` BN, ``2`` ReLU, ``3`` Linear) are byol-pytorch's
    ``MLP``, so weights load across by name.
    """
    dims = list(dims)
    if len(dims) < 2:
        raise ValueError(f"dims={dims} needs at least an input and an output size")
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):  # hidden layers
        layers += [nn.Linear(a, b, bias=bias), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=bias or not last_norm))
    if last_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


def byol_mlp(in_dim: int, out_dim: int = 256, hidden_dim: int = 4096) -> nn.Sequential:
    """BYOL's projector (``in_dim -> 4096 -> 256``) and predictor (``256 -> 4096 ->
    256``): Linear-BN-ReLU-Linear."""
    return bn_mlp([in_dim, hidden_dim, out_dim])


def simsiam_projector(
    in_dim: int, out_dim: int = 2048, hidden_dim: int = 2048
) -> nn.Sequential:
    """SimSiam's projector: three Linear layers, BatchNorm after each (the last one
    without affine parameters), ReLU after the first two."""
    return bn_mlp([in_dim, hidden_dim, hidden_dim, out_dim], bias=False, last_norm=True)


def simsiam_predictor(dim: int = 2048, hidden_dim: int = 512) -> nn.Sequential:
    """SimSiam's predictor, a bottleneck: ``dim -> 512 -> dim``, Linear-BN-ReLU-Linear
    (the first Linear without bias, as the official code)."""
    return bn_mlp([dim, hidden_dim, dim], bias=False)


def use_sync_batchnorm() -> bool:
    """True when BatchNorm should synchronize its statistics across ranks: a process
    group of more than one rank whose backend can run ``SyncBatchNorm`` (PyTorch's runs
    on accelerators only, so not under gloo, the CPU backend: there each rank
    normalizes over its own part of the batch)."""
    import torch.distributed as dist

    return (
        dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
        and dist.get_backend() != "gloo"
    )


def maybe_sync_batchnorm(module: nn.Module, enabled: bool | None = None) -> nn.Module:
    """``module`` with every BatchNorm turned into ``SyncBatchNorm`` when ``enabled``
    (``None``: :func:`use_sync_batchnorm`), else ``module`` unchanged. The parameters
    and running statistics are kept (the same tensors)."""
    if enabled is None:
        enabled = use_sync_batchnorm()
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if enabled else module


def embed(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One vector per image ``(b, d)``: a vitbook (or timm) backbone's
    ``forward_head(forward_features(x), pre_logits=True)``, or ``backbone(x)`` for any
    other network (a torchvision ResNet with ``fc = nn.Identity()``)."""
    if hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head"):
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    return backbone(x)


__all__ = [
    "DINOHead",
    "bn_mlp",
    "byol_mlp",
    "simsiam_projector",
    "simsiam_predictor",
    "use_sync_batchnorm",
    "maybe_sync_batchnorm",
    "embed",
]
