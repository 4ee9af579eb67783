"""Dense ops: linear, convolution, transposed convolution, max-pooling, resizing,
reshape, concatenation and global average pooling, each with a hand-written backward.

The backward passes call low-level primitives (matmul, ``aten.convolution_backward``,
the aten ``*_backward`` kernels of pooling and resizing) on saved tensors; nothing in this module
asks autograd to differentiate a forward.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_same_dtype_device, check_tensor, pair
from ._function import ManualFunction, save_for_jvp, second_order_possible, tangent_sum

aten = torch.ops.aten


class LinearFunction(ManualFunction):
    """y = x w^T + b, x of shape (*, in), w of shape (out, in)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b):
        return F.linear(x, w, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        save_for_jvp(ctx, x, w)
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return linear_backward(ctx.needs_input_grad, ctx.has_bias, x, w, g)

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        # dy = dx w^T + x dw^T + db
        x, w = ctx.saved_tensors
        return linear_jvp(x, w, tx, tw, tb)


def linear_jvp(x, w, tx, tw, tb):
    """The tangent of y = x w^T + b: dx w^T + x dw^T + db (terms without a tangent left out)."""
    return tangent_sum(None if tx is None else tx @ w.mT, None if tw is None else x @ tw.mT, tb)


def linear_backward(need, has_bias: bool, x, w, g):
    """(dL/dx, dL/dw, dL/db) of y = x w^T + b given g = dL/dy; ``need`` says which are wanted."""
    # dL/dx = g w ;  dL/dw = g^T x (summed over all leading dims) ;  dL/db = sum g
    gx = gw = gb = None
    if need[0]:
        gx = g @ w
    if need[1] or (has_bias and need[2]):
        rows = math.prod(g.shape[:-1])   # explicit: reshape(-1, 0) is ambiguous for empty tensors
        g2 = g.reshape(rows, g.shape[-1])
        if need[1]:
            gw = g2.mT @ x.reshape(rows, x.shape[-1])
        if has_bias and need[2]:
            gb = g2.sum(0)
    return gx, gw, gb


def _linear_args_ok(x, w, b) -> bool:
    """The hot-path test: True only when every check of ``_check_linear`` would pass."""
    return (isinstance(x, Tensor) and isinstance(w, Tensor) and w.dim() == 2 and x.dim() >= 1
            and x.shape[-1] == w.shape[1] and w.is_floating_point() and x.dtype == w.dtype and x.device == w.device
            and (b is None or (isinstance(b, Tensor) and b.dim() == 1 and b.shape[0] == w.shape[0]
                               and b.dtype == w.dtype and b.device == w.device)))


def _check_linear(op: str, x, w, b) -> None:
    """Raise the error that names what is wrong with linear's arguments (the slow path)."""
    check_tensor(op, "x", x, shape_hint="(*, in_features)")
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least 1 dimension (*, in_features); got a scalar")
    check_tensor(op, "w", w, ndim=2, shape_hint="(out_features, in_features)")
    if w.shape[1] != x.shape[-1]:
        raise ValueError(f"{op}: x has {x.shape[-1]} features in its last dimension but w expects "
                         f"{w.shape[1]} (w has shape (out_features, in_features) = {tuple(w.shape)})")
    if b is not None:
        check_tensor(op, "b", b, ndim=1, shape_hint=f"({w.shape[0]},)")
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"{op}: b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    check_same_dtype_device(op, x=x, w=w, b=b)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Fully connected layer: ``y = x @ w.T + b``.

    Args:
        x: input of shape ``(*, in_features)`` (any leading dimensions).
        w: weight of shape ``(out_features, in_features)``.
        b: optional bias of shape ``(out_features,)``.

    Returns:
        Tensor of shape ``(*, out_features)``.

    Backward: dL/dx = g w, dL/dw = g^T x (summed over the leading dimensions), dL/db = sum g.
    """
    if not _linear_args_ok(x, w, b):   # one cheap test on the hot path; the full checks only to explain a failure
        _check_linear("linear", x, w, b)
    return LinearFunction.call(x, w, b)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one spatial dimension: (before, after) with the total
    max((ceil(size / stride) - 1) stride + kernel - size, 0), before = total // 2 and the rest after
    (at the bottom / right), so the output has ceil(size / stride) entries. For an even input, a
    3-wide kernel and stride 2 the total is 1, all of it after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Pad2dFunction(ManualFunction):
    """y = x zero-padded by (top, bottom, left, right) in its last two dimensions."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, pads):
        top, bottom, left, right = pads
        return F.pad(x, (left, right, top, bottom))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.pads, ctx.hw = inputs[1], inputs[0].shape[-2:]

    @staticmethod
    def backward(ctx, g):
        # dL/dx = g without its padding: g[..., top:top + H, left:left + W]
        top, _, left, _ = ctx.pads
        h, w = ctx.hw
        return g[..., top:top + h, left:left + w], None

    @staticmethod
    def jvp(ctx, t, _):
        # padding is linear: dy = dx zero-padded the same way
        top, bottom, left, right = ctx.pads
        return F.pad(t, (left, right, top, bottom))


def pad2d(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """Zero padding of the last two dimensions (rows, columns) of ``x``.

    Args:
        x: input with at least two dimensions, e.g. ``(N, C, H, W)``.
        pads: ``(top, bottom, left, right)``, non-negative ints (torch's ``F.pad`` takes them as
            (left, right, top, bottom)).

    Returns:
        Tensor of shape ``(..., H + top + bottom, W + left + right)``. Backward: the gradient
        without its padded rows and columns.
    """
    check_tensor("pad2d", "x", x)
    if x.dim() < 2:
        raise ValueError(f"pad2d: x must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    if (not isinstance(pads, (tuple, list)) or len(pads) != 4
            or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads)):
        raise ValueError(f"pad2d: pads must be four ints >= 0 (top, bottom, left, right), got {pads!r}")
    return Pad2dFunction.call(x, tuple(pads))


def _tf_same(op: str, x, w, stride):
    """padding="tf_same": x padded as TensorFlow's "SAME" pads it (``tf_same_padding``) and the padding
    left to the convolution: a symmetric pair on the native path, else (0, 0) after ``pad2d``."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not isinstance(w, Tensor) or w.dim() != 4:
        return x, "tf_same"   # the checks that follow explain what is wrong
    sh, sw = pair(op, "stride", stride)
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be >= 1, got {stride!r}")
    (top, bottom), (left, right) = (tf_same_padding(x.shape[2], w.shape[2], sh),
                                    tf_same_padding(x.shape[3], w.shape[3], sw))
    if top == bottom and left == right:
        return x, (top, left)
    return pad2d(x, (top, bottom, left, right)), (0, 0)


def _conv_padding(op: str, padding, kernel: tuple[int, int]) -> tuple[int, int]:
    if padding == "tf_same":
        raise ValueError(f"{op}: padding='tf_same' needs a 4-D x and w (N, C, H, W) and (out, in, kH, kW)")
    if padding == "same":
        # "same": output size ceil(in / stride) for odd kernels, padded symmetrically by k // 2
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ValueError(f"{op}: padding='same' needs an odd kernel size, got {kernel}; "
                             "pass explicit integer padding instead")
        return (kernel[0] // 2, kernel[1] // 2)
    if padding == "valid":
        return (0, 0)
    return pair(op, "padding", padding)


def _conv_args_ok(x, w, b, in_ch_dim: int, out_ch_dim: int) -> bool:
    """The hot-path test: True only when every check of ``_check_conv`` would pass."""
    return (isinstance(x, Tensor) and isinstance(w, Tensor) and x.dim() == 4 and w.dim() == 4
            and x.shape[1] == w.shape[in_ch_dim] and w.is_floating_point() and x.dtype == w.dtype
            and x.device == w.device
            and (b is None or (isinstance(b, Tensor) and b.dim() == 1 and b.shape[0] == w.shape[out_ch_dim]
                               and b.dtype == w.dtype and b.device == w.device)))


def _check_conv(op: str, x, w, b, in_ch_dim: int, out_ch_dim: int):
    check_tensor(op, "x", x, ndim=4, shape_hint="(N, C, H, W)")
    check_tensor(op, "w", w, ndim=4, shape_hint="(out_channels, in_channels, kH, kW)"
                 if in_ch_dim == 1 else "(in_channels, out_channels, kH, kW)")
    if x.shape[1] != w.shape[in_ch_dim]:
        raise ValueError(f"{op}: x has {x.shape[1]} channels but w (shape {tuple(w.shape)}) expects "
                         f"{w.shape[in_ch_dim]} in dimension {in_ch_dim}")
    if b is not None:
        check_tensor(op, "b", b, ndim=1, shape_hint=f"({w.shape[out_ch_dim]},)")
        if b.shape[0] != w.shape[out_ch_dim]:
            raise ValueError(f"{op}: b must have shape ({w.shape[out_ch_dim]},), got {tuple(b.shape)}")
    check_same_dtype_device(op, x=x, w=w, b=b)


class Conv2dFunction(ManualFunction):
    """y = conv2d(x, w) + b (cross-correlation, as torch)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, stride, padding):
        return F.conv2d(x, w, b, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding = inputs
        ctx.save_for_backward(x, w)
        save_for_jvp(ctx, x, w)
        ctx.conf = (stride, padding, b is not None)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, g, stride, padding), None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, w = ctx.saved_tensors
        stride, padding, _ = ctx.conf
        return conv_jvp(x, w, tx, tw, tb, stride, padding)


