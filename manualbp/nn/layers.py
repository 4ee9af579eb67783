"""Weight layers, activations and shape ops as ``nn.Module`` wrappers over ``manualbp.functional``:
parameters live in the modules, the math and its backward in the functional ops.

``layer_act(layer, act, x)`` runs a weight layer and the activation after it as one fused Function
(``linear_act``, ``conv2d_act``, ``conv_transpose2d_act``) unless hooks watch either module; the
models call it for every layer + activation pair."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules import module as _mm

import manualbp.functional as MF


class Linear(nn.Module):
    """Fully connected layer over ``manualbp.functional.linear``: ``(*, in_features)`` ->
    ``(*, out_features)``.

    Args:
        in_features, out_features: sizes.
        bias: learn a bias.
        init_std: None: torch's default initialisation (Kaiming-uniform, a = sqrt(5)); a number:
            weights N(0, init_std) and a zero bias.
        bias_init_std: a number: the bias N(0, bias_init_std) (the zca article's N(0, 0.0001^2))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std: float | None = None,
                 bias_init_std: float | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        for name, v in (("init_std", init_std), ("bias_init_std", bias_init_std)):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
                raise ValueError(f"Linear: {name} must be None or a number >= 0, got {v!r}")
        self.init_std, self.bias_init_std = init_std, bias_init_std
        self.reset_parameters()

    def reset_parameters(self):
        if self.init_std is None:  # torch's default (Kaiming-uniform with a = sqrt(5))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.weight, 0.0, self.init_std)
        if self.bias is not None:
            if self.bias_init_std is not None:
                nn.init.normal_(self.bias, 0.0, self.bias_init_std)
            elif self.init_std is None:
                bound = 1 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)
            else:
                nn.init.zeros_(self.bias)

    def forward(self, x):
        return MF.linear(x, self.weight, self.bias)

    _fused_forward = forward   # layer_act fuses only while this is the forward that runs

    def forward_act(self, x, act: "Activation"):
        """``act(self(x))`` as one fused Function (see ``layer_act``)."""
        return MF.linear_act(x, self.weight, self.bias, act.name)


    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(nn.Module):
    """2-D convolution over ``manualbp.functional.conv2d``: ``(N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.

    Args:
        in_channels, out_channels, kernel_size: sizes (the kernel an int or a pair).
        stride, padding: as in ``manualbp.functional.conv2d`` (padding ``"same"`` by default).
        bias: learn a bias (zeros at first).
        init_std: None: Kaiming-uniform (a = sqrt(5)); a number: weights N(0, init_std)."""

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


    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding!r}"


class ConvTranspose2d(nn.Module):
    """Transposed 2-D convolution over ``manualbp.functional.conv_transpose2d`` (weight
    ``(C_in, C_out, kH, kW)``); the defaults (stride 2, padding 1, output_padding 1) double H and W."""

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


class MaxPool2d(nn.Module):
    """2-D max pooling over ``manualbp.functional.max_pool2d`` (stride defaults to the kernel size)."""

    def __init__(self, kernel_size=2, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return MF.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class Interpolate(nn.Module):
    """Bilinear or bicubic resizing over ``manualbp.functional.interpolate`` (give ``size`` or
    ``scale_factor``)."""

    def __init__(self, size=None, scale_factor=None, mode="bilinear", align_corners=False):
        super().__init__()
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, x):
        return MF.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)


class Flatten(nn.Module):
    """``(N, ...)`` -> ``(N, -1)`` over ``manualbp.functional.flatten``."""

    def forward(self, x):
        return MF.flatten(x)


class Reshape(nn.Module):
    """``(N, ...)`` -> ``(N, *shape)`` over ``manualbp.functional.reshape``."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return MF.reshape(x, (x.shape[0], *self.shape))


class GlobalAvgPool2d(nn.Module):
    """``(N, C, H, W)`` -> ``(N, C)``: the spatial mean, over ``manualbp.functional.global_avg_pool2d``."""

    def forward(self, x):
        return MF.global_avg_pool2d(x)


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
