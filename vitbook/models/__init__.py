"""Every classifier of the book, with one interface (:class:`Classifier`): keyword-only
constructors in the papers' vocabulary, ``forward(x) -> logits``,
``forward_features(x)``, ``forward_head(features)``, ``intermediate_layers(x)``."""

from .base import Classifier, PyramidClassifier
from .navit import NaViT
from .cnn import CNN
from .swin import Swin
from .scalable_vit import ScalableViT
from .twins import Twins
from .vit import ViT

__all__ = [
    "ViT",
    "Swin",
    "Twins",
    "ScalableViT",
    "NaViT",
    "CNN",
    "Classifier",
    "PyramidClassifier",
]
