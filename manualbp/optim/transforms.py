"""Per-step gradient transforms: applied by the loop to every trained parameter's gradient after the
backward pass and before the optimizer step, chosen by configuration
(``grad_transforms=[{"name": "gradient_noise", "eta": 0.3}]``), so the loop itself never changes.

A transform is a callable ``(params, step, epoch, generator)``: ``params`` the parameters that have a
gradient, ``step`` the global step counted from 0, ``epoch`` counted from 1, ``generator`` the run's
own random generator on the training device (its state is checkpointed, so a resumed run draws the
same noise). A new transform is one class and one row in ``GRAD_TRANSFORMS``.
"""
from __future__ import annotations

import math

import torch

from manualbp.functional._checks import check_kwargs


class GradientNoise:
    """Neelakantan et al. (2015): g <- g + N(0, sigma_t^2) with sigma_t^2 = eta / (1 + t)^gamma, t the
    global step counted from 0 (``clock="step"``) or the epoch counted from 0 (``clock="epoch"``).
    ``scalar=True`` is the optimizers article's variant: one noise value per step, shared by every
    entry of every gradient; its code drew it with std 0.001 / (1 + epoch)^0.55, i.e. eta = 1e-6,
    gamma = 1.1, clock="epoch"."""

    def __init__(self, eta: float = 0.3, gamma: float = 0.55, scalar: bool = False, clock: str = "step"):
        if not isinstance(eta, (int, float)) or eta < 0:
            raise ValueError(f"gradient_noise: eta must be a number >= 0 (the article's values: 0.01, 0.3, 1), "
                             f"got {eta!r}")
        if not isinstance(gamma, (int, float)) or gamma < 0:
            raise ValueError(f"gradient_noise: gamma must be a number >= 0 (0.55 in the paper), got {gamma!r}")
        if clock not in ("step", "epoch"):
            raise ValueError(f"gradient_noise: clock must be 'step' (t = the global step) or 'epoch' (t = the "
                             f"epoch, from 0), got {clock!r}")
        self.eta, self.gamma, self.scalar, self.clock = float(eta), float(gamma), bool(scalar), clock

    def sigma(self, t: int) -> float:
        return math.sqrt(self.eta / (1 + t) ** self.gamma)

    @torch.no_grad()
    def __call__(self, params, step: int, epoch: int, generator: torch.Generator) -> None:
        sigma = self.sigma(step if self.clock == "step" else epoch - 1)
        if self.scalar:
            ref = params[0].grad
            noise = torch.randn((), generator=generator, device=ref.device, dtype=ref.dtype) * sigma
            for p in params:
                p.grad.add_(noise)
            return
        for p in params:
            p.grad.add_(torch.randn(p.grad.shape, generator=generator, device=p.grad.device, dtype=p.grad.dtype),
                        alpha=sigma)


GRAD_TRANSFORMS = {"gradient_noise": GradientNoise}


def make_grad_transforms(specs) -> list:
    """Transforms from a config list of {"name": ..., **settings}; unknown names or settings are refused."""
    if specs is None:
        return []
    if not isinstance(specs, (list, tuple)):
        raise ValueError(f"grad_transforms must be a list of {{'name': ..., settings}}, got {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or spec.get("name") not in GRAD_TRANSFORMS:
            raise ValueError(f"grad_transforms[{i}]: name must be one of {sorted(GRAD_TRANSFORMS)}, got {spec!r}")
        kw = {k: v for k, v in spec.items() if k != "name"}
        cls = GRAD_TRANSFORMS[spec["name"]]
        check_kwargs(f"grad_transforms[{i}] {spec['name']!r}", cls, kw)
        out.append(cls(**kw))
    return out
