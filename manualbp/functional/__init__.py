"""``manualbp.functional``: every op a ``torch.autograd.Function`` with a hand-written backward,
in the style of ``torch.nn.functional``."""
from .activations import ACTIVATIONS, arctan, elu, relu, sigmoid, soft_abs, tanh
from .dense import (concat, conv2d, conv_transpose2d, flatten, global_avg_pool2d, interpolate, linear,
                    max_pool2d, reshape)
from .losses import binary_cross_entropy, mse, softmax_cross_entropy
from .norm import batch_norm, center, standardize
from .regularizers import REGULARIZERS, SEED1_LETTERS, SEED5_LETTERS, regularize
from .sparse_filtering import sparse_filtering
from .whitening import decorrelated_batch_norm, iter_norm, zca_whiten

__all__ = [
    "ACTIVATIONS", "REGULARIZERS", "SEED1_LETTERS", "SEED5_LETTERS",
    "arctan", "batch_norm", "binary_cross_entropy", "center", "concat", "conv2d", "conv_transpose2d",
    "decorrelated_batch_norm", "elu", "flatten", "global_avg_pool2d", "interpolate", "iter_norm",
    "linear", "max_pool2d", "mse", "regularize", "relu", "reshape", "sigmoid", "soft_abs",
    "softmax_cross_entropy", "sparse_filtering", "standardize", "tanh", "zca_whiten",
]
