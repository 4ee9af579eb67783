"""References written from elementary tensor ops, independent of the ops under test.

Many manual backwards are one call of an aten kernel (``threshold_backward``,
``convolution_backward``, ``native_batch_norm_backward``, ...). A reference built from
``torch.nn.functional`` reaches the same kernels, so comparing against it cannot see a wrong kernel
or wrong arguments to it. The references below use only ``where``, ``exp``, ``log``, sums, matmul,
indexing and ``unfold`` (the patch extraction of convolutions), and autograd differentiates them
through those elementary ops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- activations


def relu(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def elu(x, alpha=1.0):
    return torch.where(x > 0, x, alpha * (torch.exp(torch.clamp(x, max=0)) - 1))


def tanh(x):
    # 1 - 2 / (e^{2x} + 1): finite for large |x|
    return 1 - 2 / (torch.exp(2 * x) + 1)


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


ACTIVATIONS = {"relu": lambda z, alpha: relu(z), "elu": elu, "tanh": lambda z, alpha: tanh(z),
               "sigmoid": lambda z, alpha: sigmoid(z)}


# ---------------------------------------------------------------- losses

def log_softmax(z):
    """z - max - log sum exp(z - max), row-wise (dim 1)."""
    m = z.max(1, keepdim=True).values.detach()
    return z - m - torch.log(torch.exp(z - m).sum(1, keepdim=True))


def _reduce(per_element, reduction):
    return per_element.mean() if reduction == "mean" else per_element.sum()


def softmax_cross_entropy(logits, target, reduction="mean"):
    logp = log_softmax(logits)
    if not target.is_floating_point():   # class indices as a one-hot matrix
        target = (target[:, None] == torch.arange(logits.shape[1], device=logits.device)).to(logits.dtype)
    return _reduce(-(target * logp).sum(1), reduction)


def mse(pred, target, reduction="mean"):
    return _reduce((pred - target) ** 2, reduction)


def binary_cross_entropy(p, target, reduction="mean"):
    return _reduce(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)), reduction)


# ---------------------------------------------------------------- normalisation

def batch_norm(x, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """Batch norm from its formulas: statistics over every dimension but 1; the running variance is
    updated with the unbiased batch variance, the output uses the biased one."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if not training:
        return (x - running_mean.reshape(shape)) / torch.sqrt(running_var.reshape(shape) + eps)
    n = x.numel() // x.shape[1]
    mu = x.sum(dims, keepdim=True) / n
    var = ((x - mu) ** 2).sum(dims, keepdim=True) / n
    if running_mean is not None:
        with torch.no_grad():
            running_mean.copy_((1 - momentum) * running_mean + momentum * mu.reshape(-1))
            running_var.copy_((1 - momentum) * running_var + momentum * var.reshape(-1) * n / (n - 1))
    return (x - mu) / torch.sqrt(var + eps)


# ---------------------------------------------------------------- dense layers

def linear(x, w, b=None):
    return x @ w.T + (0 if b is None else b)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pad2d(x, pads):
    """Zero padding as a new tensor with x copied into its middle."""
    top, bottom, left, right = pads
    out = x.new_zeros(*x.shape[:-2], x.shape[-2] + top + bottom, x.shape[-1] + left + right)
    out[..., top:top + x.shape[-2], left:left + x.shape[-1]] = x
    return out


