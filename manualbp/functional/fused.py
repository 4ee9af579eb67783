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

from ._checks import check_choice, check_positive, check_same_dtype_device, check_tensor
from ._function import ManualFunction, _plain_tensor, _transforms_active, first, once_differentiable
from .dense import (_check_conv, _check_linear, _conv_args, _conv_args_ok, _conv_settings, _conv_t_args,
                    _linear_args_ok, conv_backward, gap_backward, linear_backward)

aten = torch.ops.aten


def _relu_(z, alpha):
    return z.clamp_min_(0)


def _elu_(z, alpha):
    return F.elu_(z, alpha)


def _tanh_(z, alpha):
    return z.tanh_()


def _sigmoid_(z, alpha):
    return z.sigmoid_()


# name: (in-place activation of the layer output z, dL/dz from g and the output y,
#        the same dL/dz written over g: the same elementwise kernel with g as its output buffer)
FUSED_ACTIVATIONS = {
    "relu": (_relu_, lambda g, y, alpha: aten.threshold_backward(g, y, 0),
             lambda g, y, alpha: aten.threshold_backward.grad_input(g, y, 0, grad_input=g)),
    "elu": (_elu_, lambda g, y, alpha: aten.elu_backward(g, alpha, 1.0, 1.0, True, y),
            lambda g, y, alpha: aten.elu_backward.grad_input(g, alpha, 1.0, 1.0, True, y, grad_input=g)),
    "tanh": (_tanh_, lambda g, y, alpha: aten.tanh_backward(g, y),
             lambda g, y, alpha: aten.tanh_backward.grad_input(g, y, grad_input=g)),
    "sigmoid": (_sigmoid_, lambda g, y, alpha: aten.sigmoid_backward(g, y),
                lambda g, y, alpha: aten.sigmoid_backward.grad_input(g, y, grad_input=g)),
}


def _act_grad(ctx, act, g, y, alpha):
    """dL/dz = g act'(z) from the output y. Written over g only when ``ctx.owns_grad`` says that no one
    else holds g (a ``chain`` sets it for a gradient that an earlier-run stage's backward just made),
    which saves one activation-sized buffer at the backward's peak; never for autograd's own g."""
    return FUSED_ACTIVATIONS[act][2 if getattr(ctx, "owns_grad", False) else 1](g, y, alpha)


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
        ctx.conf = (b is not None, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z), written from the output y (table above); then the linear backward of z = x w^T + b:
        # dL/dx = dL/dz w ; dL/dw = dL/dz^T x ; dL/db = sum dL/dz
        x, w, y = ctx.saved_tensors
        has_bias, act, alpha = ctx.conf
        gz = _act_grad(ctx, act, g, y, alpha)
        return (*linear_backward(ctx.needs_input_grad, has_bias, x, w, gz), None, None)


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
        ctx.conf = (b is not None, stride, padding, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z) from the output y; then the convolution backward of z (dense.conv_backward)
        x, w, y = ctx.saved_tensors
        has_bias, stride, padding, act, alpha = ctx.conf
        gz = _act_grad(ctx, act, g, y, alpha)
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, gz, stride, padding), None, None, None, None)


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
        ctx.conf = (b is not None, stride, padding, output_padding, act, alpha)

    @staticmethod
    def backward(ctx, g):
        # dL/dz = g act'(z) from the output y; then the transposed-convolution backward of z
        x, w, y = ctx.saved_tensors
        has_bias, stride, padding, output_padding, act, alpha = ctx.conf
        gz = _act_grad(ctx, act, g, y, alpha)
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, gz, stride, padding, output_padding),
                None, None, None, None, None)


def _check_act(op: str, activation: str, alpha) -> float:
    if activation not in FUSED_ACTIVATIONS:
        check_choice(op, "activation", activation, FUSED_ACTIVATIONS)
    if alpha != 1.0:
        check_positive(op, "alpha", alpha)
    return float(alpha)


def linear_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, activation: str = "relu",
               alpha: float = 1.0) -> torch.Tensor:
    """``activation(linear(x, w, b))`` in one Function (activation: relu, elu, tanh, sigmoid; ``alpha``
    is ELU's)."""
    if not _linear_args_ok(x, w, b):
        _check_linear("linear_act", x, w, b)
    return LinearActFunction.call(x, w, b, activation, _check_act("linear_act", activation, alpha))