def conv_jvp(x, w, tx, tw, tb, stride, padding, output_padding=None):
    """The tangent of a (transposed, when ``output_padding`` is given) convolution, bilinear in (x, w):
    dy = conv(dx, w) + conv(x, dw) + db (broadcast over the spatial dimensions)."""
    if output_padding is None:
        def conv(a, k):
            return F.conv2d(a, k, None, stride, padding)
    else:
        def conv(a, k):
            return F.conv_transpose2d(a, k, None, stride, padding, output_padding)
    return tangent_sum(None if tx is None else conv(tx, w), None if tw is None else conv(x, tw),
                       None if tb is None else tb[:, None, None])


def conv_backward(need, has_bias: bool, x, w, g, stride, padding, output_padding=None):
    """(dL/dx, dL/dw, dL/db) of a 2-D convolution (``output_padding`` None) or transposed convolution
    given g = dL/dy, from one aten.convolution_backward call; ``need`` says which are wanted."""
    # convolution:  dL/dx = conv_transpose2d(g, w) ; dL/dw[o,i] = sum_n corr(x[n,i], g[n,o]) ;
    #               dL/db = sum_{n,h,w} g
    # transposed:   dL/dx = conv2d(g, w) (the transpose of the transpose) ;
    #               dL/dw[i,o] = sum_n corr(g[n,o], x[n,i]) ; dL/db = sum_{n,h,w} g
    mask = [need[0], need[1], has_bias and need[2]]
    if not (mask[0] or mask[1] or mask[2]):
        return None, None, None
    transposed = output_padding is not None
    return aten.convolution_backward(
        g, x, w, [w.shape[1 if transposed else 0]] if has_bias else None, list(stride), list(padding), [1, 1],
        transposed, list(output_padding) if transposed else [0, 0], 1, mask)


