"""Whitening of convolutional feature maps in groups of channels: ``iter_norm`` against IterNorm-pytorch's
own Function (its math re-expressed below), the modules' affine transform and running estimates per group,
CNN6 with each normalisation against its plain-torch twin, and the errors for bad group sizes.

The registry (``manualbp.testing.opinfo``) runs gradcheck, forward mode, the references and non-contiguous
samples on (N, C, H, W) inputs in groups; these tests check what it does not."""
from __future__ import annotations

import copy

import pytest
import torch

import manualbp.functional as MF
import manualbp.nn as mnn
from manualbp.models import CNN6
from manualbp.testing.reference_models import cnn6_forward

D64 = torch.float64


class PeerIterNorm(torch.autograd.Function):
    """IterNorm-pytorch's ``iterative_normalization_py`` (huangleiBuaa/IterNorm-pytorch,
    extension/normailzation/iterative_normalization.py, commit 3a940a9), its forward and hand-written backward
    re-expressed with the same operations in the same order: the input as (groups, channels per group, N H W)
    columns, Sigma = eps I + xc xc^T / m, rTr = 1 / tr(Sigma), P_{k+1} = 1.5 P_k - 0.5 P_k^3 Sigma rTr,
    wm = P_T sqrt(rTr); its backward runs the iterations k = T..2 on transposed iterates and folds the step
    from P_0 = I and the trace into one scale."""

    @staticmethod
    def forward(ctx, X, running_mean, running_wm, nc, T, eps, momentum, training):
        groups = X.shape[1] // nc
        x = X.transpose(0, 1).reshape(groups, nc, -1)
        m = x.shape[-1]
        if not training:
            xn = running_wm @ (x - running_mean)
            return xn.reshape(X.shape[1], X.shape[0], *X.shape[2:]).transpose(0, 1).contiguous()
        mean = x.mean(-1, keepdim=True)
        xc = x - mean
        eye = torch.eye(nc, dtype=X.dtype).expand(groups, nc, nc)
        sigma = eps * eye + xc @ xc.transpose(1, 2) / m
        r_tr = 1.0 / (sigma * eye).sum((1, 2), keepdim=True)
        sigma_n = sigma * r_tr
        P = [eye]
        for _ in range(T):
            P.append(1.5 * P[-1] - 0.5 * torch.linalg.matrix_power(P[-1], 3) @ sigma_n)
        wm = P[T] * r_tr.sqrt()
        running_mean.copy_(momentum * mean + (1 - momentum) * running_mean)
        running_wm.copy_(momentum * wm + (1 - momentum) * running_wm)
        ctx.save_for_backward(xc, r_tr, sigma_n, wm, *P[:T])
        ctx.T = T
        xn = wm @ xc
        return xn.reshape(X.shape[1], X.shape[0], *X.shape[2:]).transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad):
        xc, r_tr, sigma_n, wm, *P = ctx.saved_tensors
        sn = sigma_n.transpose(-2, -1)
        m = xc.shape[-1]
        g_ = grad.transpose(0, 1).reshape(xc.shape)
        g_wm = g_ @ xc.transpose(-2, -1)
        g_P = g_wm * r_tr.sqrt()
        g_sn = 0
        for k in range(ctx.T, 1, -1):
            Pk = P[k - 1].transpose(-2, -1)
            P2 = Pk @ Pk
            g_sn = g_sn + P2 @ Pk @ g_P
            g_tmp = g_P @ sn
            g_P = 1.5 * g_P - 0.5 * g_tmp @ P2 - 0.5 * P2 @ g_tmp - 0.5 * Pk @ g_tmp @ Pk
        g_sn = g_sn + g_P
        eye = P[0]
        g_tr = ((-sn @ g_sn + g_wm.transpose(-2, -1) @ wm) * eye).sum((1, 2), keepdim=True) * eye
        g_sigma = (g_sn + g_sn.transpose(-2, -1) + 2.0 * g_tr) * (-0.5 / m * r_tr)
        g_x = wm @ (g_ - g_.mean(-1, keepdim=True)) + g_sigma @ xc
        return (g_x.reshape(grad.shape[1], grad.shape[0], *grad.shape[2:]).transpose(0, 1).contiguous(),
                None, None, None, None, None, None, None)


