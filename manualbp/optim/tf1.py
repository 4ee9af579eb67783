"""The ten TensorFlow 1.x ``tf.train`` optimizers as ``torch.optim.Optimizer``s.

Each class is named as TF1 names it without the ``Optimizer`` suffix, takes TF1's keyword arguments
and defaults, and applies the update that TF1's dense training kernels (``training_ops.cc``,
``ApplyGradientDescent`` ... ``ApplyRMSProp``) compute, slot initial values included. Where TF1
and ``torch.optim`` differ, TF1 is followed: RMSProp's mean square starts at 1 and epsilon sits
inside the square root; Adam folds both bias corrections into the learning rate and adds epsilon
after the square root; AdagradDA keeps gradient sums and uses the global step; FTRL has its
learning-rate power and l2 shrinkage; the proximal methods soft-threshold.

Select them in configs as ``optim.name=tf1.Ftrl`` (with ``optim.learning_rate``, TF1's name; the
value is kept as the param group's ``lr``, so learning-rate schedulers and ``lr_scale`` work).
Each keeps its slots in ``self.state`` (plus a step count), so ``state_dict`` / ``load_state_dict``
resume a run exactly. Only dense gradients are supported.
"""
from __future__ import annotations

import math

import torch

__all__ = ["GradientDescent", "Adadelta", "Adagrad", "AdagradDA", "Momentum", "Adam", "Ftrl",
           "ProximalGradientDescent", "ProximalAdagrad", "RMSProp", "OPTIMIZERS"]


def _number(cls: str, name: str, value, low=None, low_open=False, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"tf1.{cls}: {name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"tf1.{cls}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"tf1.{cls}: {name} must be <= {high}, got {value!r}")
    return float(value)


class _TF1(torch.optim.Optimizer):
    """Shared plumbing: TF1's ``learning_rate`` becomes the group's ``lr``; ``_slots(p)`` makes a
    parameter's slots on its first step; ``_apply(p, g, state, group)`` is the kernel."""

    def __init__(self, params, learning_rate, **defaults):
        name = type(self).__name__
        lr = _number(name, "learning_rate", learning_rate, low=0.0)
        super().__init__(params, dict(lr=lr, **defaults))

    def _slots(self, p, group) -> dict:
        return {}

    def _apply(self, p, g, state, group) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"tf1.{type(self).__name__}: sparse gradients are not supported")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state.update(self._slots(p, group))
                state["step"] += 1
                self._apply(p, p.grad, state, group)
        return loss


class GradientDescent(_TF1):
    """``tf.train.GradientDescentOptimizer``: var <- var - lr * g."""

    def __init__(self, params, learning_rate):
        super().__init__(params, learning_rate)

    def _apply(self, p, g, state, group):
        p.add_(g, alpha=-group["lr"])


class Adadelta(_TF1):
    """``tf.train.AdadeltaOptimizer`` (slots accum = accum_update = 0):
    accum <- rho * accum + (1 - rho) * g^2;
    update = sqrt(accum_update + epsilon) / sqrt(accum + epsilon) * g;
    var <- var - lr * update;
    accum_update <- rho * accum_update + (1 - rho) * update^2.
    (TF1's default learning rate is 0.001, not 1.0 as in torch.optim.Adadelta.)"""

    def __init__(self, params, learning_rate=0.001, rho=0.95, epsilon=1e-8):
        super().__init__(params, learning_rate, rho=_number("Adadelta", "rho", rho, 0.0, high=1.0),
                         epsilon=_number("Adadelta", "epsilon", epsilon, 0.0))

    def _slots(self, p, group):
        return {"accum": torch.zeros_like(p), "accum_update": torch.zeros_like(p)}

    def _apply(self, p, g, state, group):
        rho, eps = group["rho"], group["epsilon"]
        accum, accum_update = state["accum"], state["accum_update"]
        accum.mul_(rho).addcmul_(g, g, value=1 - rho)
        update = (accum_update + eps).sqrt_().div_((accum + eps).sqrt_()).mul_(g)
        p.add_(update, alpha=-group["lr"])
        accum_update.mul_(rho).addcmul_(update, update, value=1 - rho)


