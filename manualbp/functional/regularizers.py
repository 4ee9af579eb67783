"""The regularizer family: a penalty lam * sum R(theta) over a weight tensor whose backward
is lam * R'(theta) * g, written by hand for every R.

``REGULARIZERS`` is the table: name -> Regularizer(R, R', formula, note). Where the articles
coded a derivative that is not R's true derivative, the op keeps the true one (so gradcheck
passes) and the article's version is kept as ``article_grad`` and used only with
``regularize(..., article_grad=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ._checks import check_tensor
from ._function import ManualFunction, RefusedDerivative, refuse_second_order, save_for_jvp, second_order_possible

aten = torch.ops.aten
EPS = 1e-7  # the articles' epsilon


@dataclass(frozen=True)
class Regularizer:
    name: str
    value: Callable[[torch.Tensor], torch.Tensor]       # R(theta), element-wise
    grad: Callable[[torch.Tensor], torch.Tensor]        # R'(theta), element-wise, the true derivative
    formula: str
    note: str = ""
    article_grad: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    smooth_at_zero: bool = True      # False: R' jumps at 0 (gradcheck uses symmetric differences there)
    defined_at_zero: bool = True     # False: R or R' is infinite / undefined at 0
    # for R' that needs a transcendental of the forward: value_saving(t) = (sum R(t), s) with s an
    # intermediate of R's own computation, saved by the op; grad_from_saved(t, s, c) = c * R'(t), c the
    # 0-dim upstream factor lam * g (vmap may batch it, so in-place ops never take c as their other
    # operand), without recomputing s. The fast path only: under create_graph R' is recomputed from t,
    # so that double backward sees s's dependence on t.
    value_saving: Optional[Callable[[torch.Tensor], tuple]] = None
    grad_from_saved: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None


# The derivative formulas build each result in place on a fresh temporary (one full-size kernel per
# step, no extra allocations) when no graph is being recorded. Under create_graph (double backward)
# they compute the same values out of place, so autograd can differentiate the backward itself.
# A derivative that is constant returns a 0-dim tensor (expanded later).

def _fast(t) -> bool:
    """No graph is recorded through this backward and no forward-mode level is open: in-place kernels and
    saved intermediates are safe."""
    return not second_order_possible()


def _sec2_neg(t):  # -(1 - tanh^2(t)) = tanh^2(t) - 1
    th = torch.tanh(t)
    return th.mul_(th).sub_(1) if _fast(t) else th * th - 1


def _sabs(t):  # sqrt(t^2 + eps)
    return (t * t).add_(EPS).sqrt_() if _fast(t) else torch.sqrt(t * t + EPS)


def _t_over_sabs(t):  # t / sqrt(t^2 + eps)
    return (t * t).add_(EPS).rsqrt_().mul_(t) if _fast(t) else t * torch.rsqrt(t * t + EPS)


def _elastic_grad(t):  # (sign(t) + t / sqrt(t^2 + eps)) / 2
    return _t_over_sabs(t).add_(torch.sign(t)).mul_(0.5) if _fast(t) else (_t_over_sabs(t) + torch.sign(t)) * 0.5


def _neg_tanh_sq_grad(t):  # -(1 - tanh^2(t^2)) 2 t
    return _sec2_neg(t * t).mul_(t).mul_(2) if _fast(t) else _sec2_neg(t * t) * t * 2


def _neg_tanh_abs_grad(t):  # -(1 - tanh^2(|t|)) sign(t)
    return _sec2_neg(t.abs()).mul_(torch.sign(t)) if _fast(t) else _sec2_neg(t.abs()) * torch.sign(t)


def _abs_sin_grad(t):  # sign(sin t) cos t
    return torch.sin(t).sign_().mul_(torch.cos(t)) if _fast(t) else torch.sign(torch.sin(t)) * torch.cos(t)


def _tanh_saving(f):
    """sum R = -sum tanh(f(t)), saving tanh(f(t))."""
    def value_saving(t):
        th = torch.tanh(f(t))
        return -th.sum(), th
    return value_saving


def _neg_tanh_scaled(th, c):  # c * -(1 - tanh^2): aten's fused tanh_backward, one kernel
    return aten.tanh_backward((-c).expand_as(th), th)


def _log_sq_saving(t):  # sum R = sum t log(t^2), saving log(t^2)
    lg = torch.log(t * t)
    return (t * lg).sum(), lg


def _sin_saving(t):  # sum R = sum |sin t| = <sin t, sign(sin t)>, saving sign(sin t)
    sn = torch.sin(t)
    sg = sn.sign()
    return torch.dot(sn.reshape(-1), sg.reshape(-1)), sg


_TABLE = [
    Regularizer("l1", torch.abs, torch.sign, "|t|", smooth_at_zero=False),
    Regularizer("l2", lambda t: t * t, lambda t: 2 * t, "t^2"),
    Regularizer("linear", lambda t: t, lambda t: t.new_ones(()), "t"),
    Regularizer("smooth_abs", _sabs, _t_over_sabs, "sqrt(t^2 + eps)",
                note="the article wrote R = sqrt(t^2) but coded R' = t / sqrt(t^2 + eps); eps is kept in "
                     "R so that R' is its true derivative"),
    Regularizer("elastic", lambda t: (t.abs() + _sabs(t)) / 2,
                _elastic_grad, "(|t| + sqrt(t^2 + eps)) / 2",
                smooth_at_zero=False),
    Regularizer("abs_smooth", lambda t: torch.sqrt(t.abs() ** 2 + EPS),
                _t_over_sabs, "sqrt(|t|^2 + eps)  (|t| sign(t) = t)",
                note="eps kept in R as for smooth_abs"),
    Regularizer("ratio", torch.sign, lambda t: t.new_zeros(()), "sqrt(t^2) / t = sign(t)",
                note="a control: R' = 0 almost everywhere; R is taken as sign(t), 0 at t = 0. The gradient-pov "
                     "article coded R' = (t^2 / (sqrt(t^2) + eps) - sqrt(t^2)) / (t^2 + eps), about -1 for "
                     "|t| < 1e-4 and about -eps / t^2 beyond (article_grad=True)",
                article_grad=lambda t: (t * t / (torch.sqrt(t * t) + EPS) - torch.sqrt(t * t)) / (t * t + EPS),
                defined_at_zero=False),
    Regularizer("neg_log1p_sq", lambda t: -torch.log1p(t * t), lambda t: -2 * t / (1 + t * t),
                "-log(1 + t^2)"),
    Regularizer("neg_tanh", lambda t: -torch.tanh(t), _sec2_neg, "-tanh(t)",
                value_saving=_tanh_saving(lambda t: t), grad_from_saved=lambda t, th, c: _neg_tanh_scaled(th, c)),
    Regularizer("neg_tanh_sq", lambda t: -torch.tanh(t * t), _neg_tanh_sq_grad,
                "-tanh(t^2)", value_saving=_tanh_saving(lambda t: t * t),
                grad_from_saved=lambda t, th, c: _neg_tanh_scaled(th, 2 * c).mul_(t)),
    Regularizer("neg_tanh_abs", lambda t: -torch.tanh(t.abs()),
                _neg_tanh_abs_grad, "-tanh(|t|)", smooth_at_zero=False,
                value_saving=_tanh_saving(torch.abs),
                grad_from_saved=lambda t, th, c: _neg_tanh_scaled(th, c).mul_(t.sign())),
    Regularizer("neg_tanh_abs_sq", lambda t: -torch.tanh(t.abs() ** 2),
                _neg_tanh_sq_grad, "-tanh(|t|^2)  (R' = -(1 - tanh^2(t^2)) 2 |t| sign(t))",
                value_saving=_tanh_saving(lambda t: t * t),
                grad_from_saved=lambda t, th, c: _neg_tanh_scaled(th, 2 * c).mul_(t)),
    Regularizer("sin", torch.sin, torch.cos, "sin(t)"),
    Regularizer("abs_sin", lambda t: torch.sin(t).abs(), _abs_sin_grad,
                "|sin(t)|", smooth_at_zero=False, value_saving=_sin_saving,
                grad_from_saved=lambda t, sg, c: (torch.cos(t) * c).mul_(sg)),
    Regularizer("log_sq", lambda t: torch.log(t * t), lambda t: 2 / t, "log(t^2)",
                note="the article coded R' = 2 / (t + eps); the op uses the true 2 / t",
                article_grad=lambda t: 2 / (t + EPS), defined_at_zero=False),
    Regularizer("x_log_sq", lambda t: t * torch.log(t * t), lambda t: torch.log(t * t) + 2,
                "t log(t^2)", defined_at_zero=False, value_saving=_log_sq_saving,
                grad_from_saved=lambda t, lg, c: (lg * c).add_(2 * c)),
]

REGULARIZERS: dict[str, Regularizer] = {r.name: r for r in _TABLE}
CODED = tuple(r.name for r in _TABLE if r.article_grad is not None)   # those with an article's coded derivative
# names that are the same function as another (R and R' equal for every t), as the articles wrote them: tanh(|t|^2)
# is tanh(t^2) and sqrt(|t|^2 + eps) is sqrt(t^2 + eps); weights-pov's H repeats its F, gradient-pov's F its D
SAME_FUNCTION: dict[str, str] = {"neg_tanh_abs_sq": "neg_tanh_sq", "abs_smooth": "smooth_abs"}

# the letters of each article, mapped to the names above ("none" = no regularizer)
ARTICLE_LETTERS: dict[str, dict[str, str]] = {
    "weights-pov": {"Z": "none", "A": "l1", "B": "l2", "C": "smooth_abs", "D": "neg_log1p_sq", "E": "neg_tanh",
                    "F": "neg_tanh_sq", "G": "neg_tanh_abs", "H": "neg_tanh_abs_sq", "I": "sin", "J": "abs_sin",
                    "K": "log_sq", "L": "x_log_sq"},
    "gradient-pov": {"Z": "none", "A": "l2", "B": "elastic", "C": "linear", "D": "smooth_abs", "E": "l1",
                     "F": "abs_smooth", "G": "ratio", "H": "neg_tanh", "I": "neg_tanh_sq", "J": "neg_log1p_sq"},
}


class RegularizeFunction(ManualFunction):
    """P = lam * sum R(w)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(w, name, lam, article_grad):
        # returns (P, s): s an intermediate of R saved for the backward (an empty tensor when R has none)
        reg = REGULARIZERS[name]
        if reg.value_saving is not None and not article_grad:
            total, saved = reg.value_saving(w)
            return lam * total, saved
        return lam * reg.value(w).sum(), w.new_empty(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        w, name, lam, article_grad = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(w, output[1])
        save_for_jvp(ctx, w)
        ctx.conf = (name, lam, article_grad)

    @staticmethod
    def backward(ctx, g, _g_saved):
        # dP/dw = lam * R'(w) * g   (R' from the table; the article's R' when article_grad; from the
        # saved intermediate s when R has one and no graph is being recorded)
        w, saved = ctx.saved_tensors
        name, lam, article_grad = ctx.conf
        reg = REGULARIZERS[name]
        if saved.numel() and _fast(w):
            return reg.grad_from_saved(w, saved, g * lam), None, None, None
        if article_grad and reg.article_grad is not None:
            d = (reg.article_grad(w) * (g * lam)).expand_as(w)
            if second_order_possible():   # not a derivative: a derivative of it would mean nothing
                return refuse_second_order(f"RegularizeFunction: a second derivative through this op is not provided "
                                           f"(regularize[{name}, article_grad]: the backward is the article's coded "
                                           "derivative, not R's)", (g, w), (d, None, None, None))
            return d, None, None, None
        return (reg.grad(w) * (g * lam)).expand_as(w), None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # dP = lam sum(R'(w) o dw)
        (w,) = ctx.saved_tensors
        name, lam, article_grad = ctx.conf
        if article_grad:
            raise RefusedDerivative(f"regularize[{name}, article_grad]: forward mode is not provided: the backward is "
                                    "the article's coded derivative, not R's, and a tangent would have to be either "
                                    "R's (disagreeing with the backward) or the coded one (not a derivative of P)")
        return lam * (REGULARIZERS[name].grad(w) * t).sum(), None


def regularize(w: torch.Tensor, name: str, lam: float = 1.0, article_grad: bool = False) -> torch.Tensor:
    """A weight penalty: ``lam * sum R(w)`` for the regularizer ``name``.

    Args:
        w: a weight tensor, any shape.
        name: a key of ``REGULARIZERS`` (``l1``, ``l2``, ``neg_tanh``, ...), or ``"none"`` (gives 0).
        lam: the weight, a number >= 0.
        article_grad: the articles' coded derivative where it is not R's: for ``log_sq`` 2 / (w + eps)
            instead of 2 / w; for ``ratio`` (w^2 / (|w| + eps) - |w|) / (w^2 + eps) instead of 0 (not a
            gradient: about -1 for |w| < 1e-4). Other regularizers have none: True is an error.

    Returns:
        A scalar tensor. Backward: lam R'(w) g, with R' from ``REGULARIZERS``.
    """
    check_tensor("regularize", "w", w)
    if name != "none" and name not in REGULARIZERS:
        raise ValueError(f"regularize: unknown regularizer {name!r}; choose one of "
                         f"{['none'] + sorted(REGULARIZERS)}")
    if not isinstance(lam, (int, float)) or lam != lam or lam < 0:
        raise ValueError(f"regularize: lam must be a number >= 0, got {lam!r}")
    if not isinstance(article_grad, bool):
        raise ValueError(f"regularize: article_grad must be True or False, got {article_grad!r}")
    if article_grad and (name == "none" or REGULARIZERS[name].article_grad is None):
        raise ValueError(f"regularize: article_grad=True asks for the articles' coded derivative, but regularizer "
                         f"{name!r} has none (it is R's own derivative); those with one: {sorted(CODED)}. Set "
                         "article_grad=False.")
    if name == "none" or lam == 0:
        return w.new_zeros(())
    return RegularizeFunction.call(w, name, float(lam), article_grad)[0]
