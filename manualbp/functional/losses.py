"""Losses with hand-written backward passes. All reduce to a scalar (mean or sum)."""
from __future__ import annotations

import torch

from ._checks import check_choice, check_same_dtype_device, check_tensor, values_checkable
from ._function import ManualFunction, first, save_for_jvp, second_order_possible, tangent_sum

_REDUCTIONS = ("mean", "sum")


_REDUCTION_ENUM = {"mean": 1, "sum": 2}   # at::Reduction
_NO_IGNORE = -(2 ** 63)   # nll_loss's ignore_index: a value no class index takes, so every row counts


class SoftmaxCrossEntropyFunction(ManualFunction):
    """L = reduce_n( -log softmax(z)[n, t_n] ) for class indices t, or -sum_c t[n,c] log softmax(z)[n,c]
    for a probability / one-hot target. ``apply`` returns (L, log softmax(z), total weight), the eager
    twin L alone (``eager_forward``); only L is differentiable. A floating target that requires grad
    gets its gradient too (class indices are constants)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, target, reduction):
        logp = torch.log_softmax(logits, dim=1)  # aten subtracts the row-wise max before exponentiating
        if target.is_floating_point():
            per_row = -(target * logp).sum(1)
            return (per_row.mean() if reduction == "mean" else per_row.sum()), logp, logp.new_empty(0)
        # class indices: -logp[n, t_n] reduced, by aten's nll_loss (it raises for an index out of range)
        loss, total_weight = torch.ops.aten.nll_loss_forward(logp, target, None, _REDUCTION_ENUM[reduction],
                                                             _NO_IGNORE)
        return loss, logp, total_weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target, reduction = inputs
        _, logp, total_weight = output
        ctx.mark_non_differentiable(logp, total_weight)
        ctx.set_materialize_grads(False)   # no zero tensors for the gradients of log softmax and the weight
        ctx.save_for_backward(logp, target, total_weight, logits)
        save_for_jvp(ctx, logp, target)
        ctx.reduction = reduction

    @staticmethod
    def eager_forward(ctx, logits, target, reduction):
        """The eager twin's forward (see ``ManualFunction``): L only; log softmax and the total weight
        are saved, not returned."""
        loss, logp, total_weight = SoftmaxCrossEntropyFunction.forward(logits, target, reduction)
        ctx.save_for_backward(logp, target, total_weight, logits)
        save_for_jvp(ctx, logp, target)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx, g, *_):
        # dL/dz[n,c] = g (softmax(z)[n,c] sum_c' t[n,c'] - t[n,c]) / N   (N only for "mean");
        # for class indices t[n,c] = [c == t_n], so sum_c' t = 1 and the -1 lands at (n, t_n):
        #   dL/dlogp = -g [c == t_n] / N (aten.nll_loss_backward), then
        #   dL/dz = dL/dlogp - softmax(z) sum_c dL/dlogp (aten._log_softmax_backward_data), fused kernels
        # dL/dt[n,c] = -g log softmax(z)[n,c] / N   (floating targets only)
        # Under create_graph, log softmax(z) is recomputed from the saved logits (the same formulas on
        # differentiable ops), so that a second derivative sees softmax's curvature diag(p) - p p^T.
        logp, t, total_weight, z = ctx.saved_tensors
        gz = gt = None
        if g is None:
            return None, None, None
        if second_order_possible():
            logp = torch.log_softmax(z, dim=1)
            if not t.is_floating_point():
                t = (t[:, None] == torch.arange(z.shape[1], device=z.device)).to(z.dtype)   # one-hot, vmap-safe
        if not t.is_floating_point():
            if ctx.needs_input_grad[0]:
                glogp = torch.ops.aten.nll_loss_backward(g, logp, t, None, _REDUCTION_ENUM[ctx.reduction],
                                                         _NO_IGNORE, total_weight)
                gz = torch.ops.aten._log_softmax_backward_data(glogp, logp, 1, logp.dtype)
            return gz, None, None
        scale = g / logp.shape[0] if ctx.reduction == "mean" else g
        if ctx.needs_input_grad[0]:
            gz = (logp.exp() * t.sum(1, keepdim=True) - t) * scale
        if ctx.needs_input_grad[1]:
            gt = -logp * scale
        return gz, gt, None

    @staticmethod
    def jvp(ctx, tz, tt, _):
        # dL = reduce_n( -sum_c (t[n,c] dlogp[n,c] + dt[n,c] logp[n,c]) ),
        # dlogp[n,c] = dz[n,c] - sum_c' softmax(z)[n,c'] dz[n,c']   (class indices: t one-hot, no dt)
        logp, t = ctx.saved_tensors
        per_row = None
        if tz is not None:
            dlogp = tz - (logp.exp() * tz).sum(1, keepdim=True)
            per_row = -(t * dlogp).sum(1) if t.is_floating_point() else -dlogp.gather(1, t[:, None])[:, 0]
        if tt is not None and t.is_floating_point():
            per_row = tangent_sum(per_row, -(tt * logp).sum(1))
        if per_row is None:
            return None, None, None
        return (per_row.mean() if ctx.reduction == "mean" else per_row.sum()), None, None


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          reduction: str = "mean") -> torch.Tensor:
    """Softmax followed by cross-entropy, from logits.

    Args:
        logits: scores of shape ``(N, C)``.
        target: class indices of shape ``(N,)`` (an integer dtype), or probabilities / one-hot rows
            of shape ``(N, C)`` (a floating dtype; if it requires grad it gets the gradient
            ``-log softmax(logits)``, scaled by 1 / N for ``"mean"``).
        reduction: ``"mean"`` (over the N rows) or ``"sum"``.

    Returns:
        A scalar tensor. The log-softmax subtracts the row-wise maximum, so large logits stay finite.

    Backward: dL/dlogits = (softmax(logits) sum_c t - t) g / N (N for ``"mean"`` only).
    """
    if (isinstance(logits, torch.Tensor) and isinstance(target, torch.Tensor) and logits.dim() == 2
            and target.dim() == 1 and target.dtype == torch.int64 and target.shape[0] == logits.shape[0]
            and target.device == logits.device and logits.is_floating_point() and reduction in _REDUCTIONS):
        # the hot path (class indices, all else valid): no range scan; an index out of range makes
        # nll_loss raise, and that failure is explained by the range check
        try:
            return first(SoftmaxCrossEntropyFunction.call(logits, target, reduction))
        except (RuntimeError, IndexError):   # aten's nll_loss raises IndexError for a class out of range
            _check_ce_target_range(logits, target)   # raises the named error if the indices are the cause
            raise
    check_tensor("softmax_cross_entropy", "logits", logits, ndim=2, shape_hint="(N, C)")
    check_choice("softmax_cross_entropy", "reduction", reduction, _REDUCTIONS)
    n, c = logits.shape
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"softmax_cross_entropy: target must be a tensor, got {type(target).__name__}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"softmax_cross_entropy: a floating target must have the logits' shape "
                             f"{tuple(logits.shape)}; got {tuple(target.shape)} (pass class indices as "
                             "an integer tensor of shape (N,))")
        check_same_dtype_device("softmax_cross_entropy", logits=logits, target=target)
    else:
        if target.dim() != 1 or target.shape[0] != n:
            raise ValueError(f"softmax_cross_entropy: class-index target must have shape ({n},), got "
                             f"{tuple(target.shape)}")
        if target.device != logits.device:
            raise ValueError(f"softmax_cross_entropy: target is on {target.device} but logits on "
                             f"{logits.device}")
        _check_ce_target_range(logits, target)
        target = target.long()
    return first(SoftmaxCrossEntropyFunction.call(logits, target, reduction))


def _check_ce_target_range(logits, target) -> None:
    """Class indices must lie in [0, C). Checked on CPU only (on CUDA it would cost a host-device sync
    every step), and not under torch.compile / torch.func transforms, which cannot branch on data."""
    n, c = logits.shape
    if n and target.device.type == "cpu" and values_checkable(target):
        lo, hi = (int(v) for v in torch.aminmax(target))
        if lo < 0 or hi >= c:
            raise ValueError(f"softmax_cross_entropy: class indices must lie in [0, {c - 1}], got range "
                             f"[{lo}, {hi}]") from None


class MSEFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(pred, target, reduction):
        return torch.ops.aten.mse_loss(pred, target, _REDUCTION_ENUM[reduction])

    @staticmethod
    def setup_context(ctx, inputs, output):
        pred, target, reduction = inputs
        ctx.save_for_backward(pred, target)
        save_for_jvp(ctx, pred, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g):
        # L = reduce (p - t)^2 ; dL/dp = 2 (p - t) g / n (n only for "mean") ; dL/dt = -dL/dp
        # (aten.mse_loss_backward evaluates dL/dp, fused)
        pred, target = ctx.saved_tensors
        if second_order_possible():   # the same formula on differentiable ops (aten's kernel has no forward-mode rule
            #                           for a target tangent)
            d = 2 * (pred - target) * (g / pred.numel() if ctx.reduction == "mean" else g)
        else:
            d = torch.ops.aten.mse_loss_backward(g, pred, target, _REDUCTION_ENUM[ctx.reduction])
        return (d if ctx.needs_input_grad[0] else None,
                -d if ctx.needs_input_grad[1] else None, None)

    @staticmethod
    def jvp(ctx, tp, tt, _):
        # dL = sum( 2 (p - t) / n o (dp - dt) )   (n only for "mean")
        pred, target = ctx.saved_tensors
        d = torch.ops.aten.mse_loss_backward(pred.new_ones(()), pred, target, _REDUCTION_ENUM[ctx.reduction])
        return (d * tangent_sum(tp, None if tt is None else -tt)).sum()


class SoftmaxBCEFunction(ManualFunction):
    """L = -sum_{n,k} [t log p + (1 - t) log(1 - p)], p = softmax(z) row-wise (``reduction`` "sum"), or
    that over N ("mean"): the summed binary cross-entropy of softmax outputs that the optimizers
    article's TensorFlow cases minimised. ``apply`` returns (L, p)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, target, reduction):
        p = torch.softmax(logits, dim=1)
        logp = torch.log(p).clamp_min(-100)
        log1mp = torch.log1p(-p).clamp_min(-100)
        total = -(target * logp + (1 - target) * log1mp).sum()
        return (total / logits.shape[0] if reduction == "mean" else total), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target, reduction = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1], target, logits)
        save_for_jvp(ctx, output[1], target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g, *_):
        # dL/dp = -(t / p - (1 - t) / (1 - p)) (scaled by g, and 1 / N for "mean");
        # through the softmax: dL/dz = p o (dL/dp - sum_k (dL/dp)_k p_k)  (row-wise)
        # dL/dt = -(log p - log(1 - p))
        # Under create_graph, p = softmax(z) is recomputed from the saved logits (differentiable ops).
        p, t, z = ctx.saved_tensors
        if g is None:
            return None, None, None
        if second_order_possible():
            p = torch.softmax(z, dim=1)
        scale = g / p.shape[0] if ctx.reduction == "mean" else g
        gz = gt = None
        if ctx.needs_input_grad[0]:
            gz = _sbce_grad_z(p, t, scale)
        if ctx.needs_input_grad[1]:
            gt = _sbce_grad_t(p, scale)
        return gz, gt, None

    @staticmethod
    def jvp(ctx, tz, tt, _):
        # L is a scalar: dL = sum(dL/dz o dz) + sum(dL/dt o dt), the backward's formulas at g = 1
        p, t = ctx.saved_tensors
        scale = 1.0 / p.shape[0] if ctx.reduction == "mean" else 1.0
        dl = tangent_sum(None if tz is None else (_sbce_grad_z(p, t, scale) * tz).sum(),
                         None if tt is None else (_sbce_grad_t(p, scale) * tt).sum())
        return dl, None