def conv2d(x, w, b=None, stride=1, padding="same"):
    """Cross-correlation as patches (``unfold``) times the weight matrix."""
    kh, kw = w.shape[2], w.shape[3]
    sh, sw = _pair(stride)
    if padding == "tf_same":   # TensorFlow's "SAME": the output has ceil(n / s) entries; the odd pixel after
        pads = []
        for n, k, s in ((x.shape[3], kw, sw), (x.shape[2], kh, sh)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, tuple(pads))
        padding = (0, 0)
    elif padding == "same":
        padding = (kh // 2, kw // 2)
    elif padding == "valid":
        padding = (0, 0)
    ph, pw = _pair(padding)
    x = F.pad(x, (pw, pw, ph, ph))
    n, _, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = F.unfold(x, (kh, kw), stride=(sh, sw))                  # (N, C kh kw, oh ow)
    y = (w.reshape(w.shape[0], -1) @ cols).reshape(n, w.shape[0], oh, ow)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0):
    """The transposed convolution as a stride-1 convolution: zeros inserted between the input's
    pixels (stride - 1 of them), a border of k - 1 - padding (plus output_padding at the bottom and
    right), and the kernel flipped with its two channel axes swapped."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    kh, kw = w.shape[2], w.shape[3]
    n, c, h, wd = x.shape
    up = x.new_zeros(n, c, (h - 1) * sh + 1, (wd - 1) * sw + 1)
    up = up.index_put((torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                       torch.arange(0, up.shape[2], sh)[None, None, :, None],
                       torch.arange(0, up.shape[3], sw)[None, None, None, :]), x)
    up = F.pad(up, (kw - 1 - pw, kw - 1 - pw + opw, kh - 1 - ph, kh - 1 - ph + oph))
    return conv2d(up, w.flip(2, 3).transpose(0, 1), b, 1, 0)


def max_pool2d(x, kernel_size=2, stride=None, padding=0):
    """The maximum of each window: patches of the input padded with -inf."""
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    ph, pw = _pair(padding)
    x = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    n, c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = F.unfold(x.reshape(n * c, 1, h, wd), (kh, kw), stride=(sh, sw))   # (N C, kh kw, oh ow)
    return cols.max(1).values.reshape(n, c, oh, ow)


def avg_pool2d(x, kernel_size=2, stride=None):
    """The mean of each window (no padding): patches of the input."""
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    n, c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = F.unfold(x.reshape(n * c, 1, h, wd), (kh, kw), stride=(sh, sw))
    return cols.mean(1).reshape(n, c, oh, ow)


def pool_mix(x, w, kernel_size=2, stride=None):
    return w * max_pool2d(x, kernel_size, stride) + (1 - w) * avg_pool2d(x, kernel_size, stride)


def global_avg_pool2d(x):
    return x.sum((2, 3)) / (x.shape[2] * x.shape[3])


def _cubic(t, a=-0.75):
    """Keys' cubic convolution kernel with a = -0.75 (torch's bicubic)."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def _interp_matrix(n_in, n_out, mode, align_corners, scale):
    """(n_out, n_in) matrix of interpolation weights along one axis. ``scale``: the output-to-input
    coordinate ratio (1 / scale_factor when a scale factor was given, else n_in / n_out)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        if align_corners:
            src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = (o + 0.5) * scale - 0.5
        if mode == "bilinear":
            src = max(src, 0.0) if not align_corners else src
            i0 = min(int(math.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            lam = src - i0
            m[o, i0] += 1 - lam
            m[o, i1] += lam
        else:
            i0 = int(math.floor(src))
            t = src - i0
            for k in range(-1, 3):
                m[o, min(max(i0 + k, 0), n_in - 1)] += _cubic(k - t)
    return m


def interpolate(x, size=None, scale_factor=None, mode="bilinear", align_corners=False):
    """Separable interpolation: y = M_h x M_w^T with weight matrices built from the coordinate map."""
    h, w = x.shape[2], x.shape[3]
    if size is not None:
        oh, ow = _pair(size)
        sh, sw = h / oh, w / ow
    else:
        fh, fw = (scale_factor, scale_factor) if not isinstance(scale_factor, (tuple, list)) else scale_factor
        oh, ow = int(math.floor(h * fh)), int(math.floor(w * fw))
        sh, sw = 1 / fh, 1 / fw
    mh = _interp_matrix(h, oh, mode, align_corners, sh).to(dtype=x.dtype, device=x.device)
    mw = _interp_matrix(w, ow, mode, align_corners, sw).to(dtype=x.dtype, device=x.device)
    return mh @ x @ mw.T


# ---------------------------------------------------------------- ZCA backwards that are not gradients

def _zca_forward(A, eps):
    """S = A^T A / n = E diag(lam) E^T (eigenvectors signed: largest-magnitude entry positive, the
    first on ties), U = E diag((lam + eps)^-1/2) E^T, Y = A U; written with loops over columns."""
    n, d = A.shape
    S = A.T @ A / n
    lam, E = torch.linalg.eigh(S)
    E = E.clone()
    for j in range(d):
        col = E[:, j]
        k = int(torch.argmax(col.abs()))
        if col[k] < 0:
            E[:, j] = -col
    L = torch.diag(1.0 / torch.sqrt(lam.clamp_min(0) + eps))
    U = E @ L @ E.T
    return A @ U, U, E, L, lam.clamp_min(0)


class _ZCAArticle(torch.autograd.Function):
    """ZCA per ``mode`` whose backward is the article's script, written out entry by entry:
    dU = A^T G, dE = dU E L + E L dU, K_ij = 1 / (lam_j - lam_i) (i != j), K_ii = 0,
    dS = E (K^T o (E^T dE)) E^T, dA = G U^T + (2 / n) A dS."""

    @staticmethod
    def forward(ctx, x, eps, mode, which):
        A = x if mode == "dim" else x.T
        Y, U, E, L, lam = _zca_forward(A, eps)
        ctx.save_for_backward(A, U, E, L, lam)
        ctx.mode, ctx.which, ctx.eps = mode, which, eps
        return Y if mode == "dim" else Y.T

    @staticmethod
    def backward(ctx, g):
        A, U, E, L, lam = ctx.saved_tensors
        G = g if ctx.mode == "dim" else g.T
        n, d = A.shape
        dU = A.T @ G
        if ctx.which == "article":
            dE = dU @ E @ L + E @ L @ dU
            K = torch.zeros(d, d, dtype=A.dtype)
            for i in range(d):
                for j in range(d):
                    if i != j:
                        K[i, j] = 1.0 / (lam[j] - lam[i])
            dS = E @ (K.T * (E.T @ dE)) @ E.T
            dA = G @ U.T + (2.0 / n) * A @ dS
        else:   # "no_eigenvalue_term": the divided differences of f(l) = (l + eps)^-1/2 off the diagonal only
            f = torch.diagonal(L)
            K = torch.zeros(d, d, dtype=A.dtype)
            for i in range(d):
                for j in range(d):
                    if i != j:
                        K[i, j] = (f[i] - f[j]) / (lam[i] - lam[j])
            dS = E @ (K * (E.T @ dU @ E)) @ E.T
            dA = G @ U.T + A @ (dS + dS.T) / n
        return (dA if ctx.mode == "dim" else dA.T), None, None, None


def zca_article(x, eps=1e-5, mode="dim", backend="eigh", grad="article"):
    """The ZCA forward with the backward of ``grad`` ("article" or "no_eigenvalue_term")."""
    return _ZCAArticle.apply(x, eps, mode, grad)


# ---------------------------------------------------------------- the zca article's other ops

def leaky_relu(x, slope=0.01):
    return torch.where(x > 0, x, slope * x)


def sum_squared_error(pred, target):
    return 0.5 * ((pred - target) ** 2).sum() / pred.shape[0]


class _TanhSigmoidDerivative(torch.autograd.Function):
    """tanh written from exponentials, whose backward is the article's 1 - sigmoid(x)^2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 1 - 2 / (torch.exp(2 * x) + 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = 1 / (1 + torch.exp(-x))
        return g * (1 - s ** 2)


