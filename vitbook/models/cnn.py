"""A small convolutional network: the baseline with the priors ViT leaves out.

Locality (3x3 kernels) and translation equivariance (one kernel slides everywhere) are
built in:

    image (b, c, H, W)
      -> per stage: 3x3 conv, BatchNorm, ReLU, 2x2 max-pool  (b, width_i, h_i, w_i)
      -> global average pool                                  (b, widths[-1])
      -> linear head                                          (b, num_classes)

Every stage but the last halves the map (max-pool), as in a ResNet; the last keeps it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import check_image
from .base import Classifier, check_num_classes, check_positive


class CNN(Classifier):
    """A plain CNN, ``widths`` the channels of its stages (one conv each).

    ``forward_features`` returns the last stage's map ``(b, d, h, w)``;
    ``forward_intermediates`` every stage's map."""

    def __init__(
        self,
        *,
        num_classes: int,
        channels: int = 3,
        widths=(16, 32, 64),
        kernel_size: int = 3,
    ):
        super().__init__()
        widths = tuple(widths)
        check_num_classes(num_classes)
        check_positive(channels=channels, kernel_size=kernel_size, stages=len(widths))
        check_positive(**{f"widths[{i}]": w for i, w in enumerate(widths)})
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size={kernel_size} must be odd (a centred kernel)"
            )
        self.num_features = widths[-1]
        self.channels = channels
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2) if i < len(widths) - 1 else nn.Identity(),
            )
            for i, (c_in, c_out) in enumerate(zip((channels,) + widths, widths))
        )
        self.reset_classifier(num_classes, init=False)

    def intermediate_layers(self, x: torch.Tensor):
        """Yield every stage's map ``(b, width_i, h_i, w_i)``."""
        check_image(x, self.channels)
        for stage in self.stages:
            x = stage(x)  # (b, width_i, h_i, w_i)
            yield x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        *_, last = self.intermediate_layers(x)
        return last

    def forward_head(
        self, features: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        x = features.mean(dim=(2, 3))  # (b, d): global average pooling
        return x if pre_logits else self.head(x)
