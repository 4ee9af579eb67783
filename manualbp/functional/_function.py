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

import torch

_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


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
