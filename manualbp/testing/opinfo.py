"""The op registry: one ``OpInfo`` per op (sample inputs with the edge cases, a plain-autograd
reference of the same math, which checks apply). ``tests/test_gradients.py`` and
``scripts/gradcheck.py`` run every entry; adding an op means adding an entry to this registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

import manualbp.functional as M
from manualbp.testing import references as E
from manualbp.functional.dilated import CASES as DILATION_CASES
from manualbp.functional.dilated import DilationTape, dilation_tap
from manualbp.functional.regularizers import REGULARIZERS


@dataclass
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    desc: str = ""
    gradgrad: bool = True       # part of gradgradcheck (False at kinks, where finite differences of R' jump)


@dataclass
class OpInfo:
    name: str
    family: str
    op: Callable
    ref: Callable
    samples: Callable[[torch.dtype, torch.device], list]
    batched_grad: bool = True           # run gradcheck's check_batched_grad (vmap over the backward)
    gradgrad: bool = True               # backward differentiable again (gradgradcheck); else it refuses
    jvp: bool = True                    # a forward-mode rule (check_forward_ad, jvp against the reference); else it
                                        # refuses with RefusedDerivative
    gradient: bool = True               # False: the backward is a named variant that is not the gradient
                                        # (gradcheck must FAIL for it; the reference checks it instead)
    tol32: tuple = (1e-4, 1e-5)         # (rtol, atol) against the reference in float32
    tol64: tuple = (1e-7, 1e-9)         # ... in float64

    def tolerance(self, dtype):
        return self.tol64 if dtype == torch.float64 else self.tol32


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t(*shape, dtype, device, grad=True, gen=None, scale=1.0, shift=0.0):
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * scale + shift
    return x.to(dtype=dtype, device=device).requires_grad_(grad)


def _away_from_zero(x, margin=0.2):
    # move values out of (-margin, margin) so that kinks are not straddled by finite differences
    with torch.no_grad():
        x.add_(torch.sign(x) * margin)
    return x


def _plain_tap(x):
    """The tap on layer 5's input under case 3's rules: layer 4 has no rule, so it only records g_5."""
    return dilation_tap(x, DilationTape(DILATION_CASES[3]["rules"], rate=1000.0), 5)


# ---------------------------------------------------------------- plain-autograd references

def _inv_sqrt_reference(S: torch.Tensor, iterations: int = 40) -> torch.Tensor:
    """(S)^{-1/2} for SPD S by the Denman-Beavers iteration (matrix inverses only, no
    eigendecomposition), differentiated by autograd: finite for repeated eigenvalues."""
    c = torch.diagonal(S).sum() / S.shape[0]
    Y, Z = S / c, torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    for _ in range(iterations):
        Y, Z = (Y + torch.linalg.inv(Z)) / 2, (Z + torch.linalg.inv(Y)) / 2
    return Z / torch.sqrt(c)


def _eye(n, like):
    return torch.eye(n, dtype=like.dtype, device=like.device)


def ref_zca_whiten(x, eps=1e-5, mode="dim", backend="eigh"):
    A = x if mode == "dim" else x.T
    S = A.T @ A / A.shape[0] + eps * _eye(A.shape[1], A)
    Y = A @ _inv_sqrt_reference(S)
    return Y if mode == "dim" else Y.T


def _ref_rows(x):
    """(N, C, H, W) -> (N H W, C) by permute and reshape (autograd's), (N, C) unchanged."""
    return x if x.dim() == 2 else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _ref_unrows(y, x):
    return y if x.dim() == 2 else y.reshape(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).permute(0, 3, 1, 2)


def _ref_grouped_whitening(x, running_mean, running_whitening, training, momentum, group_size, inv_sqrt):
    """Centre the samples' matrix, then whiten each group of channels with ``inv_sqrt(S_group)``, one group at
    a time with Python slices; updates the running buffers as the ops document."""
    rows = _ref_rows(x)
    c = rows.shape[1]
    g = group_size or c
    if not training:
        w = running_whitening.reshape(c // g, g, g)
        xc = rows - running_mean
        return _ref_unrows(torch.cat([xc[:, i * g:(i + 1) * g] @ w[i] for i in range(c // g)], 1), x)
    mu = rows.mean(0)
    xc = rows - mu
    ys, us = [], []
    for i in range(c // g):
        a = xc[:, i * g:(i + 1) * g]
        us.append(inv_sqrt(a.T @ a / rows.shape[0]))
        ys.append(a @ us[-1])
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mu, alpha=momentum)
            running_whitening.mul_(1 - momentum).add_(torch.stack(us).reshape(running_whitening.shape),
                                                      alpha=momentum)
    return _ref_unrows(torch.cat(ys, 1), x)


def ref_decorrelated_batch_norm(x, running_mean=None, running_whitening=None, training=True,
                                momentum=0.1, eps=1e-5, backend="eigh", group_size=None):
    return _ref_grouped_whitening(x, running_mean, running_whitening, training, momentum, group_size,
                                  lambda S: _inv_sqrt_reference(S + eps * _eye(S.shape[0], S)))


def _newton_schulz_reference(S, eps, iterations):
    S = S + eps * _eye(S.shape[0], S)
    tr = torch.trace(S)
    P = _eye(S.shape[0], S)
    for _ in range(iterations):
        P = 1.5 * P - 0.5 * torch.linalg.matrix_power(P, 3) @ (S / tr)
    return P / torch.sqrt(tr)


def ref_iter_norm(x, running_mean=None, running_whitening=None, training=True, momentum=0.1, eps=1e-5,
                  iterations=5, group_size=None):
    return _ref_grouped_whitening(x, running_mean, running_whitening, training, momentum, group_size,
                                  lambda S: _newton_schulz_reference(S, eps, iterations))


def ref_sparse_filtering(z, eps=1e-8, activation="soft_abs", reduction="sum"):
    f = torch.sqrt(z ** 2 + eps) if activation == "soft_abs" else E.elu(z)
    f = f / torch.sqrt((f ** 2).sum(0, keepdim=True) + eps)
    f = f / torch.sqrt((f ** 2).sum(1, keepdim=True) + eps)
    return f.sum() / (f.numel() if reduction == "mean" else 1)


def ref_standardize(x, eps=1e-5, dim=0):
    xc = x - x.mean(dim, keepdim=True)
    return xc / torch.sqrt((xc ** 2).mean(dim, keepdim=True) + eps)


# R(theta) written from the articles' formulas, independently of manualbp.functional.regularizers (eps = 1e-7;
# smooth_abs, elastic and abs_smooth keep eps inside R, as the op documents)
_REG_EPS = 1e-7
REGULARIZER_REFERENCES = {
    "l1": lambda t: torch.abs(t),
    "l2": lambda t: t ** 2,
    "linear": lambda t: t,
    "smooth_abs": lambda t: torch.sqrt(t ** 2 + _REG_EPS),
    "elastic": lambda t: (torch.abs(t) + torch.sqrt(t ** 2 + _REG_EPS)) / 2,
    "abs_smooth": lambda t: torch.sqrt(torch.abs(t) ** 2 + _REG_EPS),
    "ratio": lambda t: torch.sqrt(t ** 2) / t,
    "neg_log1p_sq": lambda t: -torch.log(1 + t ** 2),
    "neg_tanh": lambda t: -torch.tanh(t),
    "neg_tanh_sq": lambda t: -torch.tanh(t ** 2),
    "neg_tanh_abs": lambda t: -torch.tanh(torch.abs(t)),
    "neg_tanh_abs_sq": lambda t: -torch.tanh(torch.abs(t) ** 2),
    "sin": lambda t: torch.sin(t),
    "abs_sin": lambda t: torch.abs(torch.sin(t)),
    "log_sq": lambda t: torch.log(t ** 2),
    "x_log_sq": lambda t: t * torch.log(t ** 2),
}


def _ref_regularize(name):
    value = REGULARIZER_REFERENCES[name]

    def ref(w, name, lam=1.0):
        return lam * value(w).sum()
    return ref


# ---------------------------------------------------------------- samples

def _dense_samples(dtype, device):
    g = _gen(1)
    return [
        Sample((_t(4, 5, dtype=dtype, device=device, gen=g), _t(3, 5, dtype=dtype, device=device, gen=g),
                _t(3, dtype=dtype, device=device, gen=g)), desc="bias"),
        Sample((_t(4, 5, dtype=dtype, device=device, gen=g), _t(3, 5, dtype=dtype, device=device, gen=g)),
               desc="no bias"),
        Sample((_t(1, 5, dtype=dtype, device=device, gen=g), _t(3, 5, dtype=dtype, device=device, gen=g),
                _t(3, dtype=dtype, device=device, gen=g)), desc="batch 1"),
        Sample((_t(2, 3, 5, dtype=dtype, device=device, gen=g), _t(3, 5, dtype=dtype, device=device, gen=g)),
               desc="3-D input"),
    ]


def _conv_samples(dtype, device):
    g = _gen(2)
    t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
    return [
        Sample((t(2, 3, 7, 7), t(4, 3, 3, 3), t(4)), dict(stride=1, padding="same"), "same, stride 1, bias"),
        Sample((t(2, 3, 8, 8), t(4, 3, 3, 3)), dict(stride=2, padding="same"), "same, stride 2, no bias"),
        Sample((t(1, 2, 6, 5), t(3, 2, 3, 3), t(3)), dict(stride=(2, 1), padding=0), "valid, batch 1"),
        Sample((t(2, 3, 8, 8), t(4, 3, 3, 3), t(4)), dict(stride=2, padding="tf_same"),
               "tf_same, stride 2, even input: 0 before, 1 after"),
        Sample((t(1, 2, 7, 7), t(3, 2, 3, 3), t(3)), dict(stride=2, padding="tf_same"),
               "tf_same, stride 2, odd input: (1, 1), the native path"),
        Sample((t(1, 2, 7, 6), t(3, 2, 4, 4)), dict(stride=(2, 1), padding="tf_same"),
               "tf_same, kernel 4, stride (2, 1): (1, 2) rows and columns"),
    ]


def _conv_t_samples(dtype, device):
    g = _gen(3)
    t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
    return [
        Sample((t(2, 3, 4, 4), t(3, 2, 3, 3), t(2)), dict(stride=2, padding=1, output_padding=1), "x2 up"),
        Sample((t(1, 2, 3, 5), t(2, 4, 3, 3)), dict(stride=1, padding=1), "stride 1, no bias, batch 1"),
    ]


def _pool_samples(dtype, device):
    g = _gen(4)
    return [Sample((_t(2, 3, 6, 6, dtype=dtype, device=device, gen=g),), dict(kernel_size=2), "2x2"),
            Sample((_t(1, 2, 7, 5, dtype=dtype, device=device, gen=g),), dict(kernel_size=3, stride=2,
                                                                              padding=1), "3x3 s2 overlap")]


def _pool_mix_samples(dtype, device):
    g = _gen(17)
    t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
    return [Sample((t(2, 3, 6, 6), t()), dict(kernel_size=2), "2x2, scalar w"),
            Sample((t(1, 2, 7, 5), t(1)), dict(kernel_size=3, stride=2), "3x3 s2 overlap, w of shape (1,)")]


def _interp_samples(mode):
    def samples(dtype, device):
        g = _gen(5)
        t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
        return [Sample((t(2, 2, 5, 5),), dict(size=(6, 6), mode=mode), "5 -> 6"),
                Sample((t(1, 3, 4, 3),), dict(scale_factor=2, mode=mode), "x2"),
                Sample((t(2, 1, 6, 6),), dict(size=(3, 4), mode=mode, align_corners=True), "down, corners"),
                # output size not an exact multiple: torch maps coordinates by 1 / scale_factor
                Sample((t(1, 2, 7, 7),), dict(scale_factor=1.5, mode=mode), "7x7 x1.5"),
                Sample((t(1, 1, 7, 7),), dict(scale_factor=2.3, mode=mode), "7x7 x2.3"),
                Sample((t(1, 1, 7, 6),), dict(scale_factor=(0.6, 1.7), mode=mode), "7x6 x(0.6, 1.7)")]
    return samples


def _unary_samples(dtype, device):
    g = _gen(6)
    x = _t(3, 4, dtype=dtype, device=device, gen=g)
    x1 = _t(1, 5, dtype=dtype, device=device, gen=g)
    return [Sample((_away_from_zero(x, 0.05),), desc="3x4"), Sample((_away_from_zero(x1, 0.05),), desc="batch 1")]


def _ce_samples(dtype, device):
    g = _gen(7)
    logits = _t(5, 4, dtype=dtype, device=device, gen=g, scale=3.0)
    target = torch.tensor([0, 3, 1, 1, 2], device=device)
    probs = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1).to(dtype=dtype, device=device)
    big = _t(2, 3, dtype=dtype, device=device, gen=g, scale=1.0, shift=0.0)
    with torch.no_grad():
        big[:, 0] += 80  # large logits: the row-wise max subtraction must keep this finite
    soft = probs.detach().clone().requires_grad_()
    return [Sample((logits, target), desc="indices"), Sample((logits, probs), desc="soft targets"),
            Sample((logits, soft), desc="soft targets that require grad"),
            Sample((logits, target), dict(reduction="sum"), "sum"),
            Sample((big, torch.tensor([0, 2], device=device)), desc="large logits"),
            Sample((_t(1, 3, dtype=dtype, device=device, gen=g), torch.tensor([2], device=device)),
                   desc="batch 1")]


def _mse_samples(dtype, device):
    g = _gen(8)
    t = lambda *s, grad=True: _t(*s, dtype=dtype, device=device, gen=g, grad=grad)  # noqa: E731
    return [Sample((t(3, 4), t(3, 4, grad=False)), desc="pred"), Sample((t(2, 5), t(2, 5)), dict(reduction="sum"),
                                                                   "pred and target, sum")]


def _mse_samples_plain(dtype, device):
    """The mse samples without a reduction argument (one-hot-like targets and a target with gradient)."""
    g = _gen(24)
    t = lambda *s, grad=True: _t(*s, dtype=dtype, device=device, gen=g, grad=grad)  # noqa: E731
    onehot = torch.eye(4, dtype=dtype, device=device)[torch.tensor([0, 3, 1])]
    return [Sample((t(3, 4), onehot), desc="one-hot targets"), Sample((t(2, 5), t(2, 5)), desc="target with gradient"),
            Sample((t(1, 3), t(1, 3, grad=False)), desc="batch 1")]


def _softmax_bce_samples(dtype, device):
    g = _gen(25)
    logits = _t(5, 4, dtype=dtype, device=device, gen=g, scale=2.0)
    onehot = torch.eye(4, dtype=dtype, device=device)[torch.tensor([0, 3, 1, 1, 2])]
    soft = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1).to(dtype=dtype, device=device)
    return [Sample((logits, onehot), desc="one-hot targets, sum"),
            Sample((logits, onehot), dict(reduction="mean"), "one-hot targets, mean"),
            Sample((logits, soft.clone().requires_grad_()), desc="soft targets that require grad")]


def _bce_samples(dtype, device):
    g = _gen(9)
    p = torch.rand(4, 3, generator=g, dtype=torch.float64).mul(0.8).add(0.1).to(dtype=dtype, device=device)
    t = (torch.rand(4, 3, generator=g) > 0.5).to(dtype=dtype, device=device)
    soft = torch.rand(4, 3, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return [Sample((p.clone().requires_grad_(), t), desc="binary targets"),
            Sample((p.clone().requires_grad_(), soft.clone().requires_grad_()), dict(reduction="sum"),
                   "soft targets, sum")]


def _norm_samples(with_eps):
    def samples(dtype, device):
        g = _gen(10)
        t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
        kw = dict(eps=1e-3) if with_eps else {}
        return [Sample((t(6, 4),), dict(kw), "per dimension"), Sample((t(4, 7),), dict(kw, dim=1), "per example"),
                Sample((t(2, 3, 4),), dict(kw, dim=2), "3-D, last dim")]
    return samples


def _bn_samples(dtype, device):
    g = _gen(11)
    t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
    rs = lambda c: (torch.zeros(c, dtype=dtype, device=device), torch.ones(c, dtype=dtype, device=device))  # noqa
    rm_eval = torch.randn(3, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    rv_eval = torch.rand(3, generator=g, dtype=torch.float64).add(0.5).to(dtype=dtype, device=device)
    return [Sample((t(6, 3), *rs(3)), dict(training=True, momentum=0.1, eps=1e-5), "2-D train"),
            Sample((t(3, 2, 4, 4), *rs(2)), dict(training=True, momentum=0.1, eps=1e-8), "4-D train, eps 1e-8"),
            Sample((t(4, 3), None, None), dict(training=True), "2-D train, no running stats"),
            Sample((t(1, 3), rm_eval, rv_eval), dict(training=False), "2-D eval, batch 1"),
            Sample((t(2, 3, 3, 3), rm_eval, rv_eval), dict(training=False), "4-D eval")]


def _orthonormal(n, d, gen, centred=False):
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if centred:
        a = a - a.mean(0)
    q, _ = torch.linalg.qr(a)
    return q


def _zca_samples(mode):
    def samples(dtype, device):
        g = _gen(12)
        t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
        eq = _orthonormal(8, 4, g) * (8 ** 0.5)   # X^T X / N = I: all eigenvalues equal
        if mode == "example":
            eq = _orthonormal(6, 3, g).T * (6 ** 0.5)  # X X^T / D = I
        eq = eq.to(dtype=dtype, device=device).requires_grad_()
        return [Sample((t(8, 4),), dict(eps=1e-2, mode=mode), "N > D"),
                Sample((t(3, 5),), dict(eps=1e-1, mode=mode), "N < D (rank-deficient)"),
                Sample((eq,), dict(eps=1e-2, mode=mode), "repeated eigenvalues"),
                Sample((t(1, 3),), dict(eps=1e-1, mode=mode), "batch 1"),
                Sample((t(6, 3),), dict(eps=1e-2, mode=mode, backend="svd"), "svd back end")]
    return samples


def _zca_variant_samples(grad):
    """Samples with well-separated eigenvalues (the article's K divides by their differences)."""
    def samples(dtype, device):
        g = _gen(23)
        out = []
        for mode, shape, eps in (("dim", (9, 4), 1e-2), ("example", (4, 7), 1e-1), ("example", (5, 6), 0.06)):
            a = torch.randn(*shape, generator=g, dtype=torch.float64)
            # scale the columns (dim) or rows (example) apart so that the covariance's spectrum is spread
            scale = torch.linspace(0.5, 2.5, shape[1] if mode == "dim" else shape[0], dtype=torch.float64)
            a = a * scale if mode == "dim" else a * scale[:, None]
            out.append(Sample((a.to(dtype=dtype, device=device).requires_grad_(),), dict(eps=eps, mode=mode, grad=grad),
                              f"{mode} {shape[0]}x{shape[1]}, eps {eps}"))
        return out
    return samples


def _running(d, dtype, device, gen, eval_mode, groups=None):
    """Running mean (d,) and whitening matrix (d, d), or (groups, d / groups, d / groups) when grouped; in eval
    mode random, the matrix not symmetric."""
    g = d if groups is None else d // groups
    shape = (d, d) if groups is None else (groups, g, g)
    if not eval_mode:
        return torch.zeros(d, dtype=dtype, device=device), torch.eye(g, dtype=dtype, device=device).expand(
            shape).contiguous()
    m = torch.randn(d, generator=gen, dtype=torch.float64)
    a = torch.randn(*shape, generator=gen, dtype=torch.float64)
    # not symmetric: a backward that applies W where W^T belongs is caught
    w = a @ a.mT / g + torch.eye(g, dtype=torch.float64) + 0.3 * torch.randn(*shape, generator=gen,
                                                                              dtype=torch.float64)
    return m.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device)


def _affine_samples(dtype, device):
    g = _gen(16)
    t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
    return [Sample((t(2, 3, 4, 5), t(3), t(3)), {}, "(2, 3, 4, 5) maps"),
            Sample((t(6, 4), t(4), t(4)), {}, "(6, 4)"),
            Sample((t(3, 2, 5), t(2), None), {}, "(3, 2, 5), no bias"),
            Sample((t(1, 2, 1, 1), t(2), t(2)), {}, "batch 1, 1x1 maps")]


def ref_channel_affine(x, weight, bias=None):
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    return x * weight.reshape(shape) + (0 if bias is None else bias.reshape(shape))


def _dbn_samples(extra, grouped=False):
    """2-D samples (one group; with ``grouped`` in groups too) and (N, C, H, W) feature maps in groups."""
    def samples(dtype, device):
        g = _gen(13)
        t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
        run = lambda d, ev, grp: _running(d, dtype, device, g, ev, grp)  # noqa: E731
        eq = (_orthonormal(8, 4, g, centred=True) * (8 ** 0.5)).to(dtype=dtype, device=device).requires_grad_()
        grp = 1 if grouped else None
        out = [Sample((t(8, 4), *run(4, False, grp)), dict(extra, eps=1e-2), "N > D, train"),
               Sample((t(3, 5), *run(5, False, grp)), dict(extra, eps=1e-1), "N < D (rank-deficient), train"),
               Sample((eq, *run(4, False, grp)), dict(extra, eps=1e-2), "repeated eigenvalues"),
               Sample((t(6, 3), None, None), dict(extra, eps=1e-2), "no running stats"),
               Sample((t(1, 3), *run(3, True, grp)), dict(extra, training=False), "eval, batch 1")]
        if grouped:
            out += [Sample((t(7, 6), *run(6, False, 3)), dict(extra, eps=1e-2, group_size=2), "3 groups of 2, train"),
                    Sample((t(2, 6), *run(6, True, 2)), dict(extra, training=False, group_size=3),
                           "2 groups of 3, eval")]
        # feature maps: the N H W pixels are the samples of the C channels
        out += [Sample((t(2, 6, 3, 2), *run(6, False, 3)), dict(extra, eps=1e-2, group_size=2),
                       "(2, 6, 3, 2) maps, 3 groups of 2, train"),
                Sample((t(3, 4, 2, 2), *run(4, False, None)), dict(extra, eps=1e-2),
                       "(3, 4, 2, 2) maps, one group, a (C, C) running matrix"),
                Sample((t(1, 4, 1, 2), *run(4, False, 2)), dict(extra, eps=1e-1, group_size=2),
                       "(1, 4, 1, 2) maps: 2 samples per group of 2 (rank-deficient)"),
                Sample((t(2, 4, 2, 3), None, None), dict(extra, eps=1e-2, group_size=2), "maps, no running stats"),
                Sample((t(2, 6, 2, 2), *run(6, True, 2)), dict(extra, training=False, group_size=3),
                       "(2, 6, 2, 2) maps, 2 groups of 3, eval")]
        return out
    return samples


def _sf_samples(activation):
    def samples(dtype, device):
        g = _gen(14)
        t = lambda *s: _t(*s, dtype=dtype, device=device, gen=g)  # noqa: E731
        return [Sample((t(6, 4),), dict(activation=activation), "mini-batch 6x4"),
                Sample((t(12, 5),), dict(activation=activation, eps=1e-6), "full batch 12x5"),
                Sample((_away_from_zero(t(1, 4), 0.05),), dict(activation=activation), "batch 1"),
                Sample((t(5, 9),), dict(activation=activation, reduction="mean"), "mean, batch 5 x 9 (the article's)")]
    return samples


def _reg_samples(name):
    reg = REGULARIZERS[name]

    def samples(dtype, device):
        g = _gen(15)
        w = _t(3, 4, dtype=dtype, device=device, gen=g)
        if not reg.smooth_at_zero or not reg.defined_at_zero:
            _away_from_zero(w, 0.05)
        out = [Sample((w, name), dict(lam=0.5), "3x4")]
        if reg.defined_at_zero:
            z = _t(5, dtype=dtype, device=device, gen=g)
            with torch.no_grad():
                z[::2] = 0  # exact zeros: the |x|-like kinks
            out.append(Sample((z, name), dict(lam=2.0), "with exact zeros", gradgrad=reg.smooth_at_zero))
        return out
    return samples


def _ratio_article_samples(dtype, device):
    g = _gen(16)
    w = _t(3, 4, dtype=dtype, device=device, gen=g)
    _away_from_zero(w, 0.05)
    with torch.no_grad():   # entries where the coded derivative is about -1 (|w| < 1e-4)
        w[0, :2] = torch.tensor([3e-5, -5e-5], dtype=dtype, device=device)
    return [Sample((w, "ratio"), dict(lam=0.5, article_grad=True), "3x4, two entries under 1e-4")]


def _log_sq_article_samples(dtype, device):
    g = _gen(17)
    w = _t(3, 4, dtype=dtype, device=device, gen=g)
    _away_from_zero(w, 0.05)
    with torch.no_grad():   # entries where 2 / (w + eps) and 2 / w differ by about 0.15%
        w[0, :2] = torch.tensor([6e-5, -7e-5], dtype=dtype, device=device)
    return [Sample((w, "log_sq"), dict(lam=0.5, article_grad=True), "3x4, two entries near 6e-5")]


def _sf_article_samples(dtype, device):
    g = _gen(18)
    z = _away_from_zero(_t(5, 9, dtype=dtype, device=device, gen=g), 0.05)
    return [Sample((z,), dict(eps=1e-20, activation="soft_abs", reduction="mean"), "batch 5 x 9, eps 1e-20")]


# ---------------------------------------------------------------- fused layer + activation

def _fused_ref(layer):
    """activation(layer(...)) in plain torch, the reference of a fused op."""
    def ref(*args, activation="relu", alpha=1.0, **kwargs):
        return E.ACTIVATIONS[activation](layer(*args, **kwargs), alpha)
    return ref


def _fused_samples(samples, activation):
    """The layer's samples with ``activation`` (and, for ELU, one more sample with alpha 0.5)."""
    def make(dtype, device):
        out = [Sample(s.args, {**s.kwargs, "activation": activation}, f"{s.desc}, {activation}")
               for s in samples(dtype, device)]
        if activation == "elu":
            s = samples(dtype, device)[0]
            out.append(Sample(s.args, {**s.kwargs, "activation": "elu", "alpha": 0.5}, f"{s.desc}, elu alpha 0.5"))
        return out
    return make


def _fused_entries() -> list[OpInfo]:
    ops = []
    for act in M.FUSED_ACTIVATIONS:
        ops += [
            OpInfo(f"linear_act[{act}]", "fused", M.linear_act,
                   _fused_ref(E.linear),
                   _fused_samples(_dense_samples, act)),
            OpInfo(f"conv2d_act[{act}]", "fused", M.conv2d_act, _fused_ref(E.conv2d),
                   _fused_samples(_conv_samples, act)),
            OpInfo(f"conv_transpose2d_act[{act}]", "fused", M.conv_transpose2d_act, _fused_ref(E.conv_transpose2d),
                   _fused_samples(_conv_t_samples, act)),
        ]
    return ops


# ---------------------------------------------------------------- the registry

def _build() -> list[OpInfo]:
    ops = [
        OpInfo("linear", "dense", M.linear, E.linear, _dense_samples),
        OpInfo("conv2d", "dense", M.conv2d, E.conv2d, _conv_samples),
        OpInfo("pad2d", "dense", M.pad2d, E.pad2d,
               lambda dt, dev: [Sample((_t(2, 3, 4, 5, dtype=dt, device=dev, gen=_gen(19)), (0, 1, 2, 1)),
                                       desc="(0, 1, 2, 1)")]),
        OpInfo("conv_transpose2d", "dense", M.conv_transpose2d, E.conv_transpose2d, _conv_t_samples),
        OpInfo("max_pool2d", "dense", M.max_pool2d, E.max_pool2d, _pool_samples),
        OpInfo("pool_mix", "dense", M.pool_mix, E.pool_mix, _pool_mix_samples),
        OpInfo("interpolate[bilinear]", "dense", M.interpolate, E.interpolate, _interp_samples("bilinear")),
        OpInfo("interpolate[bicubic]", "dense", M.interpolate, E.interpolate, _interp_samples("bicubic")),
        OpInfo("reshape", "dense", lambda x: M.reshape(x, (x.shape[0], -1)),
               lambda x: x.reshape(x.shape[0], -1),
               lambda dt, dev: [Sample((_t(2, 3, 4, dtype=dt, device=dev, gen=_gen(16)),), desc="flatten")]),
        OpInfo("concat", "dense", lambda a, b, c: M.concat([a, b, c], dim=1),
               lambda a, b, c: torch.cat([a, b, c], 1),
               lambda dt, dev: [Sample(tuple(_t(2, k, 3, dtype=dt, device=dev, gen=_gen(17)) for k in (1, 2, 3)),
                                       desc="3 tensors, dim 1")]),
        OpInfo("add", "dense", lambda a, b, c: M.add(a, b, c, weights=(1.0, 0.5, -2.0)),
               lambda a, b, c: a + 0.5 * b - 2.0 * c,
               lambda dt, dev: [Sample(tuple(_t(3, 2, dtype=dt, device=dev, gen=_gen(19)) for _ in range(3)),
                                       desc="3 terms, weighted"),
                                Sample((_t(dtype=dt, device=dev, gen=_gen(20)), _t(dtype=dt, device=dev, gen=_gen(21)),
                                        _t(dtype=dt, device=dev, gen=_gen(22), grad=False)), desc="scalars")]),
        OpInfo("global_avg_pool2d", "dense", M.global_avg_pool2d, E.global_avg_pool2d,
               lambda dt, dev: [Sample((_t(2, 3, 4, 5, dtype=dt, device=dev, gen=_gen(18)),), desc="2x3x4x5")]),
        OpInfo("relu", "activations", M.relu, E.relu, _unary_samples),
        OpInfo("elu", "activations", M.elu, E.elu, _unary_samples),
        OpInfo("tanh", "activations", M.tanh, E.tanh, _unary_samples),
        OpInfo("arctan", "activations", M.arctan, torch.atan, _unary_samples),
        OpInfo("sigmoid", "activations", M.sigmoid, E.sigmoid, _unary_samples),
        OpInfo("soft_abs", "activations", M.soft_abs, lambda x, eps=1e-8: torch.sqrt(x ** 2 + eps),
               lambda dt, dev: [Sample(s.args, dict(eps=1e-3), s.desc) for s in _unary_samples(dt, dev)]),
        OpInfo("leaky_relu", "activations", M.leaky_relu, E.leaky_relu,
               lambda dt, dev: [Sample(s.args, {}, s.desc) for s in _unary_samples(dt, dev)]
               + [Sample(s.args, dict(slope=0.2), s.desc + ", slope 0.2") for s in _unary_samples(dt, dev)]),
        OpInfo("tanh_sigmoid_derivative", "activations", M.tanh_sigmoid_derivative, E.tanh_sigmoid_derivative,
               _unary_samples, gradient=False, batched_grad=False, gradgrad=False, jvp=False),
        OpInfo("softmax_binary_cross_entropy", "losses", M.softmax_binary_cross_entropy,
               E.softmax_binary_cross_entropy, _softmax_bce_samples),
        OpInfo("sum_squared_error", "losses", M.sum_squared_error, E.sum_squared_error, _mse_samples_plain),
        OpInfo("softmax_cross_entropy", "losses", M.softmax_cross_entropy, E.softmax_cross_entropy, _ce_samples),
        OpInfo("mse", "losses", M.mse, E.mse, _mse_samples),
        OpInfo("binary_cross_entropy", "losses", M.binary_cross_entropy, E.binary_cross_entropy, _bce_samples),
        OpInfo("center", "normalisation", M.center, lambda x, dim=0: x - x.mean(dim, keepdim=True),
               _norm_samples(False)),
        OpInfo("standardize", "normalisation", M.standardize, ref_standardize, _norm_samples(True)),
        OpInfo("batch_norm", "normalisation", M.batch_norm, E.batch_norm, _bn_samples, batched_grad=False),
        OpInfo("channel_affine", "normalisation", M.channel_affine, ref_channel_affine, _affine_samples),
        OpInfo("zca_whiten[dim]", "whitening", M.zca_whiten, ref_zca_whiten, _zca_samples("dim"),
               tol32=(2e-3, 2e-4), tol64=(1e-6, 1e-8), gradgrad=False),
        OpInfo("zca_whiten[example]", "whitening", M.zca_whiten, ref_zca_whiten, _zca_samples("example"),
               tol32=(2e-3, 2e-4), tol64=(1e-6, 1e-8), gradgrad=False),
        OpInfo("zca_whiten[no_eigenvalue_term]", "whitening", M.zca_whiten, E.zca_article,
               _zca_variant_samples("no_eigenvalue_term"), tol32=(2e-3, 2e-4), tol64=(1e-6, 1e-8), gradgrad=False,
               gradient=False, batched_grad=False, jvp=False),
        OpInfo("zca_whiten[article]", "whitening", M.zca_whiten, E.zca_article, _zca_variant_samples("article"),
               tol32=(5e-3, 5e-4), tol64=(1e-6, 1e-8), gradgrad=False, gradient=False, batched_grad=False,
               jvp=False),
        OpInfo("decorrelated_batch_norm[eigh]", "whitening", M.decorrelated_batch_norm, ref_decorrelated_batch_norm,
               _dbn_samples(dict(backend="eigh"), True), batched_grad=False, tol32=(2e-3, 2e-4), tol64=(1e-6, 1e-8),
               gradgrad=False),
        OpInfo("decorrelated_batch_norm[svd]", "whitening", M.decorrelated_batch_norm, ref_decorrelated_batch_norm,
               _dbn_samples(dict(backend="svd"), True), batched_grad=False, tol32=(2e-3, 2e-4), tol64=(1e-6, 1e-8),
               gradgrad=False),
        OpInfo("iter_norm", "whitening", M.iter_norm, ref_iter_norm, _dbn_samples(dict(iterations=5), True),
               batched_grad=False, tol32=(2e-3, 2e-4), gradgrad=False),
        OpInfo("sparse_filtering[soft_abs]", "sparse filtering", M.sparse_filtering, ref_sparse_filtering,
               _sf_samples("soft_abs")),
        OpInfo("sparse_filtering[elu]", "sparse filtering", M.sparse_filtering, ref_sparse_filtering,
               _sf_samples("elu")),
        # the sparse-filtering article's cost: soft-abs with eps 1e-20, the mean of the normalised entries
        OpInfo("sparse_filtering[article: mean, eps 1e-20]", "sparse filtering", M.sparse_filtering,
               ref_sparse_filtering, _sf_article_samples),
    ]
    ops += _fused_entries()
    # dilated back-propagation's tap: on a layer without a rule it is the identity both ways (with a rule
    # its backward is deliberately not a gradient; tests/test_optimizers.py checks it against an
    # explicit layer-by-layer backward instead)
    ops.append(OpInfo("dilation_tap[no rule]", "dilated", _plain_tap, lambda x: x * 1, _unary_samples))
    for name in REGULARIZERS:
        ops.append(OpInfo(f"regularize[{name}]", "regularizers", M.regularize, _ref_regularize(name),
                          _reg_samples(name)))
    # the gradient-pov article's coded derivative of ratio (letter G): not a gradient (gradcheck must fail)
    ops.append(OpInfo("regularize[ratio, article_grad]", "regularizers", M.regularize, E.regularize_ratio_article,
                      _ratio_article_samples, gradient=False, batched_grad=False, jvp=False,
                      gradgrad=False))
    # the weights-pov article's coded derivative of log_sq (letter K): 2 / (w + eps), not the gradient
    ops.append(OpInfo("regularize[log_sq, article_grad]", "regularizers", M.regularize, E.regularize_log_sq_article,
                      _log_sq_article_samples, gradient=False, batched_grad=False, jvp=False,
                      gradgrad=False))
    return ops


OPS: list[OpInfo] = _build()
OPS_BY_NAME = {o.name: o for o in OPS}