def conv2d_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding="same",
               activation: str = "relu", alpha: float = 1.0) -> torch.Tensor:
    """``activation(conv2d(x, w, b, stride, padding))`` in one Function."""
    stride, padding = _conv_args("conv2d_act", x, w, b, stride, padding)
    return Conv2dActFunction.call(x, w, b, stride, padding, activation, _check_act("conv2d_act", activation, alpha))


def conv_transpose2d_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1, padding=0,
                         output_padding=0, activation: str = "relu", alpha: float = 1.0) -> torch.Tensor:
    """``activation(conv_transpose2d(x, w, b, stride, padding, output_padding))`` in one Function."""
    stride, padding, output_padding = _conv_t_args("conv_transpose2d_act", x, w, b, stride, padding, output_padding)
    return ConvTranspose2dActFunction.call(x, w, b, stride, padding, output_padding, activation,
                                           _check_act("conv_transpose2d_act", activation, alpha))


class Conv2dActStackFunction(ManualFunction):
    """A stack of conv2d + activation layers, optionally followed by the global average pool, as ONE
    Function (the body of CNN6):

        y_0 = x,  y_i = act(conv2d(y_{i-1}, w_i) + b_i)  (i = 1..L),  out = mean_{h,w} y_L  (pool) or y_L

    ``conf`` = (strides, paddings, activation, alpha, pool, has_bias); ``params`` = (w_1, b_1, ...,
    w_L, b_L). The kernels, their order and the backward are those of ``conv2d_act`` layer by layer and
    ``global_avg_pool2d`` (bit-identical results; tested on CNN6), without a ``chain``'s per-stage
    dispatch. Through ``apply`` the forward also returns y_1..y_L (y_1..y_{L-1} without the pool) as
    non-differentiable outputs for ``setup_context``; the eager twin saves them directly."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, conf, *params):
        ys = _stack_layers(x, conf, params)
        if conf[4]:
            return (ys[-1].mean(dim=(-2, -1)), *ys)
        return tuple(ys[::-1])   # y_L first, then the intermediates

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, conf = inputs[0], inputs[1]
        ys = output[1:] if conf[4] else output[::-1]
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, *ys, *inputs[2::2])
        ctx.conf = conf

    @staticmethod
    def eager_forward(ctx, x, conf, *params):
        """The eager twin's forward (see ``ManualFunction``): the same kernels, y_1..y_L saved, one output."""
        ys = _stack_layers(x, conf, params)
        ctx.save_for_backward(x, *ys, *params[::2])
        ctx.conf = conf
        return ys[-1].mean(dim=(-2, -1)) if conf[4] else ys[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, g, *_):
        # pool: dL/dy_L[n,c,h,w] = g[n,c] / (H W). Then for i = L..1:
        #   dL/dz_i = dL/dy_i act'(z_i) (from y_i; table above), written over dL/dy_i when this backward
        #   made it; (dL/dy_{i-1}, dL/dw_i, dL/db_i) = convolution backward of z_i (dense.conv_backward)
        strides, paddings, act, alpha, pool, has_bias = ctx.conf
        n = len(strides)
        saved = ctx.saved_tensors
        x, ys, ws = saved[0], saved[1:n + 1], saved[n + 1:]
        need = ctx.needs_input_grad
        grads = [None] * (2 * n)
        if g is None:
            return (None, None, *grads)
        # dep[i]: whether layer i's input depends on something that needs a gradient
        dep, d = [], need[0]
        for i in range(n):
            dep.append(d)
            d = d or need[2 + 2 * i] or need[3 + 2 * i]
        plain = not _transforms_active() and _plain_tensor(g)
        own = False   # autograd's own g is never overwritten
        if pool:
            g, own = gap_backward(g, ys[-1].shape), True
        table = FUSED_ACTIVATIONS[act]
        for i in range(n - 1, -1, -1):
            gz = table[2](g, ys[i], alpha) if own and plain else table[1](g, ys[i], alpha)
            gx, grads[2 * i], grads[2 * i + 1] = conv_backward(
                (dep[i], need[2 + 2 * i], need[3 + 2 * i]), has_bias[i], ys[i - 1] if i else x, ws[i], gz, strides[i],
                paddings[i])
            if not dep[i]:
                return (None, None, *grads)
            g, own = gx, True
        return (g, None, *grads)


def _stack_layers(x, conf, params) -> list:
    """y_1..y_L of a stack: act(conv2d(y_{i-1}, w_i) + b_i), the activation in place."""
    strides, paddings, act, alpha = conf[:4]
    f = FUSED_ACTIVATIONS[act][0]
    ys = []
    for i in range(len(strides)):
        x = f(F.conv2d(x, params[2 * i], params[2 * i + 1], strides[i], paddings[i]), alpha)
        ys.append(x)
    return ys


