"""Normalisation and whitening layers (their running statistics are the modules' buffers), the sparse-filtering
cost as a module, and ``make_norm``, the layer by name."""
from __future__ import annotations

import torch
from torch import nn

import manualbp.functional as MF
from manualbp.functional._checks import check_kwargs
from manualbp.functional.whitening import check_group_size


class Center(nn.Module):
    """Subtract the mean over ``dim`` (``manualbp.functional.center``; 0: over the batch)."""

    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return MF.center(x, self.dim)


class Standardize(nn.Module):
    """Zero mean, unit variance over ``dim`` (``manualbp.functional.standardize``)."""

    def __init__(self, eps: float = 1e-5, dim: int = 0):
        super().__init__()
        self.eps, self.dim = eps, dim

    def forward(self, x):
        return MF.standardize(x, self.eps, self.dim)


class _Affine(nn.Module):
    """``affine=True``: a per-channel scale and shift after the normalisation (``weight`` from 1, ``bias`` from 0,
    as torch's and the whitening papers' layers), by the manual ``channel_affine``."""

    def _init_affine(self, affine: bool, num_features: int) -> None:
        if not isinstance(affine, bool):
            raise ValueError(f"{type(self).__name__}: affine must be True or False, got {affine!r}")
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def _affine(self, y):
        return MF.channel_affine(y, self.weight, self.bias) if self.affine else y


class BatchNorm(_Affine):
    """Batch norm for (N, C) or (N, C, H, W) (momentum in torch's convention); without affine parameters unless
    ``affine=True``.

    ``running_init``: the running statistics start at mean 0, variance 1 (``"torch"``) or both at 0
    (``"zero"``, the weights-pov article's code). ``running_variance``: the running variance averages
    the batch's ``"unbiased"`` variance (torch) or its ``"biased"`` one (the article's code)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, running_init: str = "torch",
                 running_variance: str = "unbiased", affine: bool = False):
        super().__init__()
        self._init_affine(affine, num_features)
        if running_init not in ("torch", "zero"):
            raise ValueError(f"BatchNorm: running_init must be 'torch' (mean 0, variance 1) or 'zero', got "
                             f"{running_init!r}")
        if running_variance not in ("unbiased", "biased"):
            raise ValueError(f"BatchNorm: running_variance must be 'unbiased' or 'biased', got {running_variance!r}")
        self.eps, self.momentum = eps, momentum
        self.running_init, self.running_variance = running_init, running_variance
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.zeros(num_features) if running_init == "zero"
                             else torch.ones(num_features))

    def forward(self, x):
        return self._affine(self._normalise(x))

    def _normalise(self, x):
        if not (self.training and self.running_variance == "biased"):
            return MF.batch_norm(x, self.running_mean, self.running_var, self.training, self.momentum, self.eps)
        y = MF.batch_norm(x, None, None, True, self.momentum, self.eps)   # the batch's statistics, no update
        with torch.no_grad():   # running = (1 - momentum) running + momentum batch, biased variance
            dims = [0] + list(range(2, x.dim()))
            self.running_mean.lerp_(x.mean(dims), self.momentum)
            self.running_var.lerp_(x.var(dims, unbiased=False), self.momentum)
        return y

    def extra_repr(self):
        return (f"eps={self.eps}, momentum={self.momentum}, running_init={self.running_init}, "
                f"running_variance={self.running_variance}, affine={self.affine}")


class ZCAWhiten(nn.Module):
    """ZCA whitening of each batch. By default there are no running statistics: every batch, test
    batches included, is whitened with its own statistics (so test results depend on the evaluation
    batch). ``running=True`` (mode "dim" only) keeps a running average of the whitening matrix, with
    ``momentum`` in torch's convention, and eval mode applies it instead, as decorrelated batch norm
    does."""

    def __init__(self, num_features: int | None = None, eps: float = 1e-5, mode: str = "dim",
                 backend: str = "eigh", grad: str = "exact", running: bool = False, momentum: float = 0.1):
        super().__init__()
        if running and (mode != "dim" or not num_features):
            raise ValueError("ZCAWhiten: running=True needs mode='dim' and num_features (a per-example whitening "
                             "has no fixed matrix to average)")
        self.eps, self.mode, self.backend, self.grad = eps, mode, backend, grad
        self.running, self.momentum = bool(running), momentum
        if self.running:
            self.register_buffer("running_whitening", torch.eye(num_features))

    def forward(self, x):
        if not self.running:
            return MF.zca_whiten(x, self.eps, self.mode, self.backend, self.grad)
        if not self.training:
            return MF.linear(x, self.running_whitening)   # x U^T = x U: U is symmetric
        y, u = MF.zca_whiten(x, self.eps, self.mode, self.backend, self.grad, return_matrix=True)
        with torch.no_grad():
            self.running_whitening.lerp_(u.to(self.running_whitening.dtype), self.momentum)
        return y


    def extra_repr(self):
        return f"eps={self.eps}, mode={self.mode}, backend={self.backend}, grad={self.grad}, running={self.running}"


def _group_size(layer: str, num_features: int, group_size) -> int:
    return check_group_size(layer, num_features, group_size, f"num_features = {num_features}")


class DecorrelatedBatchNorm(_Affine):
    """Decorrelated batch norm of (N, C) or (N, C, H, W) over groups of ``group_size`` channels (None: all
    channels, one group; the paper's group size), with the running mean and whitening matrices as buffers (used
    in eval mode) and, with ``affine=True``, a per-channel scale and shift after the whitening."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, backend: str = "eigh",
                 group_size: int | None = None, affine: bool = False):
        super().__init__()
        g = _group_size("DecorrelatedBatchNorm", num_features, group_size)
        self.eps, self.momentum, self.backend, self.group_size = eps, momentum, backend, g
        self._init_affine(affine, num_features)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_whitening", torch.eye(g).repeat(num_features // g, 1, 1))

    def forward(self, x):
        return self._affine(MF.decorrelated_batch_norm(x, self.running_mean, self.running_whitening, self.training,
                                                       self.momentum, self.eps, self.backend, self.group_size))

    def extra_repr(self):
        return (f"eps={self.eps}, momentum={self.momentum}, backend={self.backend}, group_size={self.group_size}, "
                f"affine={self.affine}")


