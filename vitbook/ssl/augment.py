"""Multi-crop views: every image of a batch cropped, flipped, jittered and blurred on
its own draw (DINO's 2 global and N local crops, BYOL's 2 views).

    views = MultiCrop(global_size=28, local_size=14, num_local=6, seed=0)(images)
    # [global_1, global_2, local_1, ..., local_6]

:func:`apply_to` is what makes a per-image augmentation cost only the images drawn
for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import roi_align
from torchvision.transforms import v2

from ..layers import pair


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


__all__ = ["apply_to", "contrast_brightness", "MultiCrop"]