def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1,
           padding="same") -> torch.Tensor:
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Args:
        x: input of shape ``(N, C_in, H, W)``.
        w: weight of shape ``(C_out, C_in, kH, kW)``.
        b: optional bias of shape ``(C_out,)``.
        stride: an int or a pair.
        padding: an int, a pair, ``"same"`` (k // 2 on each side, odd kernels; TensorFlow's output
            size ceil(in / stride), on a grid shifted by a pixel where TensorFlow pads one side only),
            ``"tf_same"`` (TensorFlow's "SAME" exactly: ``tf_same_padding``, the odd pixel of the
            total at the bottom / right, any kernel size) or ``"valid"`` (no padding).

    Returns:
        Tensor of shape ``(N, C_out, H_out, W_out)``.
    """
    if isinstance(padding, str) and padding == "tf_same":
        x, padding = _tf_same("conv2d", x, w, stride)
    stride, padding = _conv_args("conv2d", x, w, b, stride, padding)
    return Conv2dFunction.call(x, w, b, stride, padding)


def _conv_args(op: str, x, w, b, stride, padding):
    """Check conv2d's arguments; returns stride and padding as pairs."""
    if not _conv_args_ok(x, w, b, 1, 0):
        _check_conv(op, x, w, b, 1, 0)
    return _conv_settings(op, w, stride, padding)


