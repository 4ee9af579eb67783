"""ConstantBiasAdam (the articles' hand-written Adam): its update against the equations written again
in numpy, resuming through state_dict bit for bit, its name in configs, and its bad settings."""
import numpy as np
import pytest
import torch

from manualbp.optim import ConstantBiasAdam, make_optimizer


def _numpy_adamc(w0, grads, lr, b1, b2, eps):
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    return w


@pytest.mark.parametrize("lr, betas, eps", [(1e-3, (0.9, 0.999), 1e-8), (0.05, (0.5, 0.9), 1e-40),
                                             (1e-2, (0.0, 0.99), 1e-9)])
def test_update_equals_the_equations(lr, betas, eps):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(7)]
    w = torch.tensor(w0, requires_grad=True)
    opt = ConstantBiasAdam([w], lr=lr, betas=betas, eps=eps)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(w.detach().numpy(), _numpy_adamc(w0, grads, lr, *betas, eps), rtol=1e-12, atol=1e-14)


def test_differs_from_textbook_adam_as_the_constant_corrections_say():
    """The first step of both is lr sign(g) (up to eps); after many steps of a constant gradient
    textbook Adam's step tends to lr and this one's to lr sqrt(1 - b2) / (1 - b1) = 0.316 lr."""
    w1 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    w2 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a, b = ConstantBiasAdam([w1], lr=1.0), torch.optim.Adam([w2], lr=1.0)
    steps1, steps2 = [], []
    for _ in range(12000):
        for w, o, s in ((w1, a, steps1), (w2, b, steps2)):
            before = w.detach().clone()
            w.grad = torch.ones(1, dtype=torch.float64)
            o.step()
            s.append((before - w.detach()).item())
    assert steps1[0] == pytest.approx(1.0, rel=1e-6) and steps2[0] == pytest.approx(1.0, rel=1e-6)
    t = len(steps1)   # m_t = 1 - b1^t, v_t = 1 - b2^t for a constant gradient 1
    assert steps1[-1] == pytest.approx((1 - 0.9 ** t) / 0.1 / ((1 - 0.999 ** t) / 0.001) ** 0.5, rel=1e-6)
    assert steps1[-1] == pytest.approx(0.001 ** 0.5 / 0.1, rel=1e-3)
    assert steps2[-1] == pytest.approx(1.0, rel=1e-4)


def test_state_dict_resume_is_exact():
    torch.manual_seed(0)
    grads = [torch.randn(5) for _ in range(6)]
    w = torch.randn(5, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_()
    ref = ConstantBiasAdam([w_ref], lr=0.01)
    for g in grads:
        w_ref.grad = g.clone()
        ref.step()
    opt = ConstantBiasAdam([w], lr=0.01)
    for g in grads[:3]:
        w.grad = g.clone()
        opt.step()
    saved = opt.state_dict()
    w2 = w.detach().clone().requires_grad_()
    resumed = ConstantBiasAdam([w2], lr=0.01)
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        w2.grad = g.clone()
        resumed.step()
    assert torch.equal(w2, w_ref)
    assert set(resumed.state[w2]) == {"exp_avg", "exp_avg_sq"}   # the probes read exp_avg


def test_by_name_and_bad_settings():
    w = torch.zeros(2, requires_grad=True)
    assert type(make_optimizer("ConstantBiasAdam", [w], lr=1e-3, eps=1e-9)) is ConstantBiasAdam
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got 0"):
        ConstantBiasAdam([w], lr=0)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\)"):
        ConstantBiasAdam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="unknown setting 'beta1'"):
        make_optimizer("ConstantBiasAdam", [w], beta1=0.9)
