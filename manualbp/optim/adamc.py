"""Adam with constant bias corrections, as the articles' code wrote it by hand (``Adam-c``).

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - lr (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps)

with m = v = 0 at the start. Textbook Adam divides by 1 - b1^t and 1 - b2^t, which tend to 1; this
one divides by the constants 1 - b1 and 1 - b2. Its step is about textbook Adam's for the first
~100 steps, 0.71x at step 220 and sqrt(1 - b2) / (1 - b1) = 0.316x in the long run (b1 = 0.9,
b2 = 0.999). It is never a default: ``optim.name=ConstantBiasAdam`` asks for it.
"""
from __future__ import annotations

import math

import torch


class ConstantBiasAdam(torch.optim.Optimizer):
    """Adam with the constant bias corrections 1 - b1 and 1 - b2 (see the module docstring).

    Args:
        params: parameters or parameter groups.
        lr: the learning rate, finite and > 0.
        betas: (b1, b2), each in [0, 1).
        eps: added to the corrected root, finite and >= 0 (the articles used 1e-8, 1e-9 and 1e-40).

    State per parameter: ``exp_avg`` (m) and ``exp_avg_sq`` (v), as ``torch.optim.Adam`` names them,
    so the probes and ``state_dict`` treat both alike.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
            raise ValueError(f"ConstantBiasAdam: lr must be a finite number > 0, got {lr!r}")
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"ConstantBiasAdam: betas must be two numbers in [0, 1), got {betas!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
            raise ValueError(f"ConstantBiasAdam: eps must be a finite number >= 0 (the articles used 1e-8, 1e-9 "
                             f"and 1e-40), got {eps!r}")
        super().__init__(params, dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1))
        return loss