def _per_layer(op: str, name: str, value, n: int) -> list:
    """A per-layer setting: one value for every layer, or a list of n values (a tuple is one value:
    a stride or padding pair)."""
    if isinstance(value, list):
        if len(value) != n:
            raise ValueError(f"{op}: {name} must be one value for all layers or a list of one per layer ({n}); "
                             f"got a list of {len(value)}")
        return value
    return [value] * n


def _check_stack_layer(op: str, i: int, c: int, x, w, b):
    """The error for layer i > 0 of a stack whose input has c channels (the hot-path test failed)."""
    name = f"{op} (layer {i})"
    check_tensor(name, "w", w, ndim=4, shape_hint="(out_channels, in_channels, kH, kW)")
    if w.shape[1] != c:
        raise ValueError(f"{op}: layer {i}'s weight (shape {tuple(w.shape)}) expects {w.shape[1]} input channels, "
                         f"but layer {i - 1} gives {c}")
    if b is not None:
        check_tensor(name, "b", b, ndim=1, shape_hint=f"({w.shape[0]},)")
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"{name}: b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    check_same_dtype_device(op, x=x, **{f"weights[{i}]": w, f"biases[{i}]": b})


def conv2d_act_stack(x: torch.Tensor, weights, biases=None, strides=1, paddings="same", activation: str = "relu",
                     alpha: float = 1.0, pool: bool = False) -> torch.Tensor:
    """``conv2d_act`` layer after layer (then ``global_avg_pool2d`` with ``pool``) as one Function.

    ``weights``: one (out, in, kH, kW) tensor per layer; ``biases``: None, or a list with a tensor or
    None per layer; ``strides``, ``paddings``: one value for every layer (an int, a pair, or for the
    padding ``"same"`` / ``"valid"``) or a list of one per layer; one ``activation`` (relu, elu,
    tanh, sigmoid) for every layer."""
    op = "conv2d_act_stack"
    weights = list(weights)
    n = len(weights)
    if n == 0:
        raise ValueError(f"{op}: give at least one layer (weights is empty)")
    biases = [None] * n if biases is None else list(biases)
    if len(biases) != n:
        raise ValueError(f"{op}: biases must give one entry (a tensor or None) per layer ({n}), got {len(biases)}")
    strides, paddings = _per_layer(op, "strides", strides, n), _per_layer(op, "paddings", paddings, n)
    alpha = _check_act(op, activation, alpha)
    if pool is not True and pool is not False:
        raise ValueError(f"{op}: pool must be True or False, got {pool!r}")
    st, pd = [], []
    for i, w in enumerate(weights):
        s_, p_ = _conv_settings(op, w, strides[i], paddings[i]) if isinstance(w, torch.Tensor) and w.dim() == 4 else (
            None, None)
        st.append(s_)
        pd.append(p_)
    return _conv2d_act_stack(x, weights, biases, st, pd, activation, alpha, pool)


def _conv2d_act_stack(x, weights, biases, strides, paddings, activation, alpha, pool):
    """``conv2d_act_stack`` with its settings already checked (strides and paddings as lists of pairs,
    as the ``stage`` methods give them): the shapes, dtypes and devices of the layers are checked here
    (one combined test per layer; the detailed checks only to explain a failure)."""
    op = "conv2d_act_stack"
    params, c, dtype, device = [], None, None, None
    for i, (w, b) in enumerate(zip(weights, biases)):
        if i == 0:
            if not _conv_args_ok(x, w, b, 1, 0):
                _check_conv(op, x, w, b, 1, 0)
            dtype, device = x.dtype, x.device
        elif not (isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[1] == c and w.dtype == dtype
                  and w.device == device and (b is None or (isinstance(b, torch.Tensor) and b.dim() == 1
                                                            and b.shape[0] == w.shape[0] and b.dtype == dtype
                                                            and b.device == device))):
            _check_stack_layer(op, i, c, x, w, b)
        params += (w, b)
        c = w.shape[0]
    conf = (tuple(strides), tuple(paddings), activation, alpha, pool, tuple(b is not None for b in biases))
    try:
        out = Conv2dActStackFunction.call(x, conf, *params)
    except RuntimeError as e:
        raise ValueError(f"{op}: the layers failed on an input of shape {tuple(x.shape)} (strides {list(conf[0])}; "
                         f"is the input too small for {len(weights)} layers?): {e}") from e
    return first(out)
