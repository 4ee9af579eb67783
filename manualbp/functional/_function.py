"""The base class of every op: a ``torch.autograd.Function`` written in the ``setup_context`` style
(so that ``torch.func`` transforms and ``torch.compile`` can use it) with a cheap eager path.

Why a second path: for a Function with ``setup_context``, ``Function.apply`` binds the call's
arguments to ``forward``'s signature with ``inspect.signature`` on every call (tens of microseconds
of pure Python, more than a small op's kernel). A Function written in the older style
(``forward(ctx, *args)``) is not bound, but cannot run under ``vmap``. So each ``ManualFunction``
subclass gets an *eager twin*: an old-style Function whose forward calls the subclass's own
``forward`` and ``setup_context`` and whose backward *is* the subclass's backward (the same
function object). ``call`` takes the twin in plain eager mode, ``_func`` (the class with the
hand-written forward-mode rule ``jvp``) under a torch.func transform, and the class itself (its
``jvp`` left as autograd.Function's, which Dynamo requires) while torch.compile traces; all run the
same math and the same hand-written backward; tests compare the paths on every registry entry.

Ops call ``XFunction.call(*args)`` with every argument positional (no defaults are bound).
"""
from __future__ import annotations

import functools

import torch
from torch.autograd import forward_ad as _fwad

_grad_enabled = torch._C.is_grad_enabled
_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


class RefusedDerivative(RuntimeError):
    """Raised where an op's backward is differentiated (reverse or forward mode) but the op provides
    no second derivative, or where forward mode reaches an op that has no forward-mode rule."""


class _Refuse(torch.autograd.Function):
    """Identity on the results of a once-differentiable backward, tied to every tensor that backward
    read (the incoming gradients and the saved tensors, which hold the op's differentiable inputs): a
    reverse pass through it or a tangent reaching it raises ``RefusedDerivative`` with the op's
    reason. (torch's ``once_differentiable`` returns its result as a constant when no incoming
    gradient requires grad, and under torch.func transforms or forward-over-reverse it can return a
    silently wrong second derivative; this never does.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(message, n, *tensors):
        return tuple(t.clone() for t in tensors[:n])

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[0]

    @staticmethod
    def backward(ctx, *grads):
        raise RefusedDerivative(ctx.message)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RefusedDerivative(ctx.message)


def once_differentiable(reason: str):
    """Mark a backward as not differentiable again, for ``reason`` (said in the error).

    When no graph is recorded and no forward-mode level is open (a plain ``backward()``), the
    backward runs as written, at no extra cost. Otherwise (``create_graph=True``, torch.func
    ``grad`` / ``jacrev`` / ``jacfwd`` / ``hessian``, forward-over-reverse) it runs without recording
    and its results pass through ``_Refuse``: the first-order result is right, and any attempt to
    differentiate it raises ``RefusedDerivative`` naming the op and the reason."""
    def decorate(fn):
        owner = fn.__qualname__.split(".")[0]
        message = (f"{owner}: a second derivative through this op is not provided ({reason}). Differentiate "
                   "a model without it, or use first-order gradients only (create_graph=False, no torch.func "
                   "hessian / jacfwd over its gradient).")

        @functools.wraps(fn)
        def wrapper(ctx, *args):
            if not second_order_possible():
                return fn(ctx, *args)
            with torch.no_grad():
                out = fn(ctx, *args)
            return refuse_second_order(message, (*args, *ctx.saved_tensors), out)
        return wrapper
    return decorate


def _jvp_level() -> bool:
    """Whether a forward-mode level is open: ``torch.autograd.forward_ad.dual_level`` or a torch.func jvp
    transform (jacfwd, hessian)."""
    if _fwad._current_level >= 0:
        return True
    if not _transforms_active():
        return False
    stack = torch._C._functorch.get_interpreter_stack() or ()
    return any(i.key() == torch._C._functorch.TransformType.Jvp for i in stack)


def save_for_jvp(ctx, *tensors) -> None:
    """``ctx.save_for_forward(*tensors)`` when a forward-mode level is open (the jvp rule reads them), and
    nothing otherwise: saving them always costs the eager path a call and breaks torch.func's generated vmap
    rule for the backward of a Function with extra outputs."""
    if _jvp_level():
        ctx.save_for_forward(*tensors)


def second_order_possible() -> bool:
    """Whether a backward running now can itself be differentiated: a graph is being recorded
    (create_graph, torch.func grad transforms) or a forward-mode level is open."""
    return _grad_enabled() or _fwad._current_level >= 0


def refuse_second_order(message: str, read: tuple, out):
    """A backward's results ``out`` (a tensor or a tuple with Nones) passed through ``_Refuse``, tied to
    the tensors in ``read`` (what the backward read; an op that refuses saves its differentiable inputs,
    so that every path from its result back to them passes through the refusal)."""
    anchors = [a for a in read if isinstance(a, torch.Tensor)]
    single = not isinstance(out, tuple)
    outs = (out,) if single else out
    where = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor)]
    refused = _Refuse.apply(message, len(where), *(outs[i] for i in where), *anchors)
    full = list(outs)
    for i, r in zip(where, refused):
        full[i] = r
    return full[0] if single else tuple(full)


def no_forward_rule(reason: str):
    """A ``jvp`` that refuses forward mode for ``reason`` (the op then never returns a wrong tangent)."""
    def jvp(ctx, *tangents):
        raise RefusedDerivative(f"{ctx_name(ctx)}: forward-mode differentiation (jvp, jacfwd, forward-over-reverse "
                                f"Hessians) is not provided for this op: {reason}")
    return staticmethod(jvp)


def ctx_name(ctx) -> str:
    """The op's Function name from a ctx (its backward node's class name, without 'Backward')."""
    return type(ctx).__name__.removesuffix("Backward")


def tangent_sum(*terms):
    """The sum of the tangent terms that are not None (an input without a tangent contributes none);
    None when every term is."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