def _conv_settings(op: str, w, stride, padding):
    """conv2d's stride and padding as pairs (checked)."""
    return pair(op, "stride", stride), _conv_padding(op, padding, (w.shape[2], w.shape[3]))


class ConvTranspose2dFunction(ManualFunction):
    """y = conv_transpose2d(x, w) + b, w of shape (in_channels, out_channels, kH, kW)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, stride, padding, output_padding):
        return F.conv_transpose2d(x, w, b, stride, padding, output_padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, output_padding = inputs
        ctx.save_for_backward(x, w)
        save_for_jvp(ctx, x, w)
        ctx.conf = (stride, padding, output_padding, b is not None)

    @staticmethod
    def backward(ctx, g):
        # see conv_backward (transposed)
        x, w = ctx.saved_tensors
        stride, padding, output_padding, has_bias = ctx.conf
        return (*conv_backward(ctx.needs_input_grad, has_bias, x, w, g, stride, padding, output_padding),
                None, None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, w = ctx.saved_tensors
        stride, padding, output_padding, _ = ctx.conf
        return conv_jvp(x, w, tx, tw, tb, stride, padding, output_padding)


def conv_transpose2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0) -> torch.Tensor:
    """Transposed 2-D convolution (the gradient of ``conv2d`` with respect to its input).

    Args:
        x: input of shape ``(N, C_in, H, W)``.
        w: weight of shape ``(C_in, C_out, kH, kW)``, as in ``torch.nn.functional.conv_transpose2d``.
        b: optional bias of shape ``(C_out,)``.
        stride, padding, output_padding: ints or pairs; ``output_padding`` must be smaller than
            ``stride``.

    Returns:
        Tensor of shape ``(N, C_out, (H - 1) stride - 2 padding + kH + output_padding, ...)``.
    """
    stride, padding, output_padding = _conv_t_args("conv_transpose2d", x, w, b, stride, padding, output_padding)
    return ConvTranspose2dFunction.call(x, w, b, stride, padding, output_padding)


def _conv_t_args(op: str, x, w, b, stride, padding, output_padding):
    """Check conv_transpose2d's arguments; returns stride, padding and output_padding as pairs."""
    if not _conv_args_ok(x, w, b, 0, 1):
        _check_conv(op, x, w, b, 0, 1)
    return _conv_t_settings(op, stride, padding, output_padding)


def _conv_t_settings(op: str, stride, padding, output_padding):
    """conv_transpose2d's stride, padding and output_padding as pairs (checked)."""
    stride = pair(op, "stride", stride)
    padding = pair(op, "padding", padding)
    output_padding = pair(op, "output_padding", output_padding)
    if output_padding[0] >= stride[0] or output_padding[1] >= stride[1]:
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than stride {stride}")
    return stride, padding, output_padding


