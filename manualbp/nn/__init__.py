"""``manualbp.nn``: ``nn.Module`` wrappers over ``manualbp.functional`` (parameters and buffers live
in the modules, the math and its hand-written backward in the functional ops).

- ``manualbp.nn.layers``: weight layers, activations, shape ops and ``layer_act`` (a layer and its
  activation as one fused Function while no hook watches them);
- ``manualbp.nn.norm``: normalisation and whitening layers, ``SparseFiltering`` and ``make_norm``.
"""
from .layers import (Activation, Conv2d, ConvTranspose2d, Flatten, GlobalAvgPool2d, Interpolate, Linear, MaxPool2d,
                     Reshape, layer_act)
from .norm import (NORMS, BatchNorm, Center, DecorrelatedBatchNorm, IterNorm, SparseFiltering, Standardize,
                   ZCAWhiten, make_norm)

__all__ = ["Activation", "BatchNorm", "Center", "Conv2d", "ConvTranspose2d", "DecorrelatedBatchNorm", "Flatten",
           "GlobalAvgPool2d", "Interpolate", "IterNorm", "Linear", "MaxPool2d", "NORMS", "Reshape", "SparseFiltering",
           "Standardize", "ZCAWhiten", "layer_act", "make_norm"]
