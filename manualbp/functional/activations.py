"""Element-wise activations with hand-written backward passes."""
from __future__ import annotations

import torch

from ._checks import check_positive, check_tensor
from ._function import ManualFunction, no_forward_rule, once_differentiable, save_for_jvp

aten = torch.ops.aten


class ReLUFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        save_for_jvp(ctx, output)

    @staticmethod
    def backward(ctx, g):
        # y = max(x, 0) ; dL/dx = g * [y > 0]   (aten.threshold_backward computes exactly this, fused)
        (y,) = ctx.saved_tensors
        return aten.threshold_backward(g, y, 0)

    @staticmethod
    def jvp(ctx, t, *_):
        # dy = [y > 0] dx   (the Jacobian is diagonal: the backward's kernel applied to the tangent)
        (y,) = ctx.saved_tensors
        return aten.threshold_backward(t, y, 0)


class ELUFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, alpha):
        return torch.nn.functional.elu(x, alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        save_for_jvp(ctx, output)
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, g):
        # y = x (x > 0), alpha (e^x - 1) (x <= 0) ; dy/dx = 1 (y > 0), y + alpha (y <= 0)
        # (aten.elu_backward with is_result=True evaluates this from the saved output y, fused)
        (y,) = ctx.saved_tensors
        return aten.elu_backward(g, ctx.alpha, 1.0, 1.0, True, y), None

    @staticmethod
    def jvp(ctx, t, *_):
        # dy = dx (y > 0), (y + alpha) dx (y <= 0)
        (y,) = ctx.saved_tensors
        return aten.elu_backward(t, ctx.alpha, 1.0, 1.0, True, y)


class TanhFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        save_for_jvp(ctx, output)

    @staticmethod
    def backward(ctx, g):
        # y = tanh x ; dL/dx = g (1 - y^2)   (aten.tanh_backward, fused)
        (y,) = ctx.saved_tensors
        return aten.tanh_backward(g, y)

    @staticmethod
    def jvp(ctx, t):
        # dy = (1 - y^2) dx
        (y,) = ctx.saved_tensors
        return aten.tanh_backward(t, y)


class ArctanFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.atan(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        save_for_jvp(ctx, inputs[0])

    @staticmethod
    def backward(ctx, g):
        # y = arctan x ; dy/dx = 1 / (1 + x^2)
        (x,) = ctx.saved_tensors
        return g / (1 + x * x)

    @staticmethod
    def jvp(ctx, t):
        # dy = dx / (1 + x^2)
        (x,) = ctx.saved_tensors
        return t / (1 + x * x)


class SigmoidFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        save_for_jvp(ctx, output)

    @staticmethod
    def backward(ctx, g):
        # y = 1 / (1 + e^-x) ; dL/dx = g y (1 - y)   (aten.sigmoid_backward, fused)
        (y,) = ctx.saved_tensors
        return aten.sigmoid_backward(g, y)

    @staticmethod
    def jvp(ctx, t):
        # dy = y (1 - y) dx
        (y,) = ctx.saved_tensors
        return aten.sigmoid_backward(t, y)


class SoftAbsFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, eps):
        return torch.sqrt(x * x + eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        save_for_jvp(ctx, inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        # y = sqrt(x^2 + eps) ; dy/dx = x / y
        x, y = ctx.saved_tensors
        return g * x / y, None

    @staticmethod
    def jvp(ctx, t, *_):
        # dy = (x / y) dx
        x, y = ctx.saved_tensors
        return t * x / y


class LeakyReLUFunction(ManualFunction):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, slope):
        return torch.where(x > 0, x, x * slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        save_for_jvp(ctx, inputs[0])
        ctx.slope = inputs[1]

    @staticmethod
    def backward(ctx, g):
        # y = x (x > 0), slope x (x <= 0) ; dL/dx = g (x > 0), slope g (x <= 0)
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, g, g * ctx.slope), None

    @staticmethod
    def jvp(ctx, t, *_):
        # dy = dx (x > 0), slope dx (x <= 0)
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, t, t * ctx.slope)


class TanhSigmoidDerivativeFunction(ManualFunction):
    """tanh forward with the zca article's coded derivative 1 - sigmoid(x)^2: NOT the gradient of
    tanh (whose derivative is 1 - tanh(x)^2); a named variant, never a default."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable("its backward is the zca article's coded derivative, not tanh's: a derivative of it "
                         "would mean nothing")
    def backward(ctx, g):
        # the article's code: dL/dx = g (1 - sigmoid(x)^2)   (tanh's own derivative is 1 - tanh(x)^2)
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(x)
        return g * (1 - sg * sg)

    jvp = no_forward_rule("its backward is the zca article's coded derivative 1 - sigmoid(x)^2, not tanh's; a "
                          "tangent would have to be either tanh's (disagreeing with the backward) or the coded one "
                          "(not a derivative of the forward)")


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


def leaky_relu(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    """Leaky ReLU: ``x`` for x > 0, ``slope x`` otherwise, element-wise (the zca article's output
    layers use slope 0.01).

    Args:
        x: input tensor.
        slope: the slope for x <= 0, a number >= 0.

    Returns:
        Tensor of ``x``'s shape. Backward: g for x > 0, slope g otherwise.
    """
    check_tensor("leaky_relu", "x", x)
    if not isinstance(slope, (int, float)) or isinstance(slope, bool) or slope < 0:
        raise ValueError(f"leaky_relu: slope must be a number >= 0, got {slope!r}")
    return LeakyReLUFunction.call(x, float(slope))


def tanh_sigmoid_derivative(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` whose backward is the zca article's coded derivative ``1 - sigmoid(x)^2``.

    Not a gradient (gradcheck fails for it): a named variant that reproduces the article's code,
    never a default. Use ``tanh`` for the true derivative ``1 - tanh(x)^2``.

    Returns:
        Tensor of ``x``'s shape.
    """
    check_tensor("tanh_sigmoid_derivative", "x", x)
    return TanhSigmoidDerivativeFunction.call(x)


ACTIVATIONS = {"relu": relu, "elu": elu, "tanh": tanh, "arctan": arctan, "sigmoid": sigmoid,
               "soft_abs": soft_abs, "leaky_relu": leaky_relu, "tanh_sigmoid_derivative": tanh_sigmoid_derivative}