class ManualFunction(torch.autograd.Function):
    """Base class: subclasses define static ``forward(*args)``, ``setup_context(ctx, inputs, output)``,
    ``backward(ctx, *grads)`` and ``jvp(ctx, *tangents)`` (the forward-mode rule: a tangent for each
    output from a tangent for each input, from what ``setup_context`` passed to
    ``ctx.save_for_forward``), and are called through ``call``. Both paths (the eager twin and
    ``apply``) run the same ``jvp``."""

    _eager: type[torch.autograd.Function]
    _func: type[torch.autograd.Function]
    _with_jvp_of = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_with_jvp_of") is not None:
            return
        # torch.compile (Dynamo) refuses to trace a Function that defines jvp, so the class itself keeps
        # autograd.Function's jvp and ``call`` applies it while compiling (forward-mode AD does not run under
        # torch.compile); under a torch.func transform ``call`` applies ``_func``, the same Function with the
        # forward-mode rule
        rule = cls.jvp
        cls._func = type(cls.__name__, (cls,), {"jvp": staticmethod(rule), "_with_jvp_of": cls,
                                                "__module__": cls.__module__,
                                                "__qualname__": f"{cls.__qualname__}._func"})
        cls.jvp = staticmethod(torch.autograd.Function.jvp)
        forward, setup_context = cls.forward, cls.setup_context

        def eager_forward(ctx, *args):
            out = forward(*args)
            setup_context(ctx, args, out)
            return out

        # A subclass whose forward returns extra outputs only for setup_context (intermediates that
        # ``apply`` must return to hand them over) may write its own ``eager_forward(ctx, *args)``:
        # forward and setup_context in one pass, the intermediates saved directly, only the result
        # returned (no extra output tensors, no zero gradients materialized for them). ``call`` then
        # returns a tuple under ``apply`` and a tensor in eager mode: callers take ``first(out)``.
        own = cls.__dict__.get("eager_forward")
        jvp = rule
        if own is not None:
            eager_forward = own.__func__ if isinstance(own, staticmethod) else own
            apply_jvp = jvp

            def jvp(ctx, *tangents):   # the twin returns the result alone: its tangent alone
                return apply_jvp(ctx, *tangents)[0]
        # the same __name__, so that graphs show one node name (e.g. ReLUFunctionBackward) on both paths
        cls._eager = type(cls.__name__, (torch.autograd.Function,), {
            "forward": staticmethod(eager_forward),
            "backward": staticmethod(cls.backward),
            "jvp": staticmethod(jvp),
            "__doc__": f"The eager twin of {cls.__qualname__} (same forward, setup_context and backward).",
            "__module__": __name__,
            "__qualname__": f"{cls.__qualname__}._eager",
        })

    @staticmethod
    def jvp(ctx, *tangents):
        raise RefusedDerivative(f"{ctx_name(ctx)}: no forward-mode rule is written for this op")

    @classmethod
    def call(cls, *args):
        """Apply the op: the eager twin in plain eager mode, ``apply`` under torch.compile or a
        torch.func transform (the order of the tests matters: dynamo folds ``is_compiling`` and
        never sees the functorch query)."""
        if _is_compiling():
            return cls.apply(*args)
        if _transforms_active():
            return cls._func.apply(*args)
        return cls._eager.apply(*args)


def first(out):
    """The result of ``call`` on a Function with its own ``eager_forward``: the first output of
    ``apply``'s tuple, or the eager twin's single output."""
    return out[0] if type(out) is tuple else out