class MaxPool2dFunction(ManualFunction):
    """y[n,c,i,j] = max over the window of x; returns (y, argmax indices)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kernel, stride, padding):
        return aten.max_pool2d_with_indices(x, list(kernel), list(stride), list(padding), [1, 1], False)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel, stride, padding = inputs
        _, idx = output
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)   # no zero tensor for the indices' gradient
        ctx.save_for_backward(x, idx)
        save_for_jvp(ctx, idx)
        ctx.conf = (kernel, stride, padding)

    @staticmethod
    def backward(ctx, g, _g_idx):
        # dL/dx = g routed to the argmax of each window (summed where windows overlap)
        x, idx = ctx.saved_tensors
        kernel, stride, padding = ctx.conf
        gx = None
        if g is not None and ctx.needs_input_grad[0]:
            gx = aten.max_pool2d_with_indices_backward(g, x, list(kernel), list(stride), list(padding),
                                                       [1, 1], False, idx)
        return gx, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # dy[n,c,i,j] = dx at the argmax of the window (the indices count within each H x W plane)
        (idx,) = ctx.saved_tensors
        return _gather_planes(t, idx), None


def _gather_planes(t, idx):
    """t[n, c] read at the flat positions idx[n, c] of each H x W plane."""
    return t.flatten(-2).gather(-1, idx.flatten(-2)).view(idx.shape)


def max_pool2d(x: torch.Tensor, kernel_size=2, stride=None, padding=0) -> torch.Tensor:
    """2-D max pooling.

    Args:
        x: input of shape ``(N, C, H, W)``.
        kernel_size: an int or a pair.
        stride: an int or a pair (default: ``kernel_size``).
        padding: an int or a pair (padded with -inf).

    Returns:
        Tensor of shape ``(N, C, H_out, W_out)``. The backward routes each gradient to the argmax of
        its window (summed where windows overlap).
    """
    check_tensor("max_pool2d", "x", x, ndim=4, shape_hint="(N, C, H, W)")
    kernel = pair("max_pool2d", "kernel_size", kernel_size)
    stride = kernel if stride is None else pair("max_pool2d", "stride", stride)
    padding = pair("max_pool2d", "padding", padding)
    if x.shape[2] + 2 * padding[0] < kernel[0] or x.shape[3] + 2 * padding[1] < kernel[1]:
        raise ValueError(f"max_pool2d: input of spatial size {tuple(x.shape[2:])} is smaller than the "
                         f"kernel {kernel}")
    return MaxPool2dFunction.call(x, kernel, stride, padding)[0]


class PoolMixFunction(ManualFunction):
    """y = w max_pool(x) + (1 - w) avg_pool(x), w a learnable scalar (the sparse-filtering article's pool)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, kernel, stride):
        mx, idx = aten.max_pool2d_with_indices(x, list(kernel), list(stride), [0, 0], [1, 1], False)
        av = aten.avg_pool2d(x, list(kernel), list(stride), [0, 0], False, True, None)
        return w * mx + (1 - w) * av, mx - av, idx

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, kernel, stride = inputs
        _, diff, idx = output
        ctx.mark_non_differentiable(diff, idx)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, w, diff, idx)
        save_for_jvp(ctx, w, diff, idx)
        ctx.conf = (kernel, stride)

    @staticmethod
    def backward(ctx, g, _g_diff, _g_idx):
        # dL/dx = max-pool backward of w g (to each window's argmax) + avg-pool backward of (1 - w) g
        # (spread evenly over the window); dL/dw = sum g (max - avg)
        # Under create_graph, max - avg is recomputed from x (x read at the saved argmax, minus the
        # window mean), so that a second derivative sees its dependence on x.
        x, w, diff, idx = ctx.saved_tensors
        kernel, stride = ctx.conf
        gx = gw = None
        if g is None:
            return None, None, None, None
        if second_order_possible():
            diff = _gather_planes(x, idx) - aten.avg_pool2d(x, list(kernel), list(stride), [0, 0], False, True, None)
        if ctx.needs_input_grad[0]:
            gx = aten.max_pool2d_with_indices_backward(w * g, x, list(kernel), list(stride), [0, 0], [1, 1],
                                                       False, idx)
            gx = gx + aten.avg_pool2d_backward((1 - w) * g, x, list(kernel), list(stride), [0, 0], False, True,
                                               None)
        if ctx.needs_input_grad[1]:
            gw = (g * diff).sum().reshape(w.shape)
        return gx, gw, None, None

    @staticmethod
    def jvp(ctx, tx, tw, *_):
        # dy = w dmax + (1 - w) davg + dw (max - avg), dmax = dx at each window's argmax, davg = avg_pool(dx)
        w, diff, idx = ctx.saved_tensors
        kernel, stride = ctx.conf
        ty = tangent_sum(None if tx is None else w * _gather_planes(tx, idx) + (1 - w) * aten.avg_pool2d(
            tx, list(kernel), list(stride), [0, 0], False, True, None), None if tw is None else tw.reshape(()) * diff)
        return ty, None, None


