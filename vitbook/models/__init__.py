"""Every classifier of the book, with one interface (:class:`Classifier`): keyword-only
constructors in the papers' vocabulary, ``forward(x) -> logits``,
``forward_features(x)``, ``forward_head(features)``, ``intermediate_layers(x)``.

One vocabulary, timm's, runs through the models and their layers:

- ``attn_drop``: the dropout on the attention weights (``attn_dropout``, its old name
  in the blocks and models, is still taken, with a DeprecationWarning);
- ``mlp_ratio``: the MLP's hidden width over ``dim``; ViT, NaViT and ``layers.Block``
  also take the width itself, ``mlp_dim`` (the ViT paper's "MLP size", what the
  chapters pass);
- a singular name is one value (``window_size``: Swin's one window, a layer's
  window), a plural one a value per stage (``dims``, ``depths``, ``heads``,
  ``window_sizes``, ``sr_ratios``, ``mlp_ratios``, ``c_ratios``; timm's Twins writes
  ``wss``, ``sr_ratios``, ``mlp_ratios``), one value for all where the model allows.
"""

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
