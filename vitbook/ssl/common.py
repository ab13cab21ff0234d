"""Pieces every self-distillation method shares: the EMA teacher, multi-crop views,
projection heads, and the collapse diagnostics.

    teacher = EMATeacher(student, base=0.996, final=1.0, total_steps=1000)
    views = MultiCrop(global_size=28, local_size=14, num_local=6, seed=0)(images)
    head = DINOHead(64, out_dim=1024)
    projector, predictor = byol_mlp(64), byol_mlp(256)  # BYOL; SimSiam's below

A method built from them returns its loss from ``forward`` and has ``step_teacher()``,
which ``vitbook.train.fit`` calls after every optimizer step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align
from torchvision.transforms import v2

from .. import distributed
from ..layers import pair, trunc_normal_init
from ..schedules import cosine_schedule, linear_warmup  # re-exported: methods use them
from ..train import method_loss  # noqa: F401 (re-exported: one function with fit's)


# --------------------------------------------------------------------------- EMA
@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameter by
    parameter; buffers (BatchNorm statistics) are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum={momentum} must be in [0, 1]")
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


class EMATeacher(nn.Module):
    """A copy of ``student`` that follows it as an exponential moving average and never
    receives gradients (its parameters have ``requires_grad=False``, so ``fit``'s
    optimizer does not see them).

    The momentum follows :func:`cosine_schedule` from ``base`` to ``final`` over
    ``total_steps`` updates (DINO, BYOL: 0.996 -> 1); ``final=base`` keeps it constant
    (the seed: 0.9). The step count is a buffer, so it travels with a checkpoint.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        base: float = 0.996,
        final: float = 1.0,
        total_steps: int = 1000,
    ):
        super().__init__()
        for name, value in (("base", base), ("final", final)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} momentum {value} must be in [0, 1]")
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be >= 1")
        self.base, self.final, self.total_steps = base, final, total_steps
        self.module = copy.deepcopy(student).requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` uses."""
        return cosine_schedule(self.base, self.final, int(self.step), self.total_steps)

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """One EMA step toward ``student``; returns the momentum used."""
        m = self.momentum
        ema_update_(self.module, student, m)
        self.step += 1
        return m

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)


# --------------------------------------------------------------------------- multi-crop
class SelfDistillation(nn.Module):
    """What DINO and EsViT share around their EMA teacher: ``backbone`` (the
    student's) and ``teacher_backbone`` (the EMA teacher's), for evaluation;
    ``step_teacher()`` (``fit`` calls it after each optimizer step);
    ``after_backward()`` (``fit`` calls it between the backward pass and the optimizer
    step), which keeps the heads' last layer frozen for the first
    ``freeze_last_layer_steps`` steps; the teacher temperature, warmed up linearly
    from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_steps``; and the EMA of a center over every rank's batch. A
    subclass sets ``student`` (with a ``backbone``), ``teacher`` (an
    :class:`EMATeacher` of it), the three temperature attributes,
    ``freeze_last_layer_steps`` and ``center_momentum``.

    Every step count is the teacher's (``teacher.step``, one per optimizer step), a
    buffer: a checkpoint carries it, so a resumed run keeps its temperature and its
    frozen layer where they were."""

    student: nn.Module
    teacher: EMATeacher
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_teacher_temp_steps: int
    freeze_last_layer_steps: int
    center_momentum: float

    @property
    def backbone(self) -> nn.Module:
        return self.student.backbone

    @property
    def teacher_backbone(self) -> nn.Module:
        """The EMA teacher's backbone: the official k-NN evaluation reads the teacher
        (``eval_knn.py --checkpoint_key teacher``)."""
        return self.teacher.module.backbone

    @property
    def current_teacher_temp(self) -> float:
        return linear_warmup(
            self.warmup_teacher_temp,
            self.teacher_temp,
            int(self.teacher.step),
            self.warmup_teacher_temp_steps,
        )

    def step_teacher(self) -> None:
        self.teacher.update(self.student)

    def after_backward(self) -> None:
        """Drop the gradients of the heads' last layer (every student parameter with
        ``last_layer`` in its name) while fewer than ``freeze_last_layer_steps``
        optimizer steps have been taken: the optimizer then leaves that layer as it
        is, weight decay included. The official ``cancel_gradients_last_layer`` does
        this during the first epoch, when a moving output layer makes training
        unstable."""
        if int(self.teacher.step) >= self.freeze_last_layer_steps:
            return
        for name, p in self.student.named_parameters():
            if "last_layer" in name:
                p.grad = None

    @torch.no_grad()
    def ema_center_(self, center: torch.Tensor, outputs: torch.Tensor) -> None:
        """``center <- m * center + (1 - m) * mean``, the mean of ``outputs`` ``(...,
        K)`` over every leading dimension and over every rank's batch (the official
        ``update_center``: a sum all-reduced, divided by the rows on all ranks), so
        that the center is the same on every rank."""
        rows = outputs.float().flatten(0, -2)  # (n, K)
        total = distributed.sum_over_ranks(rows.sum(dim=0, keepdim=True))  # (1, K)
        batch_center = total / (len(rows) * distributed.world_size())
        m = self.center_momentum
        center.mul_(m).add_(batch_center, alpha=1 - m)


def apply_to(chosen: torch.Tensor, fn: Callable, images: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to the images that ``chosen`` (``(b,)`` bool, best on the CPU: no
    device sync) selects, the others unchanged. ``fn`` gets the chosen images in batch
    order and must keep their shape; it sees only those, so an augmentation drawn for
    10% of a batch costs 10% of it (computing all and picking with ``torch.where``
    costs all of it)."""
    if chosen.shape != (len(images),) or chosen.dtype != torch.bool:
        raise ValueError(
            f"chosen has shape {tuple(chosen.shape)} and dtype {chosen.dtype}: it must "
            f"be ({len(images)},) bool, one entry per image"
        )
    index = chosen.nonzero().squeeze(1)
    if len(index) == len(chosen):
        return fn(images)
    if len(index) == 0:
        return images
    index = index.to(images.device)
    return images.index_copy(0, index, fn(images[index]))


def contrast_brightness(
    images: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor
) -> torch.Tensor:
    """Contrast and brightness jitter of ``images`` ``(b, c, h, w)`` around each image's
    own mean and std: ``(x - mean) * contrast + mean + brightness * std``, with
    ``contrast`` and ``brightness`` of shape ``(b,)``. Works for any affine
    normalization of the pixels."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True) + 1e-6
    contrast, brightness = (
        t.to(images)[:, None, None, None] for t in (contrast, brightness)
    )
    return (images - mean) * contrast + mean + brightness * std


class MultiCrop(nn.Module):
    """2 global and ``num_local`` local views of every image in a batch (DINO, SwAV).

    Each view of each image gets its own random crop (area fraction in ``global_scale``
    or ``local_scale``, aspect ratio in ``ratio``), flip, contrast and brightness jitter
    and Gaussian blur (``sigma`` in pixels of the view; the paper's 0.1-2 px at 224 px
    would be invisible at 28). ``torchvision.transforms.v2`` draws one set of
    parameters per call, which on a batched tensor means one crop for the whole batch;
    so the per-image crop boxes are drawn here and cut out with one ``roi_align``
    (bilinear, any device), and each flip, jitter and blur (``v2.functional``
    operations) is computed for the images drawn for it only (:func:`apply_to`).

    Input: ``(b, c, h, w)`` uint8 (scaled to [0, 1]) or float (any affine
    normalization: the jitter moves each image around its own mean and std). Output:
    a list ``[global_1, global_2, local_1, ...]`` of float tensors, globals
    ``global_size`` and locals ``local_size`` square, on the input's device. Draws come
    from the module's own CPU generator, seeded by ``seed``, so the views are the same
    on every device and from run to run. Under ``torchrun``, ``fit`` reseeds it with
    ``seed + rank`` (:meth:`reseed`), so that no two ranks crop alike; a ``fit``
    checkpoint saves and restores its state.
    """

    def __init__(
        self,
        global_size,
        local_size,
        num_local: int = 6,
        *,
        global_scale=(0.4, 1.0),
        local_scale=(0.05, 0.4),
        ratio=(3 / 4, 4 / 3),
        flip: float = 0.5,
        jitter: float = 0.8,
        contrast: float = 0.4,
        brightness: float = 0.4,
        blur=(1.0, 0.1, 0.5),
        sigma=(0.1, 1.0),
        seed: int = 0,
    ):
        super().__init__()
        if num_local < 0:
            raise ValueError(f"num_local={num_local} must be >= 0")
        for name, (lo, hi) in (
            ("global_scale", global_scale),
            ("local_scale", local_scale),
        ):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name}={(lo, hi)} must satisfy 0 < low <= high <= 1")
        if len(blur) != 3:
            raise ValueError(
                f"blur={blur} must give 3 probabilities: global 1, global 2, locals"
            )
        self.global_size, self.local_size = pair(global_size), pair(local_size)
        self.num_local = num_local
        self.global_scale, self.local_scale, self.ratio = (
            global_scale,
            local_scale,
            ratio,
        )
        self.flip, self.jitter = flip, jitter
        self.contrast, self.brightness = contrast, brightness
        self.blur, self.sigma = tuple(blur), sigma
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.last_boxes: list[torch.Tensor] = []  # per view (b, 4), for the figures

    def reseed(self, seed: int | None = None) -> None:
        """Start the draws again (from ``seed``, or the constructor's)."""
        self.generator.manual_seed(self.seed if seed is None else seed)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def boxes(self, b: int, h: int, w: int, scale) -> torch.Tensor:
        """``b`` random crop boxes ``(x1, y1, x2, y2)`` in pixels, RandomResizedCrop's
        distribution (area uniform in ``scale``, log-ratio uniform), clipped inside."""
        area = h * w * (scale[0] + (scale[1] - scale[0]) * self._rand(b))
        log_r = math.log(self.ratio[0]), math.log(self.ratio[1])
        r = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * self._rand(b))
        cw = (area * r).sqrt().clamp(1, w)
        ch = (area / r).sqrt().clamp(1, h)
        x1, y1 = (w - cw) * self._rand(b), (h - ch) * self._rand(b)
        return torch.stack((x1, y1, x1 + cw, y1 + ch), dim=1)  # (b, 4)

    def view(self, x: torch.Tensor, size, scale, blur: float) -> torch.Tensor:
        """One view of every image in ``x`` (float ``(b, c, h, w)``)."""
        b, _, h, w = x.shape
        crops = self.boxes(b, h, w, scale)
        self.last_boxes.append(crops)
        boxes = torch.cat((torch.arange(b)[:, None].float(), crops), 1)  # (b, 5)
        out = roi_align(x, boxes.to(x), output_size=size, aligned=True)  # (b, c, *size)
        draws = self._rand(b, 5)  # on the CPU: flip?, jitter?, contrast, bright, blur?
        out = apply_to(draws[:, 0] < self.flip, v2.functional.horizontal_flip, out)
        jitter = draws[:, 1] < self.jitter  # (b,)
        factor = 1 + self.contrast * (2 * draws[jitter, 2] - 1)  # one per chosen image
        shift = self.brightness * (2 * draws[jitter, 3] - 1)  # in stds of each image
        out = apply_to(jitter, lambda v: contrast_brightness(v, factor, shift), out)
        if blur > 0:  # one sigma per call, blurred images chosen per image
            lo, hi = self.sigma
            sigma = float(lo + (hi - lo) * self._rand(1))
            k = 2 * math.ceil(2 * sigma) + 1  # the kernel covers +-2 sigma
            out = apply_to(
                draws[:, 4] < blur,
                lambda v: v2.functional.gaussian_blur(v, [k, k], [sigma, sigma]),
                out,
            )
        return out

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(
                "MultiCrop takes a batch (b, c, h, w), got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        self.last_boxes = []
        views = [
            self.view(x, self.global_size, self.global_scale, self.blur[0]),
            self.view(x, self.global_size, self.global_scale, self.blur[1]),
        ]
        views += [
            self.view(x, self.local_size, self.local_scale, self.blur[2])
            for _ in range(self.num_local)
        ]
        return views


# --------------------------------------------------------------------------- heads
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


# ------------------------------------------------------------------------- diagnostics
@torch.no_grad()
def effective_rank(embeddings: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank of a ``(n, d)`` matrix: ``exp`` of the entropy
    of its normalized singular values; 1 when every row points the same way, ``d`` when
    all directions are used equally."""
    s = torch.linalg.svdvals(embeddings.float())
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std of the L2-normalized embeddings (SimSiam's
    collapse check): about ``1/sqrt(d)`` when spread out, 0 when collapsed."""
    return F.normalize(embeddings.float(), dim=-1).std(dim=0).mean()


__all__ = [
    "cosine_schedule",
    "linear_warmup",
    "ema_update_",
    "EMATeacher",
    "SelfDistillation",
    "MultiCrop",
    "apply_to",
    "contrast_brightness",
    "DINOHead",
    "bn_mlp",
    "byol_mlp",
    "simsiam_projector",
    "simsiam_predictor",
    "use_sync_batchnorm",
    "maybe_sync_batchnorm",
    "embed",
    "effective_rank",
    "embedding_std",
    "method_loss",
]