def pool_mix(x: torch.Tensor, w: torch.Tensor, kernel_size=2, stride=None) -> torch.Tensor:
    """A learnable mix of max and average pooling: ``w * max_pool2d(x) + (1 - w) * avg_pool2d(x)``
    (no padding), as the sparse-filtering article's encoder pooled.

    Args:
        x: input of shape ``(N, C, H, W)``.
        w: the mixing weight, a tensor with one element (shape ``()`` or ``(1,)``), same dtype and device.
        kernel_size: an int or a pair.
        stride: an int or a pair (default: ``kernel_size``).

    Returns:
        Tensor of shape ``(N, C, H_out, W_out)``. Backward: w g to each window's argmax plus
        (1 - w) g / (window size) to every entry of the window; dw = sum g (max - avg).
    """
    check_tensor("pool_mix", "x", x, ndim=4, shape_hint="(N, C, H, W)")
    if not isinstance(w, torch.Tensor) or w.numel() != 1:
        raise ValueError(f"pool_mix: w must be a tensor with one element (the mixing weight), got "
                         f"{type(w).__name__ if not isinstance(w, torch.Tensor) else tuple(w.shape)}")
    check_same_dtype_device("pool_mix", x=x, w=w)
    kernel = pair("pool_mix", "kernel_size", kernel_size)
    stride = kernel if stride is None else pair("pool_mix", "stride", stride)
    if x.shape[2] < kernel[0] or x.shape[3] < kernel[1]:
        raise ValueError(f"pool_mix: input of spatial size {tuple(x.shape[2:])} is smaller than the kernel {kernel}")
    return PoolMixFunction.call(x, w, kernel, stride)[0]


_UPSAMPLE = {
    "bilinear": (aten.upsample_bilinear2d, aten.upsample_bilinear2d_backward),
    "bicubic": (aten.upsample_bicubic2d, aten.upsample_bicubic2d_backward),
}