class IterNorm(_Affine):
    """IterNorm of (N, C) or (N, C, H, W) over groups of ``group_size`` channels (None: one group; IterNorm-pytorch's
    ``num_channels``) with ``iterations`` Newton-Schulz steps (T), the running mean and whitening matrices as
    buffers (used in eval mode; ``(C, C)`` for one group, ``(C / g, g, g)`` in groups) and, with ``affine=True``,
    a per-channel scale and shift after the whitening."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, iterations: int = 5,
                 group_size: int | None = None, affine: bool = False):
        super().__init__()
        g = _group_size("IterNorm", num_features, group_size)
        self.eps, self.momentum, self.iterations = eps, momentum, iterations
        self.group_size = None if group_size is None else g
        self._init_affine(affine, num_features)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_whitening", torch.eye(g) if group_size is None
                             else torch.eye(g).repeat(num_features // g, 1, 1))

    def forward(self, x):
        return self._affine(MF.iter_norm(x, self.running_mean, self.running_whitening, self.training, self.momentum,
                                         self.eps, self.iterations, self.group_size))

    def extra_repr(self):
        return (f"eps={self.eps}, momentum={self.momentum}, iterations={self.iterations}, "
                f"group_size={self.group_size}, affine={self.affine}")


class SparseFiltering(nn.Module):
    """The sparse-filtering cost of a feature batch (N, K) as a module (returns a scalar)."""

    def __init__(self, eps: float = 1e-8, activation: str = "soft_abs"):
        super().__init__()
        self.eps, self.activation = eps, activation

    def forward(self, z):
        return MF.sparse_filtering(z, self.eps, self.activation)


def _zca(mode):
    def make(d, eps=1e-5, backend="eigh", grad="exact", running=False, momentum=0.1):
        return ZCAWhiten(d, eps, mode, backend, grad, running, momentum)
    return make


def _dbn(d, eps=1e-5, momentum=0.1, backend="eigh", group_size=None, affine=False):
    return DecorrelatedBatchNorm(d, eps, momentum, backend, group_size, affine)


NORMS = {
    "none": None,
    "center": lambda d: Center(0),
    "standardize": lambda d, eps=1e-5: Standardize(eps, 0),
    "batch_norm": lambda d, eps=1e-5, momentum=0.1, affine=False: BatchNorm(d, eps, momentum, affine=affine),
    "zca_dim": _zca("dim"),
    "zca_example": _zca("example"),
    "decorrelated_batch_norm": _dbn,
    "dbn": _dbn,   # the same layer by its short name
    "iter_norm": lambda d, eps=1e-5, momentum=0.1, iterations=5, group_size=None, affine=False:
        IterNorm(d, eps, momentum, iterations, group_size, affine),
}


def make_norm(name: str, num_features: int, **kwargs) -> nn.Module | None:
    """A normalisation/whitening layer by name (``NORMS``); ``"none"`` gives None. Settings the layer
    does not take are refused with the list of those it does."""
    if name not in NORMS:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {sorted(NORMS)}")
    if NORMS[name] is None:
        if kwargs:
            raise ValueError(f"norm_kwargs {sorted(kwargs)} given, but norm 'none' takes no settings")
        return None
    check_kwargs(f"norm_kwargs of {name!r}", NORMS[name], kwargs, skip=("d",))
    return NORMS[name](num_features, **kwargs)
