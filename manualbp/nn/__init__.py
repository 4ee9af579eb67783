"""``nn.Module`` wrappers over ``manualbp.functional``: parameters and buffers live here, the
math and its backward in the functional ops."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules import module as _mm

import manualbp.functional as MF
from manualbp.functional._checks import check_kwargs, check_momentum, check_positive
from manualbp.functional._function import _is_compiling, _transforms_active
from manualbp.functional.chained import X
from manualbp.functional.dense import (Conv2dFunction, GlobalAvgPool2dFunction, LinearFunction, _conv_settings,
                                      _conv_t_settings)
from manualbp.functional.fused import (Conv2dActFunction, ConvTranspose2dActFunction, LinearActFunction,
                                      _conv2d_act_stack)
from manualbp.functional.norm import BatchNormFunction
from manualbp.functional.whitening import ZCAWhitenFunction, _check_zca_settings


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std: float | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self):
        if self.init_std is None:  # torch's default (Kaiming-uniform with a = sqrt(5))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.weight, 0.0, self.init_std)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound) if self.init_std is None else nn.init.zeros_(self.bias)

    def forward(self, x):
        return MF.linear(x, self.weight, self.bias)

    _fused_forward = forward   # layer_act fuses only while this is the forward that runs

    def forward_act(self, x, act: "Activation"):
        """``act(self(x))`` as one fused Function (see ``layer_act``)."""
        return MF.linear_act(x, self.weight, self.bias, act.name)

    def stage(self, act: "Activation | None" = None):
        """This layer (and ``act`` after it) as a ``chain`` stage (see ``run_sequence``)."""
        if act is None:
            return LinearFunction, (X, self.weight, self.bias)
        return LinearActFunction, (X, self.weight, self.bias, act.name, 1.0)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding="same", bias=True,
                 init_std: float | None = None):
        super().__init__()
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        if init_std is None:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.weight, 0.0, init_std)

    def forward(self, x):
        return MF.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    _fused_forward = forward   # layer_act fuses only while this is the forward that runs

    def forward_act(self, x, act: "Activation"):
        """``act(self(x))`` as one fused Function (see ``layer_act``)."""
        return MF.conv2d_act(x, self.weight, self.bias, self.stride, self.padding, act.name)

    def stage(self, act: "Activation | None" = None):
        """This layer (and ``act`` after it) as a ``chain`` stage (see ``run_sequence``)."""
        w = self.weight
        stride, padding = _conv_settings("conv2d", w, self.stride, self.padding)
        if act is None:
            return Conv2dFunction, (X, w, self.bias, stride, padding)
        return Conv2dActFunction, (X, w, self.bias, stride, padding, act.name, 1.0)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding!r}"


class ConvTranspose2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1,
                 bias=True):
        super().__init__()
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x):
        return MF.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    _fused_forward = forward   # layer_act fuses only while this is the forward that runs

    def forward_act(self, x, act: "Activation"):
        """``act(self(x))`` as one fused Function (see ``layer_act``)."""
        return MF.conv_transpose2d_act(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                       act.name)

    def stage(self, act: "Activation | None" = None):
        """This layer and ``act`` after it as a ``chain`` stage (see ``run_sequence``); None without an
        activation (the plain transposed convolution is not a chain stage)."""
        if act is None:
            return None
        stride, padding, output_padding = _conv_t_settings("conv_transpose2d_act", self.stride, self.padding,
                                                           self.output_padding)
        return ConvTranspose2dActFunction, (X, self.weight, self.bias, stride, padding, output_padding, act.name, 1.0)


class MaxPool2d(nn.Module):
    def __init__(self, kernel_size=2, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return MF.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class Interpolate(nn.Module):
    def __init__(self, size=None, scale_factor=None, mode="bilinear", align_corners=False):
        super().__init__()
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, x):
        return MF.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)


class Flatten(nn.Module):
    def forward(self, x):
        return MF.flatten(x)


class Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return MF.reshape(x, (x.shape[0], *self.shape))


class GlobalAvgPool2d(nn.Module):
    def forward(self, x):
        return MF.global_avg_pool2d(x)

    _fused_forward = forward

    def stage(self, act=None):
        """This layer as a ``chain`` stage (see ``run_sequence``)."""
        return (GlobalAvgPool2dFunction, (X,)) if act is None else None


class Activation(nn.Module):
    """One of ``manualbp.functional.ACTIVATIONS`` by name (relu, elu, tanh, arctan, sigmoid, soft_abs)."""

    def __init__(self, name: str):
        super().__init__()
        if name not in MF.ACTIVATIONS:
            raise ValueError(f"Activation: unknown activation {name!r}; choose one of {sorted(MF.ACTIVATIONS)}")
        self.name = name
        self.fn = MF.ACTIVATIONS[name]
        self.fusable = name in MF.FUSED_ACTIVATIONS

    def forward(self, x):
        return self.fn(x)

    _fused_forward = forward   # layer_act fuses only while this is the forward that runs

    def extra_repr(self):
        return self.name


def _plain(m: nn.Module) -> bool:
    """Whether module ``m`` runs its own class's ``forward`` (not a subclass's or an instance's
    replacement) and no hook (the probes', or anyone's) watches its forward or backward."""
    cls = type(m)
    return (cls.forward is cls._fused_forward and "forward" not in m.__dict__
            and not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks))


def _global_hooks() -> bool:
    """Whether hooks registered for every module (``torch.nn.modules.module.register_module_*_hook``) exist."""
    return bool(_mm._global_forward_hooks or _mm._global_forward_pre_hooks or _mm._global_backward_hooks
                or _mm._global_backward_pre_hooks)


def layer_act(layer: nn.Module, act: "Activation | None", x: torch.Tensor) -> torch.Tensor:
    """``act(layer(x))`` (just ``layer(x)`` when ``act`` is None).

    When the activation can be fused (relu, elu, tanh, sigmoid; ``MF.FUSED_ACTIVATIONS``), both modules
    run their own class's forward and no hook watches either, this runs the layer's fused Function
    (``linear_act``, ``conv2d_act``, ``conv_transpose2d_act``): one Function instead of two, the same
    kernels, bit-identical results. Otherwise it calls the two modules, so that hooks (the training
    probes) see the pre-activation (the layer's output) and the post-activation (the activation's
    output), and a subclass's own forward runs."""
    if act is None:
        return layer(x)
    if act.fusable and hasattr(layer, "forward_act") and _plain(layer) and _plain(act) and not _global_hooks():
        return layer.forward_act(x, act)
    return act(layer(x))


