"""Dilated back-propagation (article 002): gradients from later layers fed directly into earlier ones.

Let g_k be the gradient that layer k passes to its input in this backward pass (the gradient of
the loss with respect to layer k's input, computed from whatever gradient layer k itself was fed).
Plain back-propagation feeds layer l with g_{l+1}. Dilated back-propagation feeds it
``g_{l+1} + r_t * combine(g_j for j in rule[l])``, ``combine`` a sum or an element-wise product,
with the rate r_t = P / (1 + D t), t the epoch counted from 0. The weight gradient of layer l is
computed from that fed gradient, and so is g_l, which later rules use. The six cases of the
optimizers article, for a network of five layers:

=====  =====================================================  =========  ======
case   layer l <- g_{l+1} + r * ...                           P          D
=====  =====================================================  =========  ======
1      L3: g5;  L2: g4;  L1: g3                               1000       0.08
2      as 1 (the experiment pairs it with SGD + noise)        1000       0.08
3      L3: g5;  L2: g4 + g5;  L1: g3 + g4 + g5                1000       0.08
4      L3: g5;  L2: g4 * g5;  L1: g3 * g4 * g5                1000       0.08
5      as 3                                                   800        0.064
6      L3: g5;  L2: g4 + g5;  L1: g3 * g4 * g5                500        0.04
=====  =====================================================  =========  ======

Mechanism: an identity Function, ``dilation_tap(x, tape, k)``, sits on the input of every layer
k >= 2 (the output of layer k - 1). Its backward receives g_k, records it on the tape shared by the
taps of one forward pass, and returns ``g_k + r * combine(recorded g_j, j in rule[k - 1])``: the
gradient fed into layer k - 1. Autograd runs the taps of a chain from the last layer down, so every
g_j a rule names (j > k) is on the tape when tap k runs. With no rule for layer k - 1 the tap is the
identity in both directions (it only records), which is what gradcheck checks; with a rule the
backward is, by design, not the gradient of anything.
"""
from __future__ import annotations

import torch

from ._checks import check_kwargs
from ._function import ManualFunction, RefusedDerivative, refuse_second_order, second_order_possible

# rule: {layer l: ("sum" | "prod", (j, ...))}: layer l is fed g_{l+1} + r * combine(g_j)
_R1 = {3: ("sum", (5,)), 2: ("sum", (4,)), 1: ("sum", (3,))}
_R3 = {3: ("sum", (5,)), 2: ("sum", (4, 5)), 1: ("sum", (3, 4, 5))}
_R4 = {3: ("prod", (5,)), 2: ("prod", (4, 5)), 1: ("prod", (3, 4, 5))}
_R6 = {3: ("sum", (5,)), 2: ("sum", (4, 5)), 1: ("prod", (3, 4, 5))}   # the authors' code feeds layer 3 too
CASES = {
    1: {"rules": _R1, "P": 1000.0, "D": 0.08},
    2: {"rules": _R1, "P": 1000.0, "D": 0.08},
    3: {"rules": _R3, "P": 1000.0, "D": 0.08},
    4: {"rules": _R4, "P": 1000.0, "D": 0.08},
    5: {"rules": _R3, "P": 800.0, "D": 0.064},
    6: {"rules": _R6, "P": 500.0, "D": 0.04},
}


class DilationTape:
    """Shared state of one forward pass: the rules, the current rate, the recorded g_k."""

    def __init__(self, rules: dict, rate: float):
        self.rules, self.rate, self.grads = rules, float(rate), {}


class DilatedTap(ManualFunction):
    """Identity on the input of layer k; its backward implements the dilated rule of layer k - 1."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, tape: DilationTape, k: int):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.tape, ctx.k = inputs
        ctx.save_for_backward(inputs[0])   # only so that a second derivative through a dilated rule reaches the refusal

    @staticmethod
    def backward(ctx, g):
        # g = g_k (the gradient layer k passed to its input). Record it; feed layer k - 1 with
        # g_k + r * combine(g_j, j in rule[k - 1])  (the plain g_k when layer k - 1 has no rule).
        tape, k = ctx.tape, ctx.k
        tape.grads[k] = g
        rule = tape.rules.get(k - 1)
        if rule is None or tape.rate == 0.0:
            return g, None, None
        op, js = rule
        missing = [j for j in js if j not in tape.grads]
        if missing:
            raise RuntimeError(f"dilated back-propagation: layer {k - 1}'s rule needs g_{missing} before g_{k}; "
                               "the taps must sit on a chain of layers run in order")
        extra = tape.grads[js[0]]
        for j in js[1:]:
            extra = extra + tape.grads[j] if op == "sum" else extra * tape.grads[j]
        out = g + tape.rate * extra
        if second_order_possible():   # a dilated rule is not a gradient: its derivative means nothing
            return refuse_second_order(_NOT_A_GRADIENT.format(k=k), (g, *ctx.saved_tensors, *tape.grads.values()),
                                       (out, None, None))
        return out, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # the tap is the identity: dy = dx, where layer k - 1 has no rule (its backward is then the identity too)
        tape, k = ctx.tape, ctx.k
        if tape.rules.get(k - 1) is not None and tape.rate != 0.0:
            raise RefusedDerivative(_NOT_A_GRADIENT.format(k=k) + "; forward mode has no counterpart of it")
        return t.view_as(t)


_NOT_A_GRADIENT = ("DilatedTap (layer {k}): a dilated back-propagation rule feeds gradients of later layers back, "
                   "which is not the derivative of the forward")


def dilation_tap(x: torch.Tensor, tape: DilationTape, k: int) -> torch.Tensor:
    return DilatedTap.call(x, tape, k)


def dilation_rate(P: float, D: float, epoch: int) -> float:
    """r_t = P / (1 + D t), t the epoch counted from 0."""
    return P / (1.0 + D * epoch)


def make_dilation(spec: dict | None, num_layers: int) -> dict | None:
    """Validate a model's ``dilation`` setting {"case": 1..6, "P": ..., "D": ...} (P and D default to
    the case's) into {"rules", "P", "D", "case"}; None for plain back-propagation."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"dilation must be None or {{'case': 1-6, 'P': ..., 'D': ...}}, got {spec!r}")

    def _setting(case=None, P=None, D=None):
        return case, P, D
    check_kwargs("dilation", _setting, spec)
    case = spec.get("case")
    if case not in CASES:
        raise ValueError(f"dilation.case must be one of {sorted(CASES)} (the table in manualbp.functional.dilated), "
                         f"got {case!r}")
    out = dict(CASES[case], case=case)
    for key in ("P", "D"):
        v = spec.get(key)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"dilation.{key} must be a number >= 0, got {v!r}")
            out[key] = float(v)
    need = max(max(js) for _, js in out["rules"].values())
    if num_layers < need:
        raise ValueError(f"dilation case {case} names layer {need}'s gradient, but the model has {num_layers} layers")
    return out