def _sbce_grad_z(p, t, scale):
    """dL/dz of the softmax BCE: p o (dL/dp - sum_k (dL/dp)_k p_k), dL/dp = -(t / p - (1 - t) / (1 - p)) scale."""
    gp = -(t / p - (1 - t) / (1 - p)) * scale
    return p * (gp - (gp * p).sum(1, keepdim=True))


def _sbce_grad_t(p, scale):
    """dL/dt of the softmax BCE: -(log p - log(1 - p)) scale (the logs clamped at -100)."""
    return -(torch.log(p).clamp_min(-100) - torch.log1p(-p).clamp_min(-100)) * scale


def softmax_binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Binary cross-entropy of softmax outputs, summed over classes and examples: the loss the
    optimizers article's TensorFlow cases minimised (``-sum t log p + (1 - t) log(1 - p)`` with
    ``p = softmax(logits)``) and every case's reported cost.

    Args:
        logits: scores of shape ``(N, C)``.
        target: probabilities or one-hot rows of shape ``(N, C)`` (may require grad).
        reduction: ``"sum"`` (the article's, default) or ``"mean"`` (over the N rows).

    Returns:
        A scalar tensor. The logarithms are clamped at -100.
    """
    check_tensor("softmax_binary_cross_entropy", "logits", logits, ndim=2, shape_hint="(N, C)")
    check_tensor("softmax_binary_cross_entropy", "target", target)
    check_choice("softmax_binary_cross_entropy", "reduction", reduction, _REDUCTIONS)
    if target.shape != logits.shape:
        raise ValueError(f"softmax_binary_cross_entropy: target must have the logits' shape {tuple(logits.shape)} "
                         f"(one-hot rows for class indices), got {tuple(target.shape)}")
    check_same_dtype_device("softmax_binary_cross_entropy", logits=logits, target=target)
    return SoftmaxBCEFunction.call(logits, target, reduction)[0]


class SumSquaredErrorFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(pred, target):
        d = pred - target
        return 0.5 * (d * d).sum() / pred.shape[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        save_for_jvp(ctx, *inputs)

    @staticmethod
    def backward(ctx, g):
        # L = (1 / N) sum_n 0.5 sum_k (p_nk - t_nk)^2 ; dL/dp = g (p - t) / N ; dL/dt = -dL/dp
        pred, target = ctx.saved_tensors
        d = (pred - target) * (g / pred.shape[0])
        return (d if ctx.needs_input_grad[0] else None, -d if ctx.needs_input_grad[1] else None)

    @staticmethod
    def jvp(ctx, tp, tt):
        # dL = sum( (p - t) o (dp - dt) ) / N
        pred, target = ctx.saved_tensors
        return ((pred - target) * tangent_sum(tp, None if tt is None else -tt)).sum() / pred.shape[0]


def sum_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The zca article's loss: ``0.5 sum_k (pred_k - target_k)^2`` per example, averaged over the batch.

    Args:
        pred: outputs of shape ``(N, ...)`` (the article's: the output layer's activations).
        target: of ``pred``'s shape (one-hot rows for classification; may require grad).

    Returns:
        A scalar tensor. Backward: dL/dpred = g (pred - target) / N, the gradient the article's code
        fed to its output layer (y - t) for g = N.
    """
    check_tensor("sum_squared_error", "pred", pred)
    check_tensor("sum_squared_error", "target", target)
    if pred.dim() < 1 or pred.shape[0] < 1:
        raise ValueError(f"sum_squared_error: pred must have a batch dimension with at least one example, got "
                         f"shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"sum_squared_error: pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                         "give targets of the outputs' shape (one-hot rows for classes)")
    check_same_dtype_device("sum_squared_error", pred=pred, target=target)
    return SumSquaredErrorFunction.call(pred, target)


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error ``(pred - target)^2``, averaged (``"mean"``) or summed (``"sum"``) over every element.

    Args:
        pred, target: tensors of one shape (``target`` may require grad).
        reduction: ``"mean"`` or ``"sum"``.

    Returns:
        A scalar tensor.
    """
    check_tensor("mse", "pred", pred)
    check_tensor("mse", "target", target)
    check_choice("mse", "reduction", reduction, _REDUCTIONS)
    if pred.shape != target.shape:
        raise ValueError(f"mse: pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                         "they must match")
    check_same_dtype_device("mse", pred=pred, target=target)
    return MSEFunction.call(pred, target, reduction)


class BinaryCrossEntropyFunction(ManualFunction):
    """L = reduce( -(t log p + (1 - t) log(1 - p)) ), logs clamped at -100 as in torch."""

    generate_vmap_rule = True

    @staticmethod
    def forward(p, t, reduction):
        return torch.ops.aten.binary_cross_entropy(p, t, None, _REDUCTION_ENUM[reduction])

    @staticmethod
    def setup_context(ctx, inputs, output):
        p, t, reduction = inputs
        ctx.save_for_backward(p, t)
        save_for_jvp(ctx, p, t)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g):
        # dL/dp = g (p - t) / max(p (1 - p), 1e-12) / n  (the 1e-12 floor is torch's; evaluated by
        # aten.binary_cross_entropy_backward, fused) ; dL/dt = g (log(1 - p) - log p) / n
        p, t = ctx.saved_tensors
        gp = gt = None
        if ctx.needs_input_grad[0]:
            gp = torch.ops.aten.binary_cross_entropy_backward(g, p, t, None, _REDUCTION_ENUM[ctx.reduction])
        if ctx.needs_input_grad[1]:
            scale = g / p.numel() if ctx.reduction == "mean" else g
            gt = (torch.log1p(-p).clamp_min(-100) - torch.log(p).clamp_min(-100)) * scale
        return gp, gt, None

    @staticmethod
    def jvp(ctx, tp, tt, _):
        # L is a scalar: dL = sum(dL/dp o dp) + sum(dL/dt o dt), the backward's formulas at g = 1
        p, t = ctx.saved_tensors
        red = _REDUCTION_ENUM[ctx.reduction]
        dl = (torch.ops.aten.binary_cross_entropy_backward(p.new_ones(()), p, t, None, red) * tp).sum()
        if tt is not None:
            scale = 1.0 / p.numel() if ctx.reduction == "mean" else 1.0
            dl = dl + ((torch.log1p(-p).clamp_min(-100) - torch.log(p).clamp_min(-100)) * scale * tt).sum()
        return dl


def binary_cross_entropy(p: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy ``-(t log p + (1 - t) log(1 - p))`` on probabilities.

    Args:
        p: probabilities in [0, 1] (a sigmoid output), any shape.
        target: targets in [0, 1] of ``p``'s shape (may require grad).
        reduction: ``"mean"`` or ``"sum"`` over every element.

    Returns:
        A scalar tensor. The logarithms are clamped at -100, as torch's.
    """
    check_tensor("binary_cross_entropy", "p", p)
    check_tensor("binary_cross_entropy", "target", target)
    check_choice("binary_cross_entropy", "reduction", reduction, _REDUCTIONS)
    if p.shape != target.shape:
        raise ValueError(f"binary_cross_entropy: p has shape {tuple(p.shape)} but target "
                         f"{tuple(target.shape)}; they must match")
    check_same_dtype_device("binary_cross_entropy", p=p, target=target)
    return BinaryCrossEntropyFunction.call(p, target, reduction)