def run_sequence(items, x: torch.Tensor, chain: bool = True) -> torch.Tensor:
    """Run ``items``, a list of ``(module, activation or None)`` pairs, in order:
    ``x = act(module(x))`` each (``layer_act``).

    With ``chain`` (the default), in plain eager mode (not under torch.compile or a torch.func
    transform), each run of two or more consecutive items that can be chained (the module has a
    ``stage`` method that returns a stage, no hook watches the module or its activation, both run
    their own class's forward, no global module hooks) runs as one ``MF.chain`` Function, or as one
    ``MF.conv2d_act_stack`` when the run is conv2d + activation layers with one activation (then
    optionally the global average pool): the same kernels and hand-written backwards in the same
    order, bit-identical results, one autograd node instead of one per op. Anything watched (the
    training probes install hooks) runs module by module, so hooks see every pre- and post-activation."""
    if not chain or len(items) < 2 or _is_compiling() or _transforms_active() or _global_hooks():
        for m, act in items:
            x = layer_act(m, act, x)
        return x
    group, stages = [], []
    for m, act in items:
        stage = None
        if hasattr(m, "stage") and _plain(m) and (act is None or (act.fusable and _plain(act))):
            stage = m.stage(act)
        if stage is not None:
            group.append((m, act))
            stages.append(stage)
            continue
        x = _flush(group, stages, x)
        group, stages = [], []
        x = layer_act(m, act, x)
    return _flush(group, stages, x)


def _flush(group, stages, x):
    if len(group) >= 2:
        stack = _as_stack(stages)
        if stack is not None:
            return _conv2d_act_stack(x, *stack)   # the settings are the stages' own, already checked
        return MF.chain(x, stages)
    for m, act in group:
        x = layer_act(m, act, x)
    return x


