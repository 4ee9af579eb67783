"""Normalisation without affine parameters (centering, standardisation, batch norm) and the per-channel
affine transform the normalisation layers add after it."""
from __future__ import annotations

import torch

from ._checks import check_momentum, check_positive, check_same_dtype_device, check_tensor
from ._function import ManualFunction, save_for_jvp, second_order_possible, tangent_sum


def _check_dim(op: str, x: torch.Tensor, dim: int) -> int:
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{op}: dim {dim} out of range for a {x.dim()}-D input")
    return dim % x.dim()


class CenterFunction(ManualFunction):
    """y = x - mean(x, dim)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        return x - x.mean(dim, keepdim=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]

    @staticmethod
    def backward(ctx, g):
        # dL/dx = g - mean(g, dim)   (the exact Jacobian I - 11^T/N applied to g; not g (1 - 1/N))
        return g - g.mean(ctx.dim, keepdim=True), None

    @staticmethod
    def jvp(ctx, t, _):
        # dy = dx - mean(dx, dim)
        return t - t.mean(ctx.dim, keepdim=True)


def center(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Subtract the mean over ``dim``: ``x - mean(x, dim)``.

    Args:
        x: input tensor.
        dim: 0 centres each dimension over the batch; 1 centres each example.

    Returns:
        Tensor of ``x``'s shape. Backward: g - mean(g, dim).
    """
    check_tensor("center", "x", x)
    dim = _check_dim("center", x, dim)
    return CenterFunction.call(x, dim)


class StandardizeFunction(ManualFunction):
    """y = (x - mean) / sqrt(var + eps) over ``dim`` (biased variance)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim, eps):
        mu = x.mean(dim, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim, keepdim=True)
        return xc * torch.rsqrt(var + eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, dim, eps = inputs
        ctx.save_for_backward(x, output)
        save_for_jvp(ctx, x, output)
        ctx.conf = (dim, eps)

    @staticmethod
    def backward(ctx, g):
        # dL/dx = (g - mean(g) - y mean(g y)) / sqrt(var + eps)   (means over dim)
        x, y = ctx.saved_tensors
        dim, eps = ctx.conf
        xc = x - x.mean(dim, keepdim=True)
        inv_std = torch.rsqrt((xc * xc).mean(dim, keepdim=True) + eps)
        return (g - g.mean(dim, keepdim=True) - y * (g * y).mean(dim, keepdim=True)) * inv_std, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # dxc = dx - mean(dx) ; dy = (dxc - y mean(y dxc)) / sqrt(var + eps)   (the Jacobian is symmetric)
        x, y = ctx.saved_tensors
        dim, eps = ctx.conf
        xc = x - x.mean(dim, keepdim=True)
        inv_std = torch.rsqrt((xc * xc).mean(dim, keepdim=True) + eps)
        tc = t - t.mean(dim, keepdim=True)
        return (tc - y * (tc * y).mean(dim, keepdim=True)) * inv_std


def standardize(x: torch.Tensor, eps: float = 1e-5, dim: int = 0) -> torch.Tensor:
    """Zero mean and unit (biased) variance over ``dim``: ``(x - mean) / sqrt(var + eps)``.

    Args:
        x: input tensor.
        eps: added to the variance.
        dim: the dimension the statistics run over (0: over the batch).

    Returns:
        Tensor of ``x``'s shape.
    """
    check_tensor("standardize", "x", x)
    check_positive("standardize", "eps", eps)
    dim = _check_dim("standardize", x, dim)
    return StandardizeFunction.call(x, dim, float(eps))


class BatchNormFunction(ManualFunction):
    """Batch norm without affine parameters over all dimensions but the channel (dim 1).

    Training: y = (x - mu_B) / sqrt(var_B + eps) with batch statistics; running statistics are
    updated in place as in torch (running = (1 - momentum) running + momentum batch, unbiased
    variance). Eval: y = (x - running_mean) / sqrt(running_var + eps). The forward is aten's fused
    native_batch_norm; returns (y, mu, 1 / sqrt(var + eps)), only y differentiable.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, running_mean, running_var, training, momentum, eps):
        y, mu, inv_std = torch.ops.aten.native_batch_norm(x, None, None, running_mean, running_var, training,
                                                          momentum, eps)
        if not training:
            # eval: the backward reads the running statistics. Copies (C values each), so that a training
            # forward run before this backward, which updates the buffers in place, cannot change them
            mu, inv_std = running_mean.clone(), running_var.clone()
        return y, mu, inv_std

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, training, eps = inputs[0], inputs[3], inputs[5]
        _, mu, inv_std = output
        ctx.mark_non_differentiable(mu, inv_std)
        ctx.set_materialize_grads(False)   # no zero tensors for the two statistics' gradients
        ctx.save_for_backward(x, mu, inv_std)
        save_for_jvp(ctx, output[0], inv_std)
        ctx.conf = (training, eps)

    @staticmethod
    def backward(ctx, g, *_):
        # training: dL/dx = (g - mean(g) - y mean(g y)) / sqrt(var_B + eps)   (means over N, H, W)
        # eval:     dL/dx = g / sqrt(running_var + eps)
        # (training: aten.native_batch_norm_backward from the saved statistics, fused)
        x, a, b = ctx.saved_tensors   # training: batch mean, 1 / sqrt(var_B + eps); eval: copies of the buffers
        training, eps = ctx.conf
        if g is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if training and second_order_possible():
            # create_graph: the same formula on differentiable ops, the statistics recomputed from x, so
            # that a second derivative sees their dependence on x
            dims = [0, *range(2, x.dim())]
            xc = x - x.mean(dims, keepdim=True)
            inv_std = torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
            y = xc * inv_std
            gx = (g - g.mean(dims, keepdim=True) - y * (g * y).mean(dims, keepdim=True)) * inv_std
        elif training:
            gx = torch.ops.aten.native_batch_norm_backward(g, x, None, None, None, a, b, True, eps,
                                                            [True, False, False])[0]
        else:   # b = running_var: g / sqrt(running_var + eps), broadcast over the channel dimension
            gx = g * (b + eps).rsqrt().reshape(-1, *([1] * (x.dim() - 2)))
        return gx, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # training: dxc = dx - mean(dx) ; dy = (dxc - y mean(y dxc)) / sqrt(var_B + eps)   (means over N, H, W)
        # eval:     dy = dx / sqrt(running_var + eps)
        y, b = ctx.saved_tensors   # b: 1 / sqrt(var_B + eps) (training) or a copy of running_var (eval)
        training, eps = ctx.conf
        shape = (-1, *([1] * (t.dim() - 2)))
        if not training:
            return t * (b + eps).rsqrt().reshape(shape), None, None
        dims = [0, *range(2, t.dim())]
        tc = t - t.mean(dims, keepdim=True)
        return (tc - y * (tc * y).mean(dims, keepdim=True)) * b.reshape(shape), None, None


