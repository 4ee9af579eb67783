"""``manualbp.functional``: every op a ``torch.autograd.Function`` with a hand-written backward,
in the style of ``torch.nn.functional``."""
from .activations import (ACTIVATIONS, arctan, elu, leaky_relu, relu, sigmoid, soft_abs, tanh,
                          tanh_sigmoid_derivative)
from .dense import (add, concat, conv2d, conv_transpose2d, flatten, global_avg_pool2d, interpolate, linear,
                    max_pool2d, pad2d, pool_mix, reshape, tf_same_padding)
from .fused import FUSED_ACTIVATIONS, conv2d_act, conv_transpose2d_act, linear_act
from .losses import (binary_cross_entropy, mse, softmax_binary_cross_entropy, softmax_cross_entropy,
                     sum_squared_error)
from .norm import batch_norm, center, channel_affine, standardize
from .regularizers import ARTICLE_LETTERS, REGULARIZERS, regularize
from .sparse_filtering import sparse_filtering
from .whitening import decorrelated_batch_norm, iter_norm, zca_whiten

__all__ = [
    "ACTIVATIONS", "FUSED_ACTIVATIONS", "REGULARIZERS", "ARTICLE_LETTERS",
    "add", "arctan", "batch_norm", "binary_cross_entropy", "center", "channel_affine", "concat", "conv2d", "conv2d_act",
    "conv_transpose2d", "conv_transpose2d_act", "decorrelated_batch_norm", "elu", "flatten", "global_avg_pool2d",
    "interpolate", "iter_norm", "leaky_relu", "linear", "linear_act", "max_pool2d", "mse", "pad2d", "pool_mix",
    "regularize", "relu", "reshape", "sigmoid", "soft_abs", "softmax_binary_cross_entropy", "softmax_cross_entropy",
    "sparse_filtering", "standardize", "sum_squared_error", "tanh", "tanh_sigmoid_derivative", "tf_same_padding",
    "zca_whiten",
]

_MODULES = ("activations", "dense", "dilated", "fused", "losses", "norm", "regularizers", "sparse_filtering",
            "whitening")


def autograd_functions() -> list[type]:
    """Every ``torch.autograd.Function`` subclass defined in ``manualbp.functional``."""
    import importlib
    import inspect

    import torch
    out = []
    for name in _MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        out += [obj for _, obj in inspect.getmembers(mod, inspect.isclass)
                if issubclass(obj, torch.autograd.Function) and obj.__module__ == mod.__name__]
    return out