def _as_stack(stages):
    """The arguments of ``MF.conv2d_act_stack`` after x (settings as pairs) when the stages are
    conv2d + activation layers with one activation, optionally followed by the global average pool
    (CNN6's body): one Function without a chain's per-stage dispatch, the same kernels in the same
    order. Else None."""
    pool = stages[-1][0] is GlobalAvgPool2dFunction
    convs = stages[:-1] if pool else stages
    if not convs or convs[0][0] is not Conv2dActFunction:
        return None
    act, alpha = convs[0][1][5], convs[0][1][6]
    for fn, a in convs:
        if fn is not Conv2dActFunction or a[5] != act or a[6] != alpha:
            return None
    return ([a[1] for _, a in convs], [a[2] for _, a in convs], [a[3] for _, a in convs], [a[4] for _, a in convs],
            act, alpha, pool)


class Center(nn.Module):
    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return MF.center(x, self.dim)


class Standardize(nn.Module):
    def __init__(self, eps: float = 1e-5, dim: int = 0):
        super().__init__()
        self.eps, self.dim = eps, dim

    def forward(self, x):
        return MF.standardize(x, self.eps, self.dim)


class BatchNorm(nn.Module):
    """Batch norm without affine parameters for (N, C) or (N, C, H, W) (momentum in torch's convention)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        return MF.batch_norm(x, self.running_mean, self.running_var, self.training, self.momentum, self.eps)

    _fused_forward = forward

    def stage(self, act=None):
        """This layer as a ``chain`` stage (see ``run_sequence``); the checks of ``batch_norm`` on
        the settings (eps, momentum) run here."""
        if act is not None:
            return None
        check_positive("batch_norm", "eps", self.eps)
        check_momentum("batch_norm", self.momentum)
        return BatchNormFunction, (X, self.running_mean, self.running_var, bool(self.training), float(self.momentum),
                                   float(self.eps))


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

    _fused_forward = forward

    def stage(self, act=None):
        """This layer as a ``chain`` stage (see ``run_sequence``); None with running statistics
        (their update follows the op)."""
        if act is not None or self.running:
            return None
        _check_zca_settings(self.eps, self.mode, self.backend, self.grad)
        return ZCAWhitenFunction, (X, float(self.eps), self.mode, self.backend, self.grad)

    def extra_repr(self):
        return f"eps={self.eps}, mode={self.mode}, backend={self.backend}, grad={self.grad}, running={self.running}"


class DecorrelatedBatchNorm(nn.Module):
    """Decorrelated batch norm over groups of ``group_size`` features (None: all features, one group)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, backend: str = "eigh",
                 group_size: int | None = None):
        super().__init__()
        g = num_features if group_size is None else group_size
        if g < 1 or num_features % g:
            raise ValueError(f"DecorrelatedBatchNorm: group_size must divide num_features = {num_features}, got "
                             f"{group_size}")
        self.eps, self.momentum, self.backend, self.group_size = eps, momentum, backend, g
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_whitening", torch.eye(g).repeat(num_features // g, 1, 1))

    def forward(self, x):
        return MF.decorrelated_batch_norm(x, self.running_mean, self.running_whitening, self.training,
                                          self.momentum, self.eps, self.backend, self.group_size)


class IterNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, iterations: int = 5):
        super().__init__()
        self.eps, self.momentum, self.iterations = eps, momentum, iterations
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_whitening", torch.eye(num_features))

    def forward(self, x):
        return MF.iter_norm(x, self.running_mean, self.running_whitening, self.training, self.momentum,
                            self.eps, self.iterations)


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


NORMS = {
    "none": None,
    "center": lambda d: Center(0),
    "standardize": lambda d, eps=1e-5: Standardize(eps, 0),
    "batch_norm": lambda d, eps=1e-5, momentum=0.1: BatchNorm(d, eps, momentum),
    "zca_dim": _zca("dim"),
    "zca_example": _zca("example"),
    "decorrelated_batch_norm": lambda d, eps=1e-5, momentum=0.1, backend="eigh", group_size=None:
        DecorrelatedBatchNorm(d, eps, momentum, backend, group_size),
    "iter_norm": lambda d, eps=1e-5, momentum=0.1, iterations=5: IterNorm(d, eps, momentum, iterations),
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
