"""Sparse filtering (Ngiam et al., NIPS 2011) as a scalar cost with a hand-written backward.

z has shape (N examples, K features). F = act(z) with act = soft-abs sqrt(z^2 + eps) or ELU;
each feature (column) is L2-normalised across the examples, then each example (row) across
the features; the cost is the sum of the entries (an L1 norm of the normalised features), or their
mean (``reduction="mean"``, the sparse-filtering article's code).
In Ngiam's (features x examples) layout these are the rows and the columns.
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_positive, check_tensor
from ._function import ManualFunction, save_for_jvp, second_order_possible

SPARSE_ACTIVATIONS = ("soft_abs", "elu")


class SparseFilteringFunction(ManualFunction):
    """cost = sum(F2) (or its mean), F1 = F / sqrt(sum_n F^2 + eps), F2 = F1 / sqrt(sum_k F1^2 + eps).

    Returns (cost, F, F1, F2, n1, n2); only the cost is differentiable.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, eps, activation, mean):
        f, f1, f2, n1, n2 = _normalised(z, eps, activation)
        return (f2.mean() if mean else f2.sum()), f, f1, f2, n1, n2

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, eps, activation, mean = inputs
        _, f, f1, f2, n1, n2 = output
        ctx.mark_non_differentiable(f, f1, f2, n1, n2)
        ctx.save_for_backward(z, f, f1, f2, n1, n2)
        save_for_jvp(ctx, z, f, f1, f2, n1, n2)
        ctx.activation, ctx.mean, ctx.eps = activation, mean, eps

    @staticmethod
    def backward(ctx, g, *_):
        # see _cost_grad; under create_graph F, F1, F2, n1 and n2 are recomputed from z (the forward's
        # formulas on differentiable ops), so that a second derivative sees their dependence on z
        z, *inter = ctx.saved_tensors
        if second_order_possible():
            inter = _normalised(z, ctx.eps, ctx.activation)
        return _cost_grad(z, *inter, g, ctx.activation, ctx.mean), None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # the cost is a scalar: dL = sum(dL/dz o dz), dL/dz the backward's formula at g = 1
        z, *inter = ctx.saved_tensors
        return (_cost_grad(z, *inter, z.new_ones(()), ctx.activation, ctx.mean) * t).sum(), *(None,) * 5


def _normalised(z, eps, activation):
    """F = act(z), F1 = F / n1 (n1 = sqrt(sum_n F^2 + eps), per feature), F2 = F1 / n2 (n2 = sqrt(sum_k F1^2 + eps),
    per example): (F, F1, F2, n1, n2)."""
    if activation == "soft_abs":
        f = torch.sqrt(z * z + eps)
    else:
        f = torch.where(z > 0, z, torch.expm1(z))
    n1 = torch.sqrt((f * f).sum(0, keepdim=True) + eps)
    f1 = f / n1
    n2 = torch.sqrt((f1 * f1).sum(1, keepdim=True) + eps)
    return f, f1, f1 / n2, n1, n2


def _cost_grad(z, f, f1, f2, n1, n2, g, activation, mean):
    """dL/dz of the cost given g = dL/dcost."""
    # L2 normalisation y = x / sqrt(sum x^2 + eps) has dL/dx = (dL/dy - y sum(dL/dy y)) / norm:
    #   dL/dF2 = g (g / (N K) for the mean) ; dL/dF1 = (g - F2 sum_k(g F2)) / n2 ;
    #   dL/dF = (dL/dF1 - F1 sum_n(dL/dF1 F1)) / n1
    #   soft-abs: dL/dz = dL/dF z / F ;  ELU: dL/dz = dL/dF (1 if z > 0 else F + 1)
    g2 = (g / f2.numel() if mean else g).expand_as(f2)
    g1 = (g2 - f2 * (g2 * f2).sum(1, keepdim=True)) / n2
    gf = (g1 - f1 * (g1 * f1).sum(0, keepdim=True)) / n1
    if activation == "soft_abs":
        return gf * z / f
    return gf * torch.where(z > 0, torch.ones_like(f), f + 1)


def sparse_filtering(z: torch.Tensor, eps: float = 1e-8, activation: str = "soft_abs",
                     reduction: str = "sum") -> torch.Tensor:
    """The sparse-filtering cost of a feature batch (Ngiam et al., 2011).

    f = activation(z); each feature (column) is normalised to unit l2 norm over the examples, then
    each example (row) to unit l2 norm over the features; the cost is the sum of the result (its l1
    norm, the normalised features being non-negative for ``soft_abs``).

    Args:
        z: features of shape ``(N, K)`` (N examples, K features).
        eps: added inside each norm and to the soft absolute value.
        activation: ``"soft_abs"`` (sqrt(z^2 + eps)) or ``"elu"``.
        reduction: ``"sum"`` of the normalised entries, or their ``"mean"`` (the sum / (N K): the
            sparse-filtering article's code, with eps 1e-20).

    Returns:
        A scalar tensor.
    """
    check_tensor("sparse_filtering", "z", z, ndim=2, shape_hint="(N examples, K features)")
    check_positive("sparse_filtering", "eps", eps)
    check_choice("sparse_filtering", "activation", activation, SPARSE_ACTIVATIONS)
    check_choice("sparse_filtering", "reduction", reduction, ("sum", "mean"))
    return SparseFilteringFunction.call(z, float(eps), activation, reduction == "mean")[0]