class InterpolateFunction(ManualFunction):
    """Bilinear or bicubic resize of (N, C, H, W) to a given (H', W')."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, size, mode, align_corners, scales):
        # scales (h, w) or None: with a scale factor, torch maps output to input coordinates by
        # 1 / scale, not by in / out size; the two differ when the output size is not an exact multiple
        return _UPSAMPLE[mode][0](x, list(size), align_corners, *(scales or (None, None)))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, size, mode, align_corners, scales = inputs
        ctx.conf = (tuple(x.shape), size, mode, align_corners, scales)

    @staticmethod
    def backward(ctx, g):
        # resizing is linear, y = R x, so dL/dx = R^T g (the aten upsample *_backward kernel, with the
        # forward's coordinate mapping)
        in_shape, size, mode, align_corners, scales = ctx.conf
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _UPSAMPLE[mode][1](g.contiguous(), list(size), list(in_shape), align_corners,
                                    *(scales or (None, None)))
        return gx, None, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # resizing is linear: dy = R dx
        _, size, mode, align_corners, scales = ctx.conf
        return _UPSAMPLE[mode][0](t, list(size), align_corners, *(scales or (None, None)))


def interpolate(x: torch.Tensor, size=None, scale_factor=None, mode: str = "bilinear",
                align_corners: bool = False) -> torch.Tensor:
    """Resize images by bilinear or bicubic interpolation (torch's coordinate map).

    Args:
        x: input of shape ``(N, C, H, W)``.
        size: the output size, an int or a pair; or
        scale_factor: a number or a pair (give exactly one of ``size`` and ``scale_factor``).
        mode: ``"bilinear"`` or ``"bicubic"`` (Keys' cubic kernel, a = -0.75).
        align_corners: as in ``torch.nn.functional.interpolate``.

    Returns:
        Tensor of shape ``(N, C, H_out, W_out)``.
    """
    check_tensor("interpolate", "x", x, ndim=4, shape_hint="(N, C, H, W)")
    check_choice("interpolate", "mode", mode, _UPSAMPLE)
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    scales = None
    if size is None:
        sh, sw = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else scale_factor
        if not all(isinstance(s, (int, float)) and s > 0 for s in (sh, sw)):
            raise ValueError(f"interpolate: scale_factor must be a positive number or a pair, got {scale_factor!r}")
        size = (int(math.floor(x.shape[2] * sh)), int(math.floor(x.shape[3] * sw)))
        scales = (float(sh), float(sw))   # as torch: the coordinate mapping uses the scale itself
    size = pair("interpolate", "size", size)
    if min(size) < 1:
        raise ValueError(f"interpolate: output size must be positive, got {size}")
    return InterpolateFunction.call(x, size, mode, bool(align_corners), scales)


class ReshapeFunction(ManualFunction):
    """y = x viewed with a new shape (same elements, same order)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, shape):
        return x.reshape(shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.in_shape, ctx.shape = inputs[0].shape, inputs[1]

    @staticmethod
    def backward(ctx, g):
        # dL/dx = g reshaped back to x's shape
        return g.reshape(ctx.in_shape), None

    @staticmethod
    def jvp(ctx, t, _):
        # dy = dx reshaped
        return t.reshape(ctx.shape)


def reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Reshape ``x`` to ``shape`` (``-1`` allowed once, as in torch).

    Returns:
        Tensor of the new shape; the backward reshapes the gradient back.
    """
    check_tensor("reshape", "x", x, floating=True)
    shape = tuple([int(s) for s in shape])     # list comprehensions, not generators: torch.compile traces them
    known = math.prod([s for s in shape if s != -1])
    if shape.count(-1) > 1 or (shape.count(-1) == 0 and known != x.numel()) or \
            (shape.count(-1) == 1 and (known == 0 or x.numel() % known)):
        raise ValueError(f"reshape: cannot reshape x of shape {tuple(x.shape)} ({x.numel()} elements) "
                         f"into {shape}")
    return ReshapeFunction.call(x, shape)


def flatten(x: torch.Tensor, start_dim: int = 1) -> torch.Tensor:
    """Flatten every dimension from ``start_dim`` on: ``(N, C, H, W)`` -> ``(N, C H W)`` by default.
    """
    check_tensor("flatten", "x", x)
    return reshape(x, tuple(x.shape[:start_dim]) + (-1,))


class ConcatFunction(ManualFunction):
    """y = cat(x_1, ..., x_k) along ``dim``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(dim, *xs):
        return torch.cat(xs, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dim, *xs = inputs
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in xs]

    @staticmethod
    def backward(ctx, g):
        # dL/dx_i = the slice of g that x_i occupies
        return (None, *g.split(ctx.sizes, ctx.dim))

    @staticmethod
    def jvp(ctx, _, *ts):
        # dy = cat(dx_1, ..., dx_k)
        return torch.cat(ts, ctx.dim)


def concat(xs: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Concatenate tensors along ``dim`` (skip connections).

    Args:
        xs: a sequence of tensors whose shapes agree except along ``dim``.
        dim: the dimension to join (default 1, channels).

    Returns:
        The joined tensor; the backward splits the gradient into the inputs' pieces.
    """
    xs = list(xs)
    if not xs:
        raise ValueError("concat: needs at least one tensor")
    for i, x in enumerate(xs):
        check_tensor("concat", f"xs[{i}]", x)
    nd = xs[0].dim()
    if not -nd <= dim < nd:
        raise ValueError(f"concat: dim {dim} out of range for {nd}-D tensors")
    dim = dim % nd
    ref = list(xs[0].shape)
    for i, x in enumerate(xs[1:], 1):
        s = list(x.shape)
        if len(s) != nd or s[:dim] + s[dim + 1:] != ref[:dim] + ref[dim + 1:]:
            raise ValueError(f"concat: xs[{i}] has shape {tuple(s)}, which does not match xs[0] "
                             f"{tuple(ref)} outside dimension {dim}")
    check_same_dtype_device("concat", **{f"xs[{i}]": x for i, x in enumerate(xs)})
    return ConcatFunction.call(dim, *xs)


class GlobalAvgPool2dFunction(ManualFunction):
    """y[n,c] = mean_{h,w} x[n,c,h,w]."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.mean(dim=(-2, -1))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.in_shape = inputs[0].shape

    @staticmethod
    def backward(ctx, g):
        return gap_backward(g, ctx.in_shape)

    @staticmethod
    def jvp(ctx, t):
        # dy = mean_{h,w} dx
        return t.mean(dim=(-2, -1))


def gap_backward(g, in_shape):
    """dL/dx of the global average pool over an input of shape ``in_shape``."""
    # dL/dx[n,c,h,w] = g[n,c] / (H W)
    h, w = in_shape[-2:]
    return g[..., None, None].expand(in_shape) / (h * w)   # one kernel writes the full-size gradient


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """Average over the spatial dimensions: ``(N, C, H, W)`` -> ``(N, C)``.

    Backward: dL/dx[n, c, h, w] = g[n, c] / (H W).
    """
    check_tensor("global_avg_pool2d", "x", x, ndim=4, shape_hint="(N, C, H, W)")
    return GlobalAvgPool2dFunction.call(x)


class AddFunction(ManualFunction):
    """y = sum_i w_i x_i (tensors of one shape, e.g. a data loss and its penalties)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weights, *xs):
        y = xs[0] * weights[0]
        for w, x in zip(weights[1:], xs[1:]):
            y = y + w * x
        return y

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.weights = inputs[0]

    @staticmethod
    def backward(ctx, g):
        # dL/dx_i = w_i g
        return (None, *(g * w if need else None
                        for w, need in zip(ctx.weights, ctx.needs_input_grad[1:])))

    @staticmethod
    def jvp(ctx, _, *ts):
        # dy = sum_i w_i dx_i
        return tangent_sum(*(None if t is None else t * w for w, t in zip(ctx.weights, ts)))


def add(*xs: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted sum ``sum_i weights[i] * xs[i]`` of same-shape tensors (loss terms).

    Args:
        xs: tensors of one shape (scalars for loss terms).
        weights: one number per tensor (default: all 1).

    Returns:
        Tensor of the inputs' shape, as one autograd node (so a model's graph stays manual).
    """
    if not xs:
        raise ValueError("add: needs at least one tensor")
    for i, x in enumerate(xs):
        check_tensor("add", f"xs[{i}]", x)
        if x.shape != xs[0].shape:
            raise ValueError(f"add: xs[{i}] has shape {tuple(x.shape)} but xs[0] has {tuple(xs[0].shape)}")
    weights = (1.0,) * len(xs) if weights is None else tuple(float(w) for w in weights)
    if len(weights) != len(xs):
        raise ValueError(f"add: got {len(weights)} weights for {len(xs)} tensors")
    check_same_dtype_device("add", **{f"xs[{i}]": x for i, x in enumerate(xs)})
    return AddFunction.call(weights, *xs)
