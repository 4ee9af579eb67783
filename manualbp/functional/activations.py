"""Element-wise activations with hand-written backward passes."""
from __future__ import annotations

import torch

from ._checks import check_positive, check_tensor
from ._function import ManualFunction

aten = torch.ops.aten


class ReLUFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        # y = max(x, 0) ; dL/dx = g * [y > 0]   (aten.threshold_backward computes exactly this, fused)
        (y,) = ctx.saved_tensors
        return aten.threshold_backward(g, y, 0)


class ELUFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, alpha):
        return torch.nn.functional.elu(x, alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, g):
        # y = x (x > 0), alpha (e^x - 1) (x <= 0) ; dy/dx = 1 (y > 0), y + alpha (y <= 0)
        # (aten.elu_backward with is_result=True evaluates this from the saved output y, fused)
        (y,) = ctx.saved_tensors
        return aten.elu_backward(g, ctx.alpha, 1.0, 1.0, True, y), None


class TanhFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        # y = tanh x ; dL/dx = g (1 - y^2)   (aten.tanh_backward, fused)
        (y,) = ctx.saved_tensors
        return aten.tanh_backward(g, y)


class ArctanFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.atan(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        # y = arctan x ; dy/dx = 1 / (1 + x^2)
        (x,) = ctx.saved_tensors
        return g / (1 + x * x)


class SigmoidFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        # y = 1 / (1 + e^-x) ; dL/dx = g y (1 - y)   (aten.sigmoid_backward, fused)
        (y,) = ctx.saved_tensors
        return aten.sigmoid_backward(g, y)


class SoftAbsFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, eps):
        return torch.sqrt(x * x + eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        # y = sqrt(x^2 + eps) ; dy/dx = x / y
        x, y = ctx.saved_tensors
        return g * x / y, None


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU: ``max(x, 0)``, element-wise. Backward: g [y > 0].
    """
    check_tensor("relu", "x", x)
    return ReLUFunction.call(x)


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ELU: ``x`` for x > 0, ``alpha (exp(x) - 1)`` otherwise, element-wise.

    Backward (from the output y): g for y > 0, g (y + alpha) otherwise.
    """
    check_tensor("elu", "x", x)
    check_positive("elu", "alpha", alpha)
    return ELUFunction.call(x, float(alpha))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent, element-wise. Backward: g (1 - y^2).
    """
    check_tensor("tanh", "x", x)
    return TanhFunction.call(x)


def arctan(x: torch.Tensor) -> torch.Tensor:
    """Arc tangent, element-wise. Backward: g / (1 + x^2).
    """
    check_tensor("arctan", "x", x)
    return ArctanFunction.call(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, element-wise. Backward: g y (1 - y).
    """
    check_tensor("sigmoid", "x", x)
    return SigmoidFunction.call(x)


def soft_abs(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Soft absolute value ``sqrt(x^2 + eps)``, element-wise (the sparse-filtering activation).

    Backward: g x / sqrt(x^2 + eps).
    """
    check_tensor("soft_abs", "x", x)
    check_positive("soft_abs", "eps", eps)
    return SoftAbsFunction.call(x, float(eps))


ACTIVATIONS = {"relu": relu, "elu": elu, "tanh": tanh, "arctan": arctan, "sigmoid": sigmoid,
               "soft_abs": soft_abs}