class Adagrad(_TF1):
    """``tf.train.AdagradOptimizer`` (slot accum = initial_accumulator_value):
    accum <- accum + g^2;  var <- var - lr * g / sqrt(accum)  (no epsilon)."""

    def __init__(self, params, learning_rate, initial_accumulator_value=0.1):
        super().__init__(params, learning_rate, initial_accumulator_value=_number(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0, low_open=True))

    def _slots(self, p, group):
        return {"accum": torch.full_like(p, group["initial_accumulator_value"])}

    def _apply(self, p, g, state, group):
        accum = state["accum"]
        accum.addcmul_(g, g)
        p.addcdiv_(g, accum.sqrt(), value=-group["lr"])


class AdagradDA(_TF1):
    """``tf.train.AdagradDAOptimizer``, dual averaging (slots gradient_accumulator = 0,
    gradient_squared_accumulator = initial_gradient_squared_accumulator_value; T the global step,
    counted from 1 at the first update as TF1's ``global_step + 1``):
    acc <- acc + g;  sq <- sq + g^2;
    var <- -lr * sign(acc) * max(|acc| - l1 * T, 0) / (l2 * T * lr + sqrt(sq))   if l1 > 0,
    var <- -lr * acc / (l2 * T * lr + sqrt(sq))                                    otherwise.
    The new weights depend on the accumulators only, not on the old weights. TF1 takes the global
    step as an argument; these optimizers count its own steps (one per ``step()``)."""

    def __init__(self, params, learning_rate, initial_gradient_squared_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0):
        n = "AdagradDA"
        super().__init__(params, learning_rate,
                         initial_gradient_squared_accumulator_value=_number(
                             n, "initial_gradient_squared_accumulator_value",
                             initial_gradient_squared_accumulator_value, 0.0, low_open=True),
                         l1_regularization_strength=_number(n, "l1_regularization_strength",
                                                            l1_regularization_strength, 0.0),
                         l2_regularization_strength=_number(n, "l2_regularization_strength",
                                                            l2_regularization_strength, 0.0))

    def _slots(self, p, group):
        return {"gradient_accumulator": torch.zeros_like(p),
                "gradient_squared_accumulator": torch.full_like(p, group["initial_gradient_squared_accumulator_value"])}

    def _apply(self, p, g, state, group):
        lr, l1, l2 = group["lr"], group["l1_regularization_strength"], group["l2_regularization_strength"]
        t = float(state["step"])
        acc, sq = state["gradient_accumulator"], state["gradient_squared_accumulator"]
        acc.add_(g)
        sq.addcmul_(g, g)
        denom = sq.sqrt().add_(l2 * t * lr)
        if l1 > 0:
            num = acc.sign() * (acc.abs() - l1 * t).clamp_(min=0)
        else:
            num = acc
        p.copy_(num.div(denom).mul_(-lr))


class Momentum(_TF1):
    """``tf.train.MomentumOptimizer`` (slot accum = 0):
    accum <- momentum * accum + g;
    var <- var - lr * accum                                (use_nesterov=False),
    var <- var - lr * g - lr * momentum * accum            (use_nesterov=True).
    (torch.optim.SGD scales differently under dampening/nesterov; this is TF1's kernel.)"""

    def __init__(self, params, learning_rate, momentum, use_nesterov=False):
        super().__init__(params, learning_rate, momentum=_number("Momentum", "momentum", momentum, 0.0),
                         use_nesterov=bool(use_nesterov))

    def _slots(self, p, group):
        return {"accum": torch.zeros_like(p)}

    def _apply(self, p, g, state, group):
        lr, mom = group["lr"], group["momentum"]
        accum = state["accum"]
        accum.mul_(mom).add_(g)
        if group["use_nesterov"]:
            p.add_(g, alpha=-lr).add_(accum, alpha=-lr * mom)
        else:
            p.add_(accum, alpha=-lr)


