"""Curvature through the manual ops: Hessians, Hessian-vector products and Jacobian-vector products
of whole models built from manual Functions equal those of the same models in plain torch
(float64), and an op without a second derivative or a forward-mode rule says so instead of
returning a wrong number."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import functional_call, hessian, jacrev, jvp, vmap

import manualbp.functional as M
from manualbp.functional._function import RefusedDerivative
from manualbp.models import CNN6, MLP
from manualbp.testing.reference_models import TwinModule


_Twin = TwinModule


def _objective(module, names, shapes, x, y, loss, prefix=""):
    """theta (one flat vector) -> loss(module with theta as its parameters, x, y)."""
    sizes = [s.numel() for s in shapes]

    def f(theta):
        parts = theta.split(sizes)
        params = {prefix + n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return loss(functional_call(module, params, (x,)), y)
    return f


def _pair(model, x, y):
    """(manual objective, plain-torch objective, theta0) of one model: softmax cross-entropy of its output."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    manual = _objective(model, names, shapes, x, y, M.softmax_cross_entropy)
    plain = _objective(_Twin(model), names, shapes, x, y, F.cross_entropy, prefix="inner.")
    return manual, plain, theta


def _mlp():
    torch.manual_seed(0)
    model = MLP([6, 5, 4], activation="tanh").double()
    return model, torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 4, (7,))


def _cnn6(batch_norm):
    torch.manual_seed(1)
    model = CNN6(in_channels=2, channels=(3, 3, 3, 3, 3, 4), strides=(2, 1, 2, 1, 1, 1), batch_norm=batch_norm,
                 init_std=0.3, bn_eps=1e-5).double()
    return model, torch.randn(5, 2, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,))


MODELS = {"mlp": _mlp, "cnn6": lambda: _cnn6(False), "cnn6-bn": lambda: _cnn6(True)}


@pytest.mark.parametrize("name", list(MODELS))
def test_hessian_of_a_manual_model_equals_the_plain_twin(name):
    model, x, y = MODELS[name]()
    manual, plain, theta = _pair(model, x, y)
    h_m = hessian(manual)(theta)
    h_p = hessian(plain)(theta)
    assert h_m.shape == (theta.numel(), theta.numel())
    assert h_p.abs().max() > 1e-3                       # a Hessian worth comparing
    torch.testing.assert_close(h_m, h_p, rtol=0, atol=1e-10)
    torch.testing.assert_close(h_m, h_m.mT, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_jvp_through_a_manual_model_equals_the_plain_twin(name):
    model, x, y = MODELS[name]()
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.randn_like(p) for n, p in params.items()}
    twin = _Twin(model)
    out_m, t_m = jvp(lambda p: functional_call(model, p, (x,)), (params,), (tangents,))
    out_p, t_p = jvp(lambda p: functional_call(twin, {"inner." + n: p[n] for n in names}, (x,)), (params,),
                     (tangents,))
    torch.testing.assert_close(out_m, out_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(t_m, t_p, rtol=0, atol=1e-10)
    assert t_p.abs().max() > 1e-3
    # the eager twins' rules (plain forward-mode AD, no torch.func transform)
    with fwAD.dual_level():
        with torch.nn.utils.stateless._reparametrize_module(
                model, {n: fwAD.make_dual(params[n], tangents[n]) for n in names}):
            t_e = fwAD.unpack_dual(model(x)).tangent
    torch.testing.assert_close(t_e, t_p, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_eager_hessian_vector_product_by_double_backward(name):
    """grad(loss, params, create_graph=True) then grad(<g, v>, params): the incoming gradient of the loss
    does not require grad, the case where a once-differentiable loss used to return a constant."""
    model, x, y = MODELS[name]()
    twin = _Twin(model)
    params = [p for p in model.parameters()]
    vs = [torch.randn_like(p) for p in params]

    def hvp(loss):
        gs = torch.autograd.grad(loss, params, create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(gs, vs)), params)
    h_m = hvp(M.softmax_cross_entropy(model(x), y))
    h_p = hvp(F.cross_entropy(twin(x), y))
    for a, b in zip(h_m, h_p):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_softmax_cross_entropy_curvature_is_not_dropped():
    """The loss's own Hessian diag(p) - p p^T (per row, / N): exact, and not zero."""
    z = torch.randn(3, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 4])
    h = hessian(lambda z: M.softmax_cross_entropy(z, y))(z).reshape(15, 15)
    p = torch.softmax(z, 1)
    expected = torch.block_diag(*[(torch.diag(r) - torch.outer(r, r)) / 3 for r in p])
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-14)