def _check_batch_norm(x, running_mean, running_var, training, momentum, eps) -> None:
    check_tensor("batch_norm", "x", x, ndim=(2, 4), shape_hint="(N, C) or (N, C, H, W)")
    check_positive("batch_norm", "eps", eps)
    check_momentum("batch_norm", momentum)
    c = x.shape[1]
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is None:
            if not training:
                raise ValueError(f"batch_norm: {name} is required in eval mode (training=False)")
            continue
        check_tensor("batch_norm", name, r, ndim=1, shape_hint=f"({c},)")
        if r.shape[0] != c or r.dtype != x.dtype or r.device != x.device:
            raise ValueError(f"batch_norm: {name} must be a ({c},) tensor with x's dtype and device; got "
                             f"shape {tuple(r.shape)}, {r.dtype}, {r.device}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if training and x.numel() // c <= 1:
        raise ValueError(f"batch_norm: training needs more than one value per channel; got input of shape "
                         f"{tuple(x.shape)} (use a batch of at least 2, or training=False)")


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Batch norm without affine parameters.

    Training: ``y = (x - mean_B) / sqrt(var_B + eps)`` with the batch's statistics over every
    dimension but 1; the running statistics are updated in place as torch does
    (``running = (1 - momentum) running + momentum batch``, unbiased variance). Eval:
    ``y = (x - running_mean) / sqrt(running_var + eps)``.

    Args:
        x: input of shape ``(N, C)`` or ``(N, C, H, W)``.
        running_mean, running_var: buffers of shape ``(C,)`` with ``x``'s dtype and device, updated
            in place in training mode; None is allowed in training mode only.
        training: use the batch's statistics (and update the running ones).
        momentum: the weight of the new batch, torch's convention (TensorFlow's decay 0.9 is 0.1).
        eps: added to the variance.

    Returns:
        Tensor of ``x``'s shape.
    """
    _check_batch_norm(x, running_mean, running_var, training, momentum, eps)
    return BatchNormFunction.call(x, running_mean, running_var, bool(training), float(momentum),
                                   float(eps))[0]


def _channel_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A (C,) vector shaped (1, C, 1, ...) to broadcast over dimension 1 of an ``ndim``-D tensor."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class ChannelAffineFunction(ManualFunction):
    """y = x * w[c] + b[c] over dimension 1 (the channels) of x (N, C, ...)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b):
        y = x * _channel_view(w, x.dim())
        return y if b is None else y + _channel_view(b, x.dim())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        save_for_jvp(ctx, x, w)
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx, g):
        # dL/dx = g w[c] ;  dL/dw_c = sum over all but dimension 1 of g x ;  dL/db_c = the same sum of g
        x, w = ctx.saved_tensors
        dims = [d for d in range(g.dim()) if d != 1]
        gx = g * _channel_view(w, g.dim()) if ctx.needs_input_grad[0] else None
        gw = (g * x).sum(dims) if ctx.needs_input_grad[1] else None
        gb = g.sum(dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        # dy = dx w[c] + x dw[c] + db[c]
        x, w = ctx.saved_tensors
        n = x.dim()
        return tangent_sum(None if tx is None else tx * _channel_view(w, n),
                           None if tw is None else x * _channel_view(tw, n),
                           None if tb is None else _channel_view(tb, n).expand_as(x))


def channel_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A per-channel scale and shift, the affine transform of the normalisation layers:
    ``y[:, c] = weight[c] * x[:, c] + bias[c]``.

    Args:
        x: input of shape ``(N, C)`` or ``(N, C, H, W)`` (any rank >= 2; dimension 1 holds the channels).
        weight: ``(C,)``, the scale (the layers start it at 1).
        bias: ``(C,)`` or None, the shift (the layers start it at 0).

    Returns:
        Tensor of ``x``'s shape. Backward: dL/dx = g w, dL/dw and dL/db the sums of g x and g over
        every dimension but 1.
    """
    check_tensor("channel_affine", "x", x)
    if x.dim() < 2:
        raise ValueError(f"channel_affine: x must have at least 2 dimensions (N, C, ...); got shape {tuple(x.shape)}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is None and name == "bias":
            continue
        check_tensor("channel_affine", name, v, ndim=1, shape_hint=f"({x.shape[1]},)")
        if v.shape[0] != x.shape[1]:
            raise ValueError(f"channel_affine: {name} must have one entry per channel ({x.shape[1]}, dimension 1 of "
                             f"x); got shape {tuple(v.shape)}")
        check_same_dtype_device("channel_affine", x=x, **{name: v})
    return ChannelAffineFunction.call(x, weight, bias)
