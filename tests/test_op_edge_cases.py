"""Ops at their edges, each checked by value: interpolate's coordinate mapping at sizes that are not a multiple,
the gradient of a soft cross-entropy target, linear on an empty feature dimension, double backward through a
regularizer, the whitening ops' refusal of a second derivative, and regularizer references independent of the
op's own table."""
import pytest
import torch
import torch.nn.functional as F

import manualbp.functional as MF
from manualbp.functional import regularizers as regs
from manualbp.testing import opinfo
from manualbp.testing.gradsuite import compare_reference


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("scale", [1.5, 2.3, 0.6])
def test_interpolate_matches_torch_when_the_size_is_not_a_multiple(mode, scale):
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    y = MF.interpolate(x, scale_factor=scale, mode=mode)
    ref = F.interpolate(x, scale_factor=scale, mode=mode)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=0, atol=1e-12)


def test_soft_target_that_requires_grad_gets_its_gradient():
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1).requires_grad_()
    (gt,) = torch.autograd.grad(MF.softmax_cross_entropy(z, t), t)
    torch.testing.assert_close(gt, -torch.log_softmax(z, 1).detach() / 4)
    assert torch.autograd.gradcheck(lambda z, t: MF.softmax_cross_entropy(z, t, "sum"), (z, t))


def test_linear_on_an_empty_feature_dimension_gives_zero_gradients():
    x = torch.randn(3, 4, 0, requires_grad=True)
    w = torch.randn(5, 0, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = MF.linear(x, w, b)
    assert torch.equal(y, b.expand(3, 4, 5))          # an empty sum is 0: y = b everywhere
    g = torch.randn(3, 4, 5)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    assert gx.shape == x.shape and gw.shape == w.shape and gx.dtype == gw.dtype == x.dtype   # empty, not None
    torch.testing.assert_close(gb, g.sum((0, 1)), rtol=1e-6, atol=1e-6)             # dL/db = sum of g over rows


def test_double_backward_through_neg_tanh():
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(MF.regularize(w, "neg_tanh", 0.5), w, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), w)
    t = torch.tanh(w.detach())
    torch.testing.assert_close(h, 0.5 * 2 * t * (1 - t * t))   # d/dw [-(1 - tanh^2 w)] = 2 tanh w (1 - tanh^2 w)
    assert torch.autograd.gradgradcheck(lambda w: MF.regularize(w, "neg_tanh_sq", 0.5), (w,))


@pytest.mark.parametrize("v_requires_grad", [True, False])
def test_whitening_refuses_a_second_differentiation_clearly(v_requires_grad):
    """Whether or not the incoming gradient requires grad (torch's once_differentiable returned a constant
    when it did not)."""
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    v = torch.ones(6, 3, dtype=torch.float64, requires_grad=v_requires_grad)
    (g,) = torch.autograd.grad(MF.zca_whiten(x, 1e-2), x, v, create_graph=True)
    with pytest.raises(RuntimeError, match="ZCAWhitenFunction: a second derivative through this op is not provided"):
        g.sum().backward()


def test_regularizer_references_are_independent_of_the_op(monkeypatch):
    """A wrong R in the op's table must be caught by the registry's reference comparison."""
    assert set(opinfo.REGULARIZER_REFERENCES) == set(regs.REGULARIZERS)
    info = opinfo.OPS_BY_NAME["regularize[l2]"]
    sample = info.samples(torch.float64, torch.device("cpu"))[0]
    compare_reference(info, sample)
    broken = regs.Regularizer("l2", lambda t: 3 * t * t, lambda t: 6 * t, "3 t^2")   # R and R' agree, both wrong
    monkeypatch.setitem(regs.REGULARIZERS, "l2", broken)
    with pytest.raises(AssertionError, match="forward differs from the reference"):
        compare_reference(info, sample)
