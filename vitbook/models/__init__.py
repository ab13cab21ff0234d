"""Every classifier of the book, with one interface: keyword-only constructors in the
papers' vocabulary, ``forward(x) -> logits``, ``forward_features(x)``,
``forward_head(features)``."""

from .cnn import CNN
from .swin import Swin
from .vit import ViT

__all__ = ["ViT", "Swin", "CNN"]
