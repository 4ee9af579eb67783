"""The base class of every op: a ``torch.autograd.Function`` written in the ``setup_context`` style
(so that ``torch.func`` transforms and ``torch.compile`` can use it) with a cheap eager path.

Why a second path: for a Function with ``setup_context``, ``Function.apply`` binds the call's
arguments to ``forward``'s signature with ``inspect.signature`` on every call (tens of microseconds
of pure Python, more than a small op's kernel). A Function written in the older style
(``forward(ctx, *args)``) is not bound, but cannot run under ``vmap``. So each ``ManualFunction``
subclass gets an *eager twin*: an old-style Function whose forward calls the subclass's own
``forward`` and ``setup_context`` and whose backward *is* the subclass's backward (the same
function object). ``call`` takes the twin in plain eager mode and ``apply`` (the transform-ready
path) under a torch.func transform or while torch.compile traces, so both run the same math and
the same hand-written backward; tests compare the two paths on every registry entry.

Ops call ``XFunction.call(*args)`` with every argument positional (no defaults are bound).
"""
from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable as _torch_once_differentiable

_grad_enabled = torch._C.is_grad_enabled
_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


def once_differentiable(fn):
    """``torch.autograd.function.once_differentiable`` without its cost in the common case.

    torch's wrapper enters ``torch.no_grad()`` on every backward call (about 20 us of Python on a
    CPU, per Function per step). A backward run without ``create_graph`` already runs with grad mode
    off, where that wrapper returns ``fn``'s outputs unchanged; so this calls ``fn`` directly then,
    and torch's wrapper otherwise (``create_graph=True``: the outputs get the node that raises
    "trying to differentiate twice a function that was marked with @once_differentiable")."""
    guarded = _torch_once_differentiable(fn)

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        if _grad_enabled():
            return guarded(ctx, *args)
        return fn(ctx, *args)
    return wrapper


class ManualFunction(torch.autograd.Function):
    """Base class: subclasses define static ``forward(*args)``, ``setup_context(ctx, inputs, output)``
    and ``backward(ctx, *grads)``, and are called through ``call``."""

    _eager: type[torch.autograd.Function]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
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
        if own is not None:
            eager_forward = own.__func__ if isinstance(own, staticmethod) else own
        # the same __name__, so that graphs show one node name (e.g. ReLUFunctionBackward) on both paths
        cls._eager = type(cls.__name__, (torch.autograd.Function,), {
            "forward": staticmethod(eager_forward),
            "backward": staticmethod(cls.backward),
            "__doc__": f"The eager twin of {cls.__qualname__} (same forward, setup_context and backward).",
            "__module__": __name__,
            "__qualname__": f"{cls.__qualname__}._eager",
        })

    @classmethod
    def call(cls, *args):
        """Apply the op: the eager twin in plain eager mode, ``apply`` under torch.compile or a
        torch.func transform (the order of the tests matters: dynamo folds ``is_compiling`` and
        never sees the functorch query)."""
        if _is_compiling() or _transforms_active():
            return cls.apply(*args)
        return cls._eager.apply(*args)


def first(out):
    """The result of ``call`` on a Function with its own ``eager_forward``: the first output of
    ``apply``'s tuple, or the eager twin's single output."""
    return out[0] if type(out) is tuple else out