def tanh_sigmoid_derivative(x):
    return _TanhSigmoidDerivative.apply(x)


def softmax_binary_cross_entropy(logits, target, reduction="sum"):
    logp = log_softmax(logits)
    p = torch.exp(logp)
    total = -(target * logp + (1 - target) * torch.log(1 - p)).sum()
    return total / logits.shape[0] if reduction == "mean" else total


class _RatioCodedGrad(torch.autograd.Function):
    """sum sqrt(w^2) / w (w != 0), whose backward is the gradient-pov article's coded
    (w^2 / (sqrt(w^2) + 1e-7) - sqrt(w^2)) / (w^2 + 1e-7), not the derivative (0)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return (torch.sqrt(w ** 2) / w).sum()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        a = torch.sqrt(w ** 2)
        return g * (w ** 2 / (a + 1e-7) - a) / (w ** 2 + 1e-7)


def regularize_ratio_article(w, name="ratio", lam=1.0, article_grad=True):
    return lam * _RatioCodedGrad.apply(w)


class _LogSqCodedGrad(torch.autograd.Function):
    """sum log(w^2), whose backward is the weights-pov article's coded 2 / (w + 1e-7), not 2 / w."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return torch.log(w ** 2).sum()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * 2 / (w + 1e-7)


def regularize_log_sq_article(w, name="log_sq", lam=1.0, article_grad=True):
    return lam * _LogSqCodedGrad.apply(w)