class Adam(_TF1):
    """``tf.train.AdamOptimizer`` (slots m = v = 0; t counted from 1):
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t);
    m <- m + (1 - beta1) * (g - m);  v <- v + (1 - beta2) * (g^2 - v);
    var <- var - lr_t * m / (sqrt(v) + epsilon).
    Epsilon is added to the uncorrected sqrt(v) ("epsilon hat" of the paper), unlike torch.optim.Adam,
    which adds it to sqrt(v / (1 - beta2^t))."""

    def __init__(self, params, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8):
        n = "Adam"
        super().__init__(params, learning_rate, beta1=_number(n, "beta1", beta1, 0.0, high=1.0),
                         beta2=_number(n, "beta2", beta2, 0.0, high=1.0), epsilon=_number(n, "epsilon", epsilon, 0.0))

    def _slots(self, p, group):
        return {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def _apply(self, p, g, state, group):
        b1, b2, eps = group["beta1"], group["beta2"], group["epsilon"]
        t = float(state["step"])
        lr_t = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m, v = state["m"], state["v"]
        m.add_(g - m, alpha=1 - b1)
        v.add_(g * g - v, alpha=1 - b2)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)


class Ftrl(_TF1):
    """``tf.train.FtrlOptimizer``, FTRL-proximal (slots accum = initial_accumulator_value, linear = 0;
    p = -learning_rate_power, written for any p, with TF1's special case p = 0.5 giving sqrt):
    g_s = g + 2 * l2_shrinkage * var;
    new_accum = accum + g^2;
    linear <- linear + g_s - (new_accum^p - accum^p) / lr * var;
    quadratic = new_accum^p / lr + 2 * l2;
    var <- (l1 * sign(linear) - linear) / quadratic   if |linear| > l1,  else 0;
    accum <- new_accum.
    The shrinkage term enters ``linear`` only; the accumulator sums the raw squared gradient."""

    def __init__(self, params, learning_rate, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0):
        n = "Ftrl"
        if _number(n, "learning_rate_power", learning_rate_power) > 0:
            raise ValueError(f"tf1.Ftrl: learning_rate_power must be <= 0, got {learning_rate_power!r}")
        super().__init__(params, learning_rate, learning_rate_power=float(learning_rate_power),
                         initial_accumulator_value=_number(n, "initial_accumulator_value",
                                                           initial_accumulator_value, 0.0),
                         l1_regularization_strength=_number(n, "l1_regularization_strength",
                                                            l1_regularization_strength, 0.0),
                         l2_regularization_strength=_number(n, "l2_regularization_strength",
                                                            l2_regularization_strength, 0.0),
                         l2_shrinkage_regularization_strength=_number(
                             n, "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength, 0.0))

    def _slots(self, p, group):
        return {"accum": torch.full_like(p, group["initial_accumulator_value"]), "linear": torch.zeros_like(p)}

    def _apply(self, p, g, state, group):
        lr, power = group["lr"], -group["learning_rate_power"]
        l1, l2 = group["l1_regularization_strength"], group["l2_regularization_strength"]
        shrink = group["l2_shrinkage_regularization_strength"]
        accum, linear = state["accum"], state["linear"]

        def pw(a):
            return a.sqrt() if power == 0.5 else a.pow(power)

        g_s = g + 2 * shrink * p if shrink > 0 else g
        new_accum = accum + g * g
        linear.add_(g_s - (pw(new_accum) - pw(accum)) / lr * p)
        quadratic = pw(new_accum) / lr + 2 * l2
        pre = (l1 * linear.sign() - linear) / quadratic
        p.copy_(torch.where(linear.abs() > l1, pre, torch.zeros_like(pre)))
        accum.copy_(new_accum)


class ProximalGradientDescent(_TF1):
    """``tf.train.ProximalGradientDescentOptimizer``:
    prox = var - lr * g;
    var <- sign(prox) * max(|prox| - lr * l1, 0) / (1 + lr * l2)   (l1 > 0; else prox / (1 + lr * l2))."""

    def __init__(self, params, learning_rate, l1_regularization_strength=0.0, l2_regularization_strength=0.0):
        n = "ProximalGradientDescent"
        super().__init__(params, learning_rate,
                         l1_regularization_strength=_number(n, "l1_regularization_strength",
                                                            l1_regularization_strength, 0.0),
                         l2_regularization_strength=_number(n, "l2_regularization_strength",
                                                            l2_regularization_strength, 0.0))

    def _apply(self, p, g, state, group):
        lr = group["lr"]
        _proximal(p, p - lr * g, lr, group["l1_regularization_strength"], group["l2_regularization_strength"])


def _proximal(p, prox, rate, l1, l2):
    """var <- sign(prox) * max(|prox| - rate * l1, 0) / (1 + rate * l2); ``rate`` a number or a tensor."""
    if l1 > 0:
        prox = prox.sign() * (prox.abs() - rate * l1).clamp_(min=0)
    p.copy_(prox / (1 + rate * l2))


class ProximalAdagrad(_TF1):
    """``tf.train.ProximalAdagradOptimizer`` (slot accum = initial_accumulator_value):
    accum <- accum + g^2;  rate = lr / sqrt(accum);  prox = var - rate * g;
    var <- sign(prox) * max(|prox| - rate * l1, 0) / (1 + rate * l2)   (l1 > 0; else prox / (1 + rate * l2))."""

    def __init__(self, params, learning_rate, initial_accumulator_value=0.1, l1_regularization_strength=0.0,
                 l2_regularization_strength=0.0):
        n = "ProximalAdagrad"
        super().__init__(params, learning_rate,
                         initial_accumulator_value=_number(n, "initial_accumulator_value", initial_accumulator_value,
                                                           0.0, low_open=True),
                         l1_regularization_strength=_number(n, "l1_regularization_strength",
                                                            l1_regularization_strength, 0.0),
                         l2_regularization_strength=_number(n, "l2_regularization_strength",
                                                            l2_regularization_strength, 0.0))

    def _slots(self, p, group):
        return {"accum": torch.full_like(p, group["initial_accumulator_value"])}

    def _apply(self, p, g, state, group):
        accum = state["accum"]
        accum.addcmul_(g, g)
        rate = group["lr"] / accum.sqrt()
        _proximal(p, p - rate * g, rate, group["l1_regularization_strength"], group["l2_regularization_strength"])


class RMSProp(_TF1):
    """``tf.train.RMSPropOptimizer`` (slots ms = 1, mom = 0, and mg = 0 when centered):
    ms <- ms + (1 - decay) * (g^2 - ms);
    mg <- mg + (1 - decay) * (g - mg)                       (centered only);
    denom = ms + epsilon   (centered: ms - mg^2 + epsilon);
    mom <- momentum * mom + lr * g / sqrt(denom);
    var <- var - mom.
    Unlike torch.optim.RMSprop: the mean square starts at 1, epsilon is inside the square root and
    the learning rate is inside the momentum buffer."""

    def __init__(self, params, learning_rate, decay=0.9, momentum=0.0, epsilon=1e-10, centered=False):
        n = "RMSProp"
        super().__init__(params, learning_rate, decay=_number(n, "decay", decay, 0.0, high=1.0),
                         momentum=_number(n, "momentum", momentum, 0.0), epsilon=_number(n, "epsilon", epsilon, 0.0),
                         centered=bool(centered))

    def _slots(self, p, group):
        s = {"ms": torch.ones_like(p), "mom": torch.zeros_like(p)}
        if group["centered"]:
            s["mg"] = torch.zeros_like(p)
        return s

    def _apply(self, p, g, state, group):
        rho = group["decay"]
        ms, mom = state["ms"], state["mom"]
        ms.add_(g * g - ms, alpha=1 - rho)
        if group["centered"]:
            mg = state["mg"]
            mg.add_(g - mg, alpha=1 - rho)
            denom = ms - mg * mg + group["epsilon"]
        else:
            denom = ms + group["epsilon"]
        mom.mul_(group["momentum"]).addcdiv_(g, denom.sqrt(), value=group["lr"])
        p.sub_(mom)


OPTIMIZERS = {cls.__name__: cls for cls in (GradientDescent, Adadelta, Adagrad, AdagradDA, Momentum, Adam, Ftrl,
                                            ProximalGradientDescent, ProximalAdagrad, RMSProp)}
