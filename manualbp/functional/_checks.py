"""Cheap boundary checks shared by the ops.

Every op validates what it can check without touching the data (rank, shape,
dtype, scalar ranges) and raises a ``ValueError`` that names the argument, what
was expected and what was given, so a user never has to read a traceback from
deep inside torch.
"""
from __future__ import annotations

from typing import Sequence

import torch


class NonFiniteError(FloatingPointError):
    """An op met NaN or Inf values where it cannot go on (e.g. an eigendecomposition of a covariance
    with NaN entries). Raised only on the failure path, so the hot path pays nothing."""


def under_transform(t: torch.Tensor) -> bool:
    """Whether a torch.func transform (vmap, grad, ...) wraps ``t``: it then reports requires_grad False
    and cannot be branched on by value."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def values_checkable(t: torch.Tensor) -> bool:
    """Whether a check may read ``t``'s values: not under torch.compile (a graph break) nor on a
    tensor that a torch.func transform wraps (vmap cannot branch on data)."""
    return not torch.compiler.is_compiling() and not under_transform(t)


def check_tensor(op: str, name: str, t, ndim: int | Sequence[int] | None = None,
                 floating: bool = True, shape_hint: str = "") -> None:
    """Check that ``t`` is a tensor of an allowed rank (and floating dtype)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            ranks = " or ".join(f"{d}-D" for d in allowed)
            hint = f" of shape {shape_hint}" if shape_hint else ""
            raise ValueError(f"{op}: {name} must be a {ranks} tensor{hint}; "
                             f"got shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{op}: {name} must have a floating dtype (float32 or float64); "
                         f"got {t.dtype}. Convert it with .float()")


def check_same_dtype_device(op: str, **tensors) -> None:
    items = [(n, t) for n, t in tensors.items() if t is not None]
    if not items:
        return
    n0, t0 = items[0]
    for n, t in items[1:]:
        if t.dtype != t0.dtype:
            raise ValueError(f"{op}: {n} has dtype {t.dtype} but {n0} has {t0.dtype}; "
                             "cast them to one floating dtype")
        if t.device != t0.device:
            raise ValueError(f"{op}: {n} is on {t.device} but {n0} is on {t0.device}; "
                             "move them to one device")


def check_positive(op: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{op}: {name} must be a number > 0, got {value!r}")


def check_choice(op: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {sorted(choices)}, got {value!r}")


def check_momentum(op: str, momentum) -> None:
    if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
        raise ValueError(f"{op}: momentum must lie in [0, 1], got {momentum!r}")


def pair(op: str, name: str, v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")


def check_kwargs(where: str, fn, kwargs: dict, skip: Sequence[str] = ()) -> None:
    """Refuse keyword arguments that ``fn`` (a function or class) does not take, listing the ones it
    does; a typo in a config section must not silently train with the defaults."""
    import inspect
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if n not in skip and n != "self"
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known settings: {', '.join(known)}")
    for k, v in kwargs.items():   # a setting whose default is a bool takes a bool: 'maybe' or 1 is a typo
        if isinstance(params[k].default, bool) and not isinstance(v, bool):
            raise ValueError(f"{where}: {k} must be true or false, got {v!r}")
