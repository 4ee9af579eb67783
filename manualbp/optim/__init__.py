"""Optimizers by name: any ``torch.optim`` class, the project's own (``ConstantBiasAdam``, the
articles' hand-written Adam), ``"tf1.<Name>"`` for the TensorFlow-1 optimizers of
``manualbp.optim.tf1`` (e.g. ``tf1.Ftrl``), or ``"package.module:Class"`` for any other
``torch.optim.Optimizer``."""
from __future__ import annotations

import importlib
import inspect

import torch

from manualbp.functional._checks import check_kwargs

from .adamc import ConstantBiasAdam

OWN = {"ConstantBiasAdam": ConstantBiasAdam}   # the project's optimizers, by name


def make_optimizer(name: str, params, **kwargs) -> torch.optim.Optimizer:
    """An optimizer by name over ``params``.

    Args:
        name: a ``torch.optim`` class name (``"Adam"``, ``"SGD"``, ...), ``"ConstantBiasAdam"``,
            ``"tf1.<Name>"`` for the
            TensorFlow-1 optimizers (``manualbp.optim.tf1``, TF1's argument names), or
            ``"package.module:Class"``.
        params: the parameters (or parameter groups).
        kwargs: the class's arguments; unknown ones are refused with the list of known ones.

    Returns:
        The optimizer. Raises ``ValueError`` for an unknown name or argument.
    """
    if name.startswith("tf1."):
        from . import tf1
        cls = tf1.OPTIMIZERS.get(name[4:])
        if cls is None:
            raise ValueError(f"optim.name {name!r}: no such TensorFlow-1 optimizer; choose one of "
                             f"{['tf1.' + n for n in tf1.OPTIMIZERS]}")
    elif name in OWN:
        cls = OWN[name]
    elif ":" in name:
        mod, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"optim.name {name!r}: cannot import it ({e})") from None
    else:
        cls = getattr(torch.optim, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
            base = torch.optim.Optimizer
            known = sorted(n for n, c in vars(torch.optim).items()
                           if inspect.isclass(c) and issubclass(c, base) and c is not base)
            raise ValueError(f"optim.name {name!r} is not a torch.optim optimizer; choose one of {known}, "
                             f"{sorted(OWN)}, a tf1.* optimizer, or give 'module:Class'")
    return _construct("optim", cls, params, kwargs)


def _construct(section: str, cls, first, kwargs):
    """cls(first, **kwargs), with a wrong argument reported as a ValueError naming the config section."""
    check_kwargs(f"{section} {cls.__name__}", cls, kwargs, skip=("params", "optimizer"))
    try:
        return cls(first, **kwargs)
    except TypeError as e:
        raise ValueError(f"{section}: {cls.__name__} does not accept {sorted(kwargs)} ({e})") from None


def make_scheduler(name: str | None, optimizer, **kwargs):
    """A ``torch.optim.lr_scheduler`` class by name (stepped once per epoch), or None."""
    if name is None:
        return None
    cls = getattr(torch.optim.lr_scheduler, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
        raise ValueError(f"schedule.name {name!r} is not a torch.optim.lr_scheduler class (e.g. StepLR, "
                         "CosineAnnealingLR, ExponentialLR)")
    return _construct("schedule", cls, optimizer, kwargs)
