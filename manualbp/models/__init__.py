"""The three model families, built only from ``manualbp.nn`` modules."""
from .cnn6 import CNN6
from .mlp import MLP
from .segae import SegmentationAE

__all__ = ["CNN6", "MLP", "SegmentationAE"]