def _maps(shape, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=D64)
    if scale is not None:   # channels of different scales and correlated: a covariance far from I
        x = x * torch.linspace(0.5, 2.0, shape[1], dtype=D64)[None, :, None, None]
        x = x + 0.5 * x.roll(1, dims=1)
    return x


@pytest.mark.parametrize("shape, group_size, T", [((4, 8, 5, 3), 4, 5), ((3, 6, 4, 4), 3, 5), ((5, 4, 2, 3), 4, 7),
                                                  ((2, 16, 6, 6), 8, 5)])
def test_iter_norm_maps_equals_iternorm_pytorch(shape, group_size, T):
    """Forward, updated running buffers and input gradient of iter_norm on (N, C, H, W) in groups equal the
    peer implementation's to 1e-10 in float64, in training and then in eval mode with the updated buffers."""
    x0 = _maps(shape, scale=True)
    groups = shape[1] // group_size
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=D64)   # a random incoming gradient
    eps, momentum = 1e-5, 0.2
    # ours: running mean (C,), running whitening (G, g, g)
    rm, rw = torch.zeros(shape[1], dtype=D64), torch.eye(group_size, dtype=D64).repeat(groups, 1, 1)
    # the peer's: running mean (G, g, 1), running whitening (G, g, g)
    pm, pw = torch.zeros(groups, group_size, 1, dtype=D64), rw.clone()
    x, xp = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    y = MF.iter_norm(x, rm, rw, True, momentum, eps, T, group_size)
    yp = PeerIterNorm.apply(xp, pm, pw, group_size, T, eps, momentum, True)
    torch.testing.assert_close(y, yp, rtol=0, atol=1e-10)
    (gx,) = torch.autograd.grad(y, x, w)
    (gp,) = torch.autograd.grad(yp, xp, w)
    assert gx.abs().max() > 1e-3   # not a vanishing gradient compared with another
    torch.testing.assert_close(gx, gp, rtol=0, atol=1e-10)
    torch.testing.assert_close(rm, pm.reshape(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(rw, pw, rtol=0, atol=1e-12)
    # eval mode with the running estimates
    x2 = _maps(shape, seed=3)
    torch.testing.assert_close(MF.iter_norm(x2, rm, rw, False, momentum, eps, T, group_size),
                               PeerIterNorm.apply(x2, pm, pw, group_size, T, eps, momentum, False), rtol=0, atol=1e-12)


def test_iter_norm_module_equals_iternorm_pytorch_module_with_affine():
    """The IterNorm module with group_size and affine=True: y = iter_norm(x) * weight + bias per channel, with the
    parameters' gradients those of the peer module's (weight and bias broadcast over (1, C, 1, 1))."""
    torch.manual_seed(0)
    x0 = _maps((4, 8, 3, 3), scale=True)
    mod = mnn.IterNorm(8, eps=1e-5, momentum=0.1, iterations=5, group_size=4, affine=True).double()
    assert torch.equal(mod.weight, torch.ones(8, dtype=D64)) and torch.equal(mod.bias, torch.zeros(8, dtype=D64))
    with torch.no_grad():
        mod.weight.normal_(1, 0.5)
        mod.bias.normal_(0, 0.5)
    pw_, pb_ = (mod.weight.detach().reshape(1, 8, 1, 1).clone().requires_grad_(),
                mod.bias.detach().reshape(1, 8, 1, 1).clone().requires_grad_())
    pm, pwm = torch.zeros(2, 4, 1, dtype=D64), torch.eye(4, dtype=D64).repeat(2, 1, 1)
    x, xp = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    out = mod(x)
    outp = PeerIterNorm.apply(xp, pm, pwm, 4, 5, 1e-5, 0.1, True) * pw_ + pb_
    torch.testing.assert_close(out, outp, rtol=0, atol=1e-10)
    g = torch.randn(out.shape, dtype=D64)
    grads = torch.autograd.grad(out, (x, mod.weight, mod.bias), g)
    gradsp = torch.autograd.grad(outp, (xp, pw_, pb_), g)
    for a, b in zip(grads, gradsp):
        torch.testing.assert_close(a, b.reshape(a.shape), rtol=0, atol=1e-10)
    torch.testing.assert_close(mod.running_whitening, pwm, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", ["dbn", "iter_norm"])
def test_running_estimates_per_group(layer):
    """After two training batches each group's running matrix is (1 - m)^2 I + m (1 - m) U_1 + m U_2 with U_b the
    batch's whitening matrix of that group's channels alone, recomputed from the pixels; eval mode applies them."""
    g, c, m = 4, 8, 0.3
    kw = dict(group_size=g, momentum=m, eps=1e-3)
    mod = (mnn.DecorrelatedBatchNorm(c, **kw) if layer == "dbn" else mnn.IterNorm(c, iterations=6, **kw)).double()
    batches = [_maps((5, c, 3, 3), seed=s, scale=True) for s in (0, 1)]
    mean_ref, w_ref = torch.zeros(c, dtype=D64), torch.eye(g, dtype=D64).repeat(c // g, 1, 1)
    for xb in batches:
        mod(xb)
        rows = xb.permute(0, 2, 3, 1).reshape(-1, c)
        mu = rows.mean(0)
        for k in range(c // g):
            a = rows[:, k * g:(k + 1) * g] - mu[k * g:(k + 1) * g]
            S = a.T @ a / rows.shape[0] + 1e-3 * torch.eye(g, dtype=D64)
            if layer == "dbn":
                lam, E = torch.linalg.eigh(S)
                U = E @ torch.diag(lam ** -0.5) @ E.T
            else:   # six Newton-Schulz steps on S / tr(S)
                P, tr = torch.eye(g, dtype=D64), torch.trace(S)
                for _ in range(6):
                    P = 1.5 * P - 0.5 * P @ P @ P @ (S / tr)
                U = P / tr.sqrt()
            w_ref[k] = (1 - m) * w_ref[k] + m * U
        mean_ref = (1 - m) * mean_ref + m * mu
    torch.testing.assert_close(mod.running_mean, mean_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(mod.running_whitening, w_ref, rtol=0, atol=1e-10)
    mod.eval()
    x = _maps((2, c, 2, 2), seed=5)
    rows = x.permute(0, 2, 3, 1).reshape(-1, c) - mean_ref
    want = torch.cat([rows[:, k * g:(k + 1) * g] @ w_ref[k] for k in range(c // g)], 1)
    torch.testing.assert_close(mod(x), want.reshape(2, 2, 2, c).permute(0, 3, 1, 2), rtol=0, atol=1e-10)


@pytest.mark.parametrize("layer", ["dbn", "iter_norm"])
def test_feature_maps_are_whitened_per_group(layer):
    """In training mode each group's output channels, over the N H W pixels, have covariance I (up to eps; IterNorm
    after enough steps) and the groups are whitened independently (cross-group covariance is left as it is)."""
    x = _maps((16, 8, 6, 6), scale=True)
    fn = MF.decorrelated_batch_norm if layer == "dbn" else MF.iter_norm
    kw = dict(eps=1e-9, group_size=4) if layer == "dbn" else dict(eps=1e-9, group_size=4, iterations=30)
    y = fn(x, **kw)
    rows = y.permute(0, 2, 3, 1).reshape(-1, 8)
    cov = rows.T @ rows / rows.shape[0]
    for k in range(2):
        blk = cov[4 * k:4 * k + 4, 4 * k:4 * k + 4]
        torch.testing.assert_close(blk, torch.eye(4, dtype=D64), rtol=0, atol=1e-6)
    assert cov[:4, 4:].abs().max() > 0.05   # the groups are not decorrelated from each other


@pytest.mark.parametrize("norm, kw", [("dbn", dict(group_size=8, affine=True, eps=1e-3)),
                                      ("decorrelated_batch_norm", dict(group_size=16, backend="svd")),
                                      ("iter_norm", dict(group_size=4, affine=True)),
                                      ("iter_norm", dict(affine=False)),
                                      ("batch_norm", dict(affine=True))])
def test_cnn6_norm_gradients_equal_plain_torch(norm, kw):
    """CNN6 with model.norm: loss, every parameter's gradient (convolutions and the affine scales and shifts) and
    the updated running buffers equal the plain-torch twin's (the ops' references, autograd)."""
    torch.manual_seed(0)
    m = CNN6(norm=norm, norm_kwargs=kw).double()
    with torch.no_grad():
        for b in m.bns:
            if b.affine:
                b.weight.normal_(1, 0.3)
                b.bias.normal_(0, 0.3)
    r = copy.deepcopy(m)
    x = torch.randn(8, 3, 32, 32, dtype=D64)
    y = torch.randint(0, 10, (8,))
    MF.softmax_cross_entropy(m(x), y).backward()
    torch.nn.functional.cross_entropy(cnn6_forward(r, x), y).backward()
    n = 0
    for (name, a), b in zip(m.named_parameters(), r.parameters()):
        assert a.grad.abs().max() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-11, msg=lambda s: f"{name}: {s}")
        n += 1
    assert n == 6 + (2 * 5 if kw.get("affine") else 0)
    for a, b in zip(m.buffers(), r.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


def test_cnn6_norm_from_config_trains(tmp_path):
    """model.norm=dbn with a group size through the config overrides: the model's layers are the grouped DBN, and
    a few steps of training lower the loss on a fixed batch."""
    from manualbp.models import build_model
    m = build_model({"name": "cnn6", "norm": "dbn", "norm_kwargs": {"group_size": 8, "affine": True}})
    assert all(isinstance(b, mnn.DecorrelatedBatchNorm) and b.group_size == 8 and b.affine for b in m.bns)
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        loss = MF.softmax_cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("call, match", [
    (lambda: MF.iter_norm(torch.randn(2, 6, 3, 3), group_size=4), "group_size must be a positive divisor of the 6"),
    (lambda: MF.decorrelated_batch_norm(torch.randn(2, 6, 3, 3), group_size=0), "positive divisor"),
    (lambda: MF.iter_norm(torch.randn(2, 6, 3), group_size=3), "2-D or 4-D"),
    (lambda: MF.iter_norm(torch.randn(1, 4, 1, 1)), "at least 2 samples per channel"),
    (lambda: MF.decorrelated_batch_norm(torch.randn(2, 4, 2, 2), torch.zeros(4), torch.eye(4), group_size=2),
     r"running_whitening must be a tensor of shape \(2, 2, 2\)"),
    (lambda: mnn.IterNorm(6, group_size=4), "group_size must be a positive divisor of num_features = 6"),
    (lambda: mnn.DecorrelatedBatchNorm(6, affine="yes"), "affine must be True or False"),
    (lambda: CNN6(norm="zca_dim"), "norm must be one of"),
    (lambda: CNN6(batch_norm=True, norm="dbn"), "both place a layer"),
    (lambda: MF.channel_affine(torch.randn(2, 3, 4, 4), torch.ones(4)), "one entry per channel"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_more_bad_input_is_named():
    """An expanded running buffer (entries sharing memory) cannot be updated in place; a wrong dtype is named with
    both dtypes; CNN6's bn_* settings do not silently vanish under another norm; an empty batch in eval mode is
    an empty result."""
    x = torch.randn(4, 4, 2, 2)
    with pytest.raises(ValueError, match=r"share memory .*running_whitening.clone\(\)"):
        MF.iter_norm(x, torch.zeros(4), torch.eye(2).expand(2, 2, 2), group_size=2)
    with pytest.raises(ValueError, match=r"with x's dtype and device \(torch.float32 on cpu\); got shape \(2, 2, 2\), "
                                         r"torch.float64"):
        MF.decorrelated_batch_norm(x, torch.zeros(4), torch.eye(2, dtype=D64).repeat(2, 1, 1), group_size=2)
    with pytest.raises(ValueError, match=r"\['bn_eps'\] set the layers of batch_norm=True only"):
        CNN6(norm="dbn", bn_eps=1e-3)
    empty = MF.iter_norm(torch.randn(0, 4, 2, 2), torch.zeros(4), torch.eye(2).repeat(2, 1, 1), training=False,
                         group_size=2)
    assert empty.shape == (0, 4, 2, 2)
