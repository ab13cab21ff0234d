"""vitbook: Vision Transformers and self-supervised vision learning, as an executable book."""
from . import data, layers, models, train, viz, widgets
from .display import show
from .layers import record_attention
from .models import Swin, ViT
from .train import at_scale, evaluate, fit, get_device, scale, seed_everything

__version__ = "0.1.0"

__all__ = ["data", "layers", "models", "train", "viz", "widgets", "show", "record_attention", "ViT", "Swin",
           "at_scale", "evaluate", "fit", "get_device", "scale", "seed_everything"]
