"""Fused layer + activation ops: ``y = act(layer(x))`` as one autograd.Function.

Each Function a model runs costs a fixed amount of Python on the forward and on the backward
(tens of microseconds, more than a small layer's kernels), so the models run a weight layer and
the activation after it as one Function when nothing watches the pair (no module hooks; see
``manualbp.nn.layer_act``). The math is the same kernels in the same order as the two separate
ops, so results are bit-identical (tested); the pre-activation is never stored.

Activations that can be fused are those whose derivative is a function of their output y:

    relu     dy/dz = [y > 0]
    elu      dy/dz = 1 (y > 0), y + alpha (y <= 0)
    tanh     dy/dz = 1 - y^2
    sigmoid  dy/dz = y (1 - y)

The backward applies that derivative to g (the fused aten ``*_backward`` kernels, as the
activation ops do) and then the layer's own backward (``linear_backward``, ``conv_backward``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_positive
from ._function import ManualFunction, save_for_jvp
from .dense import (_check_linear, _conv_args, _conv_t_args, _linear_args_ok, _tf_same, conv_backward, conv_jvp,
                    linear_backward, linear_jvp)

aten = torch.ops.aten


def _relu_(z, alpha):
    return z.clamp_min_(0)


def _elu_(z, alpha):
    return F.elu_(z, alpha)


def _tanh_(z, alpha):
    return z.tanh_()


def _sigmoid_(z, alpha):
    return z.sigmoid_()


# name: (in-place activation of the layer output z, dL/dz = g act'(z) from g and the output y)
FUSED_ACTIVATIONS = {
    "relu": (_relu_, lambda g, y, alpha: aten.threshold_backward(g, y, 0)),
    "elu": (_elu_, lambda g, y, alpha: aten.elu_backward(g, alpha, 1.0, 1.0, True, y)),
    "tanh": (_tanh_, lambda g, y, alpha: aten.tanh_backward(g, y)),
    "sigmoid": (_sigmoid_, lambda g, y, alpha: aten.sigmoid_backward(g, y)),
}


def _act_grad(act, g, y, alpha):
    """dL/dz = g act'(z), computed from the output y (table above)."""
    return FUSED_ACTIVATIONS[act][1](g, y, alpha)


class LinearActFunction(ManualFunction):
    """y = act(x w^T + b)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, act, alpha):
        return FUSED_ACTIVATIONS[act][0](F.linear(x, w, b), alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, act, alpha = inputs
        ctx.save_for_backward(x, w, output)
        save_for_jvp(ctx, x, w, output)
        ctx.conf = (b is not None, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z), written from the output y (table above); then the linear backward of z = x w^T + b:
        # dL/dx = dL/dz w ; dL/dw = dL/dz^T x ; dL/db = sum dL/dz
        x, w, y = ctx.saved_tensors
        has_bias, act, alpha = ctx.conf
        gz = _act_grad(act, g, y, alpha)
        return (*linear_backward(ctx.needs_input_grad, has_bias, x, w, gz), None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        # dz = dx w^T + x dw^T + db ; dy = act'(z) dz, from the output y (the table above)
        x, w, y = ctx.saved_tensors
        _, act, alpha = ctx.conf
        return _act_grad(act, linear_jvp(x, w, tx, tw, tb), y, alpha)


class Conv2dActFunction(ManualFunction):
    """y = act(conv2d(x, w) + b)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, stride, padding, act, alpha):
        return FUSED_ACTIVATIONS[act][0](F.conv2d(x, w, b, stride, padding), alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, act, alpha = inputs
        ctx.save_for_backward(x, w, output)
        save_for_jvp(ctx, x, w, output)
        ctx.conf = (b is not None, stride, padding, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z) from the output y; then the convolution backward of z (dense.conv_backward)
        x, w, y = ctx.saved_tensors
        has_bias, stride, padding, act, alpha = ctx.conf
        gz = _act_grad(act, g, y, alpha)
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, gz, stride, padding), None, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        # dz = conv(dx, w) + conv(x, dw) + db ; dy = act'(z) dz, from the output y
        x, w, y = ctx.saved_tensors
        _, stride, padding, act, alpha = ctx.conf
        return _act_grad(act, conv_jvp(x, w, tx, tw, tb, stride, padding), y, alpha)


