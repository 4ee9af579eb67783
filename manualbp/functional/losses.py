"""Losses with hand-written backward passes. All reduce to a scalar (mean or sum)."""
from __future__ import annotations

import torch

from ._checks import check_choice, check_same_dtype_device, check_tensor

_REDUCTIONS = ("mean", "sum")


class SoftmaxCrossEntropyFunction(torch.autograd.Function):
    """L = reduce_n( -sum_c t[n,c] log softmax(z)[n,c] ), t one-hot or a probability row."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, target_probs, reduction):
        z = logits - logits.amax(dim=1, keepdim=True)        # row-wise max for stability
        logp = z - torch.logsumexp(z, dim=1, keepdim=True)
        per_row = -(target_probs * logp).sum(1)
        return per_row.mean() if reduction == "mean" else per_row.sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target_probs, reduction = inputs
        ctx.save_for_backward(logits, target_probs)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g):
        # dL/dz[n,c] = g (softmax(z)[n,c] * sum_c' t[n,c'] - t[n,c]) / N   (N only for "mean")
        logits, t = ctx.saved_tensors
        p = torch.softmax(logits, dim=1)
        scale = g / logits.shape[0] if ctx.reduction == "mean" else g
        return (p * t.sum(1, keepdim=True) - t) * scale, None, None


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          reduction: str = "mean") -> torch.Tensor:
    """Softmax followed by cross-entropy.

    ``target`` is either class indices of shape (N,) (integer dtype) or a probability /
    one-hot matrix of the logits' shape (N, C).
    """
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
        probs = target
    else:
        if target.dim() != 1 or target.shape[0] != n:
            raise ValueError(f"softmax_cross_entropy: class-index target must have shape ({n},), got "
                             f"{tuple(target.shape)}")
        if target.device != logits.device:
            raise ValueError(f"softmax_cross_entropy: target is on {target.device} but logits on "
                             f"{logits.device}")
        # range check on CPU only: on CUDA it would cost a host-device sync every step
        if n and target.device.type == "cpu" and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(f"softmax_cross_entropy: class indices must lie in [0, {c - 1}], got range "
                             f"[{int(target.min())}, {int(target.max())}]")
        probs = torch.nn.functional.one_hot(target, c).to(logits.dtype)
    return SoftmaxCrossEntropyFunction.apply(logits, probs, reduction)


class MSEFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(pred, target, reduction):
        d = (pred - target) ** 2
        return d.mean() if reduction == "mean" else d.sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pred, target, reduction = inputs
        ctx.save_for_backward(pred, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g):
        # L = reduce (p - t)^2 ; dL/dp = 2 (p - t) g / n ; dL/dt = -dL/dp
        pred, target = ctx.saved_tensors
        scale = 2 * g / pred.numel() if ctx.reduction == "mean" else 2 * g
        d = (pred - target) * scale
        return (d if ctx.needs_input_grad[0] else None,
                -d if ctx.needs_input_grad[1] else None, None)


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean (or summed) squared error."""
    check_tensor("mse", "pred", pred)
    check_tensor("mse", "target", target)
    check_choice("mse", "reduction", reduction, _REDUCTIONS)
    if pred.shape != target.shape:
        raise ValueError(f"mse: pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                         "they must match")
    check_same_dtype_device("mse", pred=pred, target=target)
    return MSEFunction.apply(pred, target, reduction)


class BinaryCrossEntropyFunction(torch.autograd.Function):
    """L = reduce( -(t log p + (1 - t) log(1 - p)) ), logs clamped at -100 as in torch."""

    generate_vmap_rule = True

    @staticmethod
    def forward(p, t, reduction):
        lp = torch.log(p).clamp_min(-100)
        l1p = torch.log1p(-p).clamp_min(-100)
        e = -(t * lp + (1 - t) * l1p)
        return e.mean() if reduction == "mean" else e.sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        p, t, reduction = inputs
        ctx.save_for_backward(p, t)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, g):
        # dL/dp = g (p - t) / max(p (1 - p), 1e-12) / n  (the 1e-12 floor is torch's) ;
        # dL/dt = g (log(1 - p) - log p) / n
        p, t = ctx.saved_tensors
        scale = g / p.numel() if ctx.reduction == "mean" else g
        gp = gt = None
        if ctx.needs_input_grad[0]:
            gp = (p - t) / (p * (1 - p)).clamp_min(1e-12) * scale
        if ctx.needs_input_grad[1]:
            gt = (torch.log1p(-p).clamp_min(-100) - torch.log(p).clamp_min(-100)) * scale
        return gp, gt, None


def binary_cross_entropy(p: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on probabilities ``p`` in [0, 1] (e.g. a sigmoid output)."""
    check_tensor("binary_cross_entropy", "p", p)
    check_tensor("binary_cross_entropy", "target", target)
    check_choice("binary_cross_entropy", "reduction", reduction, _REDUCTIONS)
    if p.shape != target.shape:
        raise ValueError(f"binary_cross_entropy: p has shape {tuple(p.shape)} but target "
                         f"{tuple(target.shape)}; they must match")
    check_same_dtype_device("binary_cross_entropy", p=p, target=target)
    return BinaryCrossEntropyFunction.apply(p, target, reduction)
