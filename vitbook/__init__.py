"""vitbook: Vision Transformers and self-supervised vision learning, as an executable
book.

``viz`` and ``widgets`` (matplotlib, ipywidgets) load on first use, so importing a model
or training it never imports a plotting library.
"""

import importlib

from . import baselines, configs, data, layers, models, packing, probe, results, train
from .display import glue, show
from .layers import record_attention
from .models import NaViT, ScalableViT, Swin, Twins, ViT
from .train import at_scale, evaluate, fit, get_device, scale, seed_everything

__version__ = "0.1.0"

_LAZY = ("viz", "widgets")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vitbook' has no attribute {name!r}")


__all__ = [
    "configs",
    "data",
    "layers",
    "packing",
    "models",
    "probe",
    "baselines",
    "results",
    "train",
    "viz",
    "widgets",
    "show",
    "glue",
    "record_attention",
    "ViT",
    "Swin",
    "Twins",
    "ScalableViT",
    "NaViT",
    "at_scale",
    "evaluate",
    "fit",
    "get_device",
    "scale",
    "seed_everything",
]