class ConvTranspose2dActFunction(ManualFunction):
    """y = act(conv_transpose2d(x, w) + b)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, stride, padding, output_padding, act, alpha):
        return FUSED_ACTIVATIONS[act][0](F.conv_transpose2d(x, w, b, stride, padding, output_padding), alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, output_padding, act, alpha = inputs
        ctx.save_for_backward(x, w, output)
        save_for_jvp(ctx, x, w, output)
        ctx.conf = (b is not None, stride, padding, output_padding, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z) from the output y; then the transposed-convolution backward of z
        x, w, y = ctx.saved_tensors
        has_bias, stride, padding, output_padding, act, alpha = ctx.conf
        gz = _act_grad(act, g, y, alpha)
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, gz, stride, padding, output_padding),
                None, None, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        # dz = conv_transpose(dx, w) + conv_transpose(x, dw) + db ; dy = act'(z) dz, from the output y
        x, w, y = ctx.saved_tensors
        _, stride, padding, output_padding, act, alpha = ctx.conf
        return _act_grad(act, conv_jvp(x, w, tx, tw, tb, stride, padding, output_padding), y, alpha)


def _check_act(op: str, activation: str, alpha) -> float:
    if activation not in FUSED_ACTIVATIONS:
        check_choice(op, "activation", activation, FUSED_ACTIVATIONS)
    if alpha != 1.0:
        check_positive(op, "alpha", alpha)
    return float(alpha)


def linear_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, activation: str = "relu",
               alpha: float = 1.0) -> torch.Tensor:
    """``activation(linear(x, w, b))`` as one Function (the pre-activation is not stored).

    Args:
        x, w, b: as in ``linear``.
        activation: ``"relu"``, ``"elu"``, ``"tanh"`` or ``"sigmoid"`` (derivatives computed from the
            output).
        alpha: ELU's alpha.

    Returns:
        Tensor of shape ``(*, out_features)``, bit-identical to the two ops run separately.
    """
    if not _linear_args_ok(x, w, b):
        _check_linear("linear_act", x, w, b)
    return LinearActFunction.call(x, w, b, activation, _check_act("linear_act", activation, alpha))


def conv2d_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding="same",
               activation: str = "relu", alpha: float = 1.0) -> torch.Tensor:
    """``activation(conv2d(x, w, b, stride, padding))`` as one Function.

    Args:
        x, w, b, stride, padding: as in ``conv2d``.
        activation, alpha: as in ``linear_act``.

    Returns:
        Tensor of shape ``(N, C_out, H_out, W_out)``, bit-identical to the two ops run separately.
    """
    if isinstance(padding, str) and padding == "tf_same":
        x, padding = _tf_same("conv2d_act", x, w, stride)
    stride, padding = _conv_args("conv2d_act", x, w, b, stride, padding)
    return Conv2dActFunction.call(x, w, b, stride, padding, activation, _check_act("conv2d_act", activation, alpha))


def conv_transpose2d_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                         output_padding=0, activation: str = "relu", alpha: float = 1.0) -> torch.Tensor:
    """``activation(conv_transpose2d(x, w, b, stride, padding, output_padding))`` as one Function.

    Args:
        x, w, b, stride, padding, output_padding: as in ``conv_transpose2d``.
        activation, alpha: as in ``linear_act``.

    Returns:
        The transposed convolution's output shape, bit-identical to the two ops run separately.
    """
    stride, padding, output_padding = _conv_t_args("conv_transpose2d_act", x, w, b, stride, padding, output_padding)
    return ConvTranspose2dActFunction.call(x, w, b, stride, padding, output_padding, activation,
                                           _check_act("conv_transpose2d_act", activation, alpha))