def _zca_mlp():
    torch.manual_seed(2)
    model = MLP([4, 5, 3], activation="tanh", norm="zca_dim", norm_at=1).double()
    return model, torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))


def test_ops_without_a_second_derivative_refuse_it_in_every_mode():
    model, x, y = _zca_mlp()
    manual, _, theta = _pair(model, x, y)
    for how, fn in (("torch.func.hessian", hessian(manual)), ("jacrev(jacrev)", jacrev(jacrev(manual)))):
        with pytest.raises(RefusedDerivative, match="second derivative through this op is not provided"):
            fn(theta)
    params = list(model.parameters())
    gs = torch.autograd.grad(M.softmax_cross_entropy(model(x), y), params, create_graph=True)
    with pytest.raises(RefusedDerivative, match="ZCAWhitenFunction"):
        torch.autograd.grad(sum(g.sum() for g in gs), params)
    # forward-over-reverse in eager mode: a tangent on the input, a plain backward
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, torch.randn_like(x))
        out = M.softmax_cross_entropy(model(xd), y)
        with pytest.raises(RefusedDerivative):
            torch.autograd.grad(out, params)


def test_first_order_still_works_under_transforms_through_a_refusing_op():
    """torch.func.grad (create_graph inside) and per-example vmap(grad) through ZCA: first order is right."""
    model, x, y = _zca_mlp()
    manual, plain, theta = _pair(model, x, y)
    torch.testing.assert_close(torch.func.grad(manual)(theta), torch.func.grad(plain)(theta), rtol=0, atol=1e-10)
    params = list(model.parameters())
    eager = torch.autograd.grad(M.softmax_cross_entropy(model(x), y), params)
    torch.testing.assert_close(torch.func.grad(manual)(theta), torch.cat([g.reshape(-1) for g in eager]),
                               rtol=0, atol=1e-12)


def test_forward_mode_refusal_names_the_op_and_why():
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(RefusedDerivative, match=r"zca_whiten\[article\].*not the gradient"):
        jvp(lambda x: M.zca_whiten(x, grad="article"), (x,), (torch.ones_like(x),))
    with pytest.raises(RefusedDerivative, match="forward-mode"):
        jvp(M.tanh_sigmoid_derivative, (x,), (torch.ones_like(x),))
    w = torch.randn(5, dtype=torch.float64)
    with pytest.raises(RefusedDerivative, match="article_grad"):
        jvp(lambda w: M.regularize(w, "log_sq", 0.1, article_grad=True), (w,), (torch.ones_like(w),))


def test_per_example_gradients_through_a_refusing_op_under_vmap():
    z = torch.randn(6, 2, 3, dtype=torch.float64)   # 6 independent problems, each a 2 x 3 batch

    def cost(zi):
        return M.zca_whiten(zi, mode="example").square().sum()
    per = vmap(torch.func.grad(cost))(z)
    for i in range(6):
        zi = z[i].clone().requires_grad_()
        (g,) = torch.autograd.grad(cost(zi), zi)
        torch.testing.assert_close(per[i], g, rtol=0, atol=1e-12)


def test_per_example_gradients_through_the_cross_entropy_under_vmap():
    """vmap(grad) runs the backward with grad enabled (its create_graph path): class indices included."""
    torch.manual_seed(3)
    z = torch.randn(5, 3, 4, dtype=torch.float64)
    t = torch.randint(0, 4, (5, 3))

    def cost(zi, ti):
        return M.softmax_cross_entropy(zi, ti)
    per = vmap(torch.func.grad(cost))(z, t)
    for i in range(5):
        zi = z[i].clone().requires_grad_()
        (g,) = torch.autograd.grad(cost(zi, t[i]), zi)
        torch.testing.assert_close(per[i], g, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", list(MODELS))
def test_eager_forward_over_reverse_equals_the_plain_twin(name):
    """Parameters dual with tangents v, a plain first-order grad (no create_graph): the gradient's tangent is H v."""
    model, x, y = MODELS[name]()
    twin = _Twin(model)
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    vs = {n: torch.randn_like(p) for n, p in params.items()}

    def hv(module, loss, prefix=""):
        with fwAD.dual_level():
            duals = {prefix + n: fwAD.make_dual(params[n], vs[n]) for n in names}
            with torch.nn.utils.stateless._reparametrize_module(module, duals):
                out = loss(module(x), y)
            gs = torch.autograd.grad(out, [params[n] for n in names])
            return [fwAD.unpack_dual(g).tangent for g in gs]
    for a, b in zip(hv(model, M.softmax_cross_entropy), hv(twin, F.cross_entropy, "inner.")):
        assert a is not None
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
