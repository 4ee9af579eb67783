"""Whitening ops: ZCA whitening, decorrelated batch norm (Huang et al., CVPR 2018) and
IterNorm (Newton-Schulz whitening, Huang et al., CVPR 2019).

Notation (rows are samples): A is (n, d), S = A^T A / n (+ eps I), U = S^{-1/2}, Y = A U.
With the eigendecomposition S = E diag(lambda) E^T and s_i = sqrt(lambda_i + eps), the
Daleckii-Krein formula gives the exact backward of U = f(S), f(l) = (l + eps)^{-1/2}:

    dL/dS = E (K o (E^T (dL/dU) E)) E^T,   K_ij = (f(l_i) - f(l_j)) / (l_i - l_j)
                                              = -1 / (s_i s_j (s_i + s_j))

which holds on the diagonal too (K_ii = f'(l_i)) and never divides by l_i - l_j, so it stays
finite for repeated eigenvalues and rank-deficient batches (N < D).
"""
from __future__ import annotations

import torch

from ._checks import NonFiniteError, check_choice, check_momentum, check_positive, check_tensor
from ._function import ManualFunction, RefusedDerivative, once_differentiable, save_for_jvp

BACKENDS = ("eigh", "svd")
_NO_SECOND = ("its backward reads the eigendecomposition of the covariance as constants; a second derivative "
              "would differentiate the Daleckii-Krein formula itself")
_NO_SECOND_ITER = "its backward reads the saved Newton-Schulz iterates as constants"
ZCA_MODES = ("dim", "example")
ZCA_GRADS = ("exact", "no_eigenvalue_term", "article")


def _inv_sqrt_psd(S: torch.Tensor, eps: float, backend: str):
    """U = (S + eps I)^{-1/2} for symmetric PSD S; returns (U, E, s) with s = sqrt(lambda + eps)."""
    try:
        if backend == "eigh":
            lam, E = torch.linalg.eigh(S)
        else:  # S is symmetric PSD, so its SVD is an eigendecomposition: S = E diag(lam) E^T
            E, lam, _ = torch.linalg.svd(S)
    except torch.linalg.LinAlgError as e:
        if not bool(torch.isfinite(S).all()):
            raise NonFiniteError(f"whitening: the covariance has NaN or Inf entries (its input holds non-finite "
                                 f"values or overflowed), so {backend} cannot decompose it") from e
        raise
    s = torch.sqrt(lam.clamp_min(0) + eps)
    return (E / s[..., None, :]) @ E.mT, E, s


def _inv_sqrt_backward(gU: torch.Tensor, E: torch.Tensor, s: torch.Tensor, no_eigenvalue_term: bool = False):
    """dL/dS for U = E diag(1/s) E^T given dL/dU (the Daleckii-Krein formula above).

    ``no_eigenvalue_term`` zeroes the diagonal of K (the eigenvalue term); the result is then not
    the gradient (gradcheck fails; within a few percent of it), kept as a named variant.
    """
    K = -1.0 / (s[..., :, None] * s[..., None, :] * (s[..., :, None] + s[..., None, :]))
    if no_eigenvalue_term:
        K = K * (1 - torch.eye(K.shape[-1], dtype=K.dtype, device=K.device))
    return E @ (K * (E.mT @ gU @ E)) @ E.mT


def _whiten_jvp(A, tA, U, E, s):
    """The tangent of Y = A U, U = (A^T A / n + eps I)^{-1/2}, given the tangent tA of A:
    dS = (dA^T A + A^T dA) / n ; dU = E (K o (E^T dS E)) E^T (the Frechet derivative of S^{-1/2}, the same
    self-adjoint map as in the backward: ``_inv_sqrt_backward``) ; dY = dA U + A dU."""
    dS = (tA.mT @ A + A.mT @ tA) / A.shape[-2]
    return tA @ U + A @ _inv_sqrt_backward(dS, E, s)


def _sign_convention(E: torch.Tensor) -> torch.Tensor:
    """Each eigenvector (column) with its entry of largest magnitude positive (the first such entry on
    ties). The article's backward depends on the signs, which eigensolvers choose arbitrarily."""
    idx = E.abs().argmax(dim=-2, keepdim=True)          # argmax returns the first maximum
    sign = torch.sign(torch.gather(E, -2, idx))
    return E * torch.where(sign == 0, torch.ones_like(sign), sign)


def _article_backward(A, G, U, E, s, eps):
    # The article's script, as coded (not a gradient; it depends on the eigenvectors' signs):
    #   dU = A^T G ;  dE = dU E L + E L dU  (L = diag(1 / s), s = sqrt(lam + eps))
    #   K_ij = 1 / (lam_j - lam_i) for i != j, K_ii = 0  (raw eigenvalues, no eps)
    #   dS = E (K^T o (E^T dE)) E^T  (the eigenvalue term dropped, no symmetrisation)
    #   dA = G U^T + (2 / n) A dS
    lam = s * s - eps
    EL = E / s[..., None, :]
    dU = A.mT @ G
    dE = dU @ EL + EL @ dU
    diff = lam[..., None, :] - lam[..., :, None]        # [i, j] = lam_j - lam_i
    eye = torch.eye(diff.shape[-1], dtype=torch.bool, device=diff.device)
    K = torch.where(eye, torch.zeros_like(diff), 1.0 / torch.where(eye, torch.ones_like(diff), diff))
    dS = E @ (K.mT * (E.mT @ dE)) @ E.mT
    return G @ U.mT + (2.0 / A.shape[-2]) * (A @ dS)


def _whiten_backward(A, G, U, E, s, grad="exact", eps=None):
    # Y = A U with U = (A^T A / n + eps I)^{-1/2}:
    # dL/dA = G U^T + A (dS + dS^T) / n,  dS = dL/dS from _inv_sqrt_backward(A^T G)
    if grad == "article":
        return _article_backward(A, G, U, E, s, eps)
    dS = _inv_sqrt_backward(A.mT @ G, E, s, grad == "no_eigenvalue_term")
    return G @ U.mT + A @ (dS + dS.mT) / A.shape[-2]


class ZCAWhitenFunction(ManualFunction):
    """ZCA whitening of rows: S = A^T A / n, Y = A (S + eps I)^{-1/2}.

    mode "dim": A = x (N, D), a D x D covariance. mode "example": A = x^T, an N x N covariance,
    i.e. y = (x x^T / D + eps I)^{-1/2} x. Returns (y, U, E, s); only y is differentiable.
    """

    generate_vmap_rule = True   # torch.func.vmap runs forward and backward over the extra dimension

    @staticmethod
    def forward(x, eps, mode, backend, grad):
        A = x if mode == "dim" else x.mT
        U, E, s = _inv_sqrt_psd(A.mT @ A / A.shape[-2], eps, backend)
        if grad == "article":
            E = _sign_convention(E)
        Y = A @ U
        return (Y if mode == "dim" else Y.mT), U, E, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, eps, mode, backend, grad = inputs
        _, U, E, s = output
        ctx.mark_non_differentiable(U, E, s)
        ctx.set_materialize_grads(False)   # no zero tensors for the gradients of U, E, s
        ctx.save_for_backward(x, U, E, s)
        save_for_jvp(ctx, x, U, E, s)
        ctx.conf = (mode, grad, eps)

    @staticmethod
    @once_differentiable(_NO_SECOND)
    def backward(ctx, g, *_):
        # see _whiten_backward: dL/dA = G U + A (dS + dS^T) / n with the Daleckii-Krein dS;
        # mode "example" applies it to A = x^T, G = g^T and transposes back
        x, U, E, s = ctx.saved_tensors
        mode, grad, eps = ctx.conf
        if g is None or not ctx.needs_input_grad[0]:
            return (None,) * 5
        if mode == "dim":
            gx = _whiten_backward(x, g, U, E, s, grad, eps)
        else:
            gx = _whiten_backward(x.mT, g.mT, U, E, s, grad, eps).mT
        return gx, None, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # dY = dA U + A dU, dU by the Daleckii-Krein formula (``_whiten_jvp``); mode "example": A = x^T, dA = dx^T
        x, U, E, s = ctx.saved_tensors
        mode, grad, _ = ctx.conf
        if grad != "exact":
            raise RefusedDerivative(f"zca_whiten[{grad}]: forward mode is not provided: the backward is a variant "
                                    "that is not the gradient, and a tangent would disagree with it")
        if mode == "dim":
            return _whiten_jvp(x, t, U, E, s), None, None, None
        return _whiten_jvp(x.mT, t.mT, U, E, s).mT, None, None, None


def _check_zca_settings(eps, mode, backend, grad) -> None:
    check_positive("zca_whiten", "eps", eps)
    check_choice("zca_whiten", "mode", mode, ZCA_MODES)
    check_choice("zca_whiten", "backend", backend, BACKENDS)
    check_choice("zca_whiten", "grad", grad, ZCA_GRADS)


def zca_whiten(x: torch.Tensor, eps: float = 1e-5, mode: str = "dim", backend: str = "eigh",
               grad: str = "exact", return_matrix: bool = False):
    """ZCA whitening of a batch: ``y = A (A^T A / n + eps I)^{-1/2}`` (no centring; see
    ``decorrelated_batch_norm``).

    Args:
        x: input of shape ``(N, D)``.
        eps: added to the covariance's diagonal (eps > 0).
        mode: ``"dim"``: A = x, a D x D covariance over the batch (each dimension whitened);
            ``"example"``: A = x^T, an N x N covariance (each example whitened; the article's
            whitening of X^T).
        backend: ``"eigh"`` or ``"svd"`` for the eigendecomposition of the covariance.
        grad: ``"exact"`` (default): the gradient, with the Daleckii-Krein kernel
            K_ij = -1 / (s_i s_j (s_i + s_j)), s = sqrt(lambda + eps), finite for repeated eigenvalues
            and rank-deficient batches; ``"no_eigenvalue_term"``: that backward with the diagonal of
            K zeroed (not a gradient, within a few percent of it); ``"article"``: the backward of the
            article's script (dE = dU E L + E L dU, K_ij = 1 / (lam_j - lam_i), no symmetrisation;
            eigenvectors signed so that each one's largest entry is positive), far from the
            gradient. Both are kept for comparison: gradcheck fails for them.
        return_matrix: also return the whitening matrix U = (S + eps I)^{-1/2} (a constant without
            gradient, e.g. for a running estimate).

    Returns:
        ``y`` of shape ``(N, D)``, or ``(y, U)`` with ``return_matrix`` (U: D x D for ``"dim"``,
        N x N for ``"example"``).

    Example::

        >>> x = torch.randn(100, 16, requires_grad=True)
        >>> y = zca_whiten(x, eps=1e-3)
        >>> torch.allclose(y.T @ y / 100, torch.eye(16), atol=1e-2)
        True
    """
    check_tensor("zca_whiten", "x", x, ndim=2, shape_hint="(N, D)")
    _check_zca_settings(eps, mode, backend, grad)
    y, u, _, _ = ZCAWhitenFunction.call(x, float(eps), mode, backend, grad)
    return (y, u) if return_matrix else y


def _check_running(op, x, running_mean, running_whitening, training, groups, g):
    c = x.shape[1]
    if (running_mean is None) != (running_whitening is None):
        raise ValueError(f"{op}: give both running_mean and running_whitening, or neither")
    if running_mean is None:
        if not training:
            raise ValueError(f"{op}: running_mean and running_whitening are required in eval mode")
        return None
    # one group: the matrix as (C, C) or (1, C, C); G groups: (G, g, g)
    shapes = [(groups, g, g)] + ([(c, c)] if groups == 1 else [])
    for name, r, allowed in (("running_mean", running_mean, [(c,)]), ("running_whitening", running_whitening,
                                                                     shapes)):
        if not isinstance(r, torch.Tensor) or tuple(r.shape) not in allowed or r.dtype != x.dtype \
                or r.device != x.device:
            got = (f"shape {tuple(r.shape)}, {r.dtype} on {r.device}" if isinstance(r, torch.Tensor)
                   else type(r).__name__)
            want = " or ".join(str(s) for s in allowed)
            raise ValueError(f"{op}: {name} must be a tensor of shape {want} with x's dtype and device "
                             f"({x.dtype} on {x.device}); got {got}")
        if any(st == 0 and n > 1 for st, n in zip(r.stride(), r.shape)):
            raise ValueError(f"{op}: {name} is updated in place, but its entries share memory (an expanded "
                             f"tensor, stride {r.stride()}); pass a copy that owns its memory, e.g. "
                             f"{name}.clone()")
    return running_whitening.view(groups, g, g)   # a view: the in-place update reaches the caller's buffer


def check_group_size(op: str, channels: int, group_size, what: str) -> int:
    """The group size g of a whitening op or layer over ``channels`` channels (None: one group of all of them);
    anything but a positive int dividing ``channels`` is an error naming ``what`` was to be divided."""
    g = channels if group_size is None else group_size
    if isinstance(g, bool) or not isinstance(g, int) or g < 1 or channels % g:
        raise ValueError(f"{op}: group_size must be a positive divisor of {what} (or None for one group of all of "
                         f"them), got {group_size!r}")
    return g


def _check_whitening_input(op, x, eps, momentum, training, group_size):
    """Checks shared by the whitening ops; returns the group size g (a divisor of the channels C)."""
    check_tensor(op, "x", x, ndim=(2, 4), shape_hint="(N, C) or (N, C, H, W)")
    check_positive(op, "eps", eps)
    check_momentum(op, momentum)
    c = x.shape[1]
    g = check_group_size(op, c, group_size, f"the {c} channels (dimension 1 of x)")
    n = x.numel() // c if c else 0
    if training and n < 2:
        raise ValueError(f"{op}: training needs at least 2 samples per channel to centre (N x H x W for "
                         f"(N, C, H, W) input); got shape {tuple(x.shape)}")
    return g


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C) stays; (N, C, H, W) -> (N H W, C): every pixel of every image one sample of the C channels."""
    return x if x.dim() == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])


def _unrows(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of ``_rows`` for a tensor shaped as ``like`` (contiguous)."""
    if like.dim() == 2:
        return y
    n, c = like.shape[0], like.shape[1]
    return y.reshape(n, *like.shape[2:], c).movedim(-1, 1).contiguous()


def _groups(x: torch.Tensor, g: int) -> torch.Tensor:
    """(n, C) -> (C / g, n, g): the columns of each group of g channels as one batch entry."""
    return x.reshape(x.shape[0], x.shape[1] // g, g).transpose(0, 1)


def _ungroup(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(0, 1).reshape(a.shape[1], a.shape[0] * a.shape[2])


def _grouped(x: torch.Tensor, g: int) -> torch.Tensor:
    """x of shape (N, C) or (N, C, H, W) as (C / g, n, g) with n = N H W."""
    return _groups(_rows(x), g)


def _from_groups(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _unrows(_ungroup(a), like)


def _trace(S: torch.Tensor) -> torch.Tensor:
    """tr of each matrix of a (G, g, g) stack, as (G, 1, 1)."""
    return torch.diagonal(S, dim1=-2, dim2=-1).sum(-1)[..., None, None]


def _centred(x: torch.Tensor) -> torch.Tensor:
    """x - mean over every dimension but 1 (the channels)."""
    return x - x.mean([d for d in range(x.dim()) if d != 1], keepdim=True)


class DecorrelatedBatchNormFunction(ManualFunction):
    """Decorrelated batch norm: the samples are the rows of x (N, C) or the pixels of x (N, C, H, W);
    xc = x - mean over the samples; for each group of g channels A = xc[:, group] (n x g),
    S = A^T A / n, y[:, group] = A (S + eps I)^{-1/2} (g = C: one group, full ZCA).

    Eval mode uses the running mean and the running whitening matrices W (G, g, g).
    Returns (y, A, U, E, s); only y is differentiable.
    """

    generate_vmap_rule = True   # torch.func.vmap runs forward and backward over the extra dimension

    @staticmethod
    def forward(x, running_mean, running_whitening, training, momentum, eps, backend, group_size):
        rows = _rows(x)
        if not training:
            A = _groups(rows - running_mean, group_size)
            # U: a copy of the running matrices, so that a training forward run before this backward,
            # which updates the buffer in place, cannot change what the backward reads
            return _from_groups(A @ running_whitening, x), A, running_whitening.clone(), None, None
        mu = rows.mean(0)
        A = _groups(rows - mu, group_size)
        U, E, s = _inv_sqrt_psd(A.mT @ A / rows.shape[0], eps, backend)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mu, alpha=momentum)
            running_whitening.mul_(1 - momentum).add_(U, alpha=momentum)
        return _from_groups(A @ U, x), A, U, E, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        training = inputs[3]
        _, A, U, E, s = output
        ctx.mark_non_differentiable(*(t for t in (A, U, E, s) if t is not None))
        ctx.set_materialize_grads(False)   # no zero tensors for the gradients of A, U, E, s
        ctx.save_for_backward(A, U, E, s, inputs[0])   # x: only so that a second derivative reaches the refusal
        save_for_jvp(ctx, A, U, E, s)
        ctx.conf = (training, inputs[7])

    @staticmethod
    @once_differentiable(_NO_SECOND)
    def backward(ctx, g, *_):
        # per group of the samples' matrix, training: dL/dA = G U + A (dS + dS^T) / n (the ZCA backward),
        #           then the centering backward dL/dx = dL/dxc - mean(dL/dxc) over the samples;
        #           eval: dL/dA = G W^T
        # (N, C, H, W): the samples are the N H W pixels, G the gradient's pixels in the same order
        A, U, E, s, _ = ctx.saved_tensors
        training, group_size = ctx.conf
        if g is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        G = _grouped(g, group_size)
        if not training:
            return _from_groups(G @ U.mT, g), None, None, None, None, None, None, None
        gxc = _ungroup(_whiten_backward(A, G, U, E, s))
        return _unrows(gxc - gxc.mean(0, keepdim=True), g), None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # per group, training: dA = (dx - mean(dx))[:, group], dY = dA U + A dU (``_whiten_jvp``);
        #            eval: dY = dA W (the running matrices are constants)
        A, U, E, s = ctx.saved_tensors
        training, group_size = ctx.conf
        if not training:
            return _from_groups(_grouped(t, group_size) @ U, t), None, None, None, None
        tA = _grouped(_centred(t), group_size)
        return _from_groups(_whiten_jvp(A, tA, U, E, s), t), None, None, None, None


def decorrelated_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None,
                            running_whitening: torch.Tensor | None = None, training: bool = True,
                            momentum: float = 0.1, eps: float = 1e-5, backend: str = "eigh",
                            group_size: int | None = None) -> torch.Tensor:
    """Decorrelated batch norm (Huang et al., CVPR 2018): centre, then ZCA-whiten each group of
    ``group_size`` consecutive channels with its own covariance.

    Args:
        x: input of shape ``(N, C)`` (the N rows are the samples) or ``(N, C, H, W)`` (the N H W
            pixels are the samples, as batch norm and the paper's convolutional layers); training
            needs at least 2 samples (and more than group_size for a full-rank covariance, which is
            why the paper whitens in groups).
        running_mean: buffer ``(C,)``, running_whitening: buffer ``(C / g, g, g)`` (``(C, C)`` is
            accepted for one group); both updated in place in training mode (torch's momentum
            convention) and used in eval mode; None (both) in training mode only.
        training, momentum, eps: as in ``batch_norm`` (eps on the covariance's diagonal).
        backend: ``"eigh"`` or ``"svd"``.
        group_size: g, a divisor of C (None: one group of all C channels).

    Returns:
        Tensor of ``x``'s shape.
    """
    op = "decorrelated_batch_norm"
    g = _check_whitening_input(op, x, eps, momentum, training, group_size)
    check_choice(op, "backend", backend, BACKENDS)
    w = _check_running(op, x, running_mean, running_whitening, training, x.shape[1] // g, g)
    return DecorrelatedBatchNormFunction.call(x, running_mean, w, bool(training), float(momentum), float(eps),
                                               backend, g)[0]


class IterNormFunction(ManualFunction):
    """IterNorm, per group of g channels of the samples' matrix (rows of (N, C), pixels of (N, C, H, W)):
    A = xc[:, group], S = A^T A / n + eps I, S_N = S / tr(S),
    P_0 = I, P_k = (3 P_{k-1} - P_{k-1}^3 S_N) / 2, U = P_T / sqrt(tr(S)), y[:, group] = A U.

    Returns (y, A (G, n, g), stacked [P_{k-1}, P_{k-1}^2, P_{k-1}^3] for k = 1..T plus P_T (each G x g x g),
    S); only y is differentiable.
    """

    generate_vmap_rule = True   # torch.func.vmap runs forward and backward over the extra dimension

    @staticmethod
    def forward(x, running_mean, running_whitening, training, momentum, eps, iterations, group_size):
        rows = _rows(x)
        if not training:
            A = _groups(rows - running_mean, group_size)
            # the iterates' slot holds a copy of the running matrices W: a training forward run before this
            # backward updates the buffer in place
            return _from_groups(A @ running_whitening, x), A, running_whitening[None].clone(), None
        mu = rows.mean(0)
        A = _groups(rows - mu, group_size)
        eye = torch.eye(group_size, dtype=x.dtype, device=x.device)
        S = A.mT @ A / rows.shape[0] + eps * eye
        tr = _trace(S)
        SN = S / tr
        P = eye.expand_as(S)
        saved = []
        for _ in range(iterations):
            P2 = P @ P
            P3 = P2 @ P
            saved += [P, P2, P3]
            P = 1.5 * P - 0.5 * P3 @ SN
        U = P / torch.sqrt(tr)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mu, alpha=momentum)
            running_whitening.mul_(1 - momentum).add_(U, alpha=momentum)
        return _from_groups(A @ U, x), A, torch.stack(saved + [P]), S

    @staticmethod
    def setup_context(ctx, inputs, output):
        training = inputs[3]
        _, A, Ps, S = output
        ctx.mark_non_differentiable(*(t for t in (A, Ps, S) if t is not None))
        ctx.set_materialize_grads(False)   # no zero tensors for the gradients of A, the iterates and S
        ctx.save_for_backward(A, Ps, S, inputs[0])   # x: only so that a second derivative reaches the refusal
        save_for_jvp(ctx, A, Ps, S)
        ctx.conf = (training, inputs[7])

    @staticmethod
    def jvp(ctx, t, *_):
        # per group, training, in the forward's notation: dA = (dx - mean(dx))[:, group] ;
        #   dS = (dA^T A + A^T dA) / n ; dtr = tr(dS) ; dS_N = dS / tr - S dtr / tr^2 ; dP_0 = 0 and, with
        #   P = P_{k-1}, dP_k = 3 dP / 2 - (dP P^2 + P dP P + P^2 dP) S_N / 2 - P^3 dS_N / 2 ;
        #   dU = dP_T / sqrt(tr) - P_T dtr / (2 tr^{3/2}) ; dy = dA U + A dU
        # eval: dy = dA W (the running matrices, constants)
        A, Ps, S = ctx.saved_tensors
        training, group_size = ctx.conf
        if not training:
            return _from_groups(_grouped(t, group_size) @ Ps[0], t), None, None, None
        tA = _grouped(_centred(t), group_size)
        tr = _trace(S)
        dS = (tA.mT @ A + A.mT @ tA) / A.shape[-2]
        dtr = _trace(dS)
        SN, dSN = S / tr, dS / tr - S * (dtr / tr ** 2)
        dP = torch.zeros_like(S)
        for k in range((Ps.shape[0] - 1) // 3):
            P, P2, P3 = Ps[3 * k], Ps[3 * k + 1], Ps[3 * k + 2]
            dP = 1.5 * dP - 0.5 * ((dP @ P2 + P @ dP @ P + P2 @ dP) @ SN + P3 @ dSN)
        PT = Ps[-1]
        dU = dP / torch.sqrt(tr) - PT * (dtr / (2 * tr ** 1.5))
        return _from_groups(tA @ (PT / torch.sqrt(tr)) + A @ dU, t), None, None, None

    @staticmethod
    @once_differentiable(_NO_SECOND_ITER)
    def backward(ctx, g, *_):
        # Reverse mode through the iterations, per group, in the forward's notation (G: the group's gradient):
        #   dL/dU = A^T G ;  dL/dP_T = dL/dU / sqrt(tr) ;  dL/dtr = -sum(dL/dU o P_T) / (2 tr^{3/2})
        #   for k = T..1, with P = P_{k-1}, B = dL/dP_k and P_k = 3 P / 2 - P^3 S_N / 2:
        #     dL/dS_N += -(P^3)^T B / 2 ;  C = dL/d(P^3) = -B S_N^T / 2
        #     dL/dP = 3 B / 2 + (P^2)^T C + D P^T + P^T D,  D = dL/d(P^2) = C P^T   (P^3 = P^2 P, P^2 = P P)
        #   dL/dS = dL/dS_N / tr + (dL/dtr - sum(dL/dS_N o S) / tr^2) I
        #   dL/dA = G U^T + A (dS + dS^T) / n ;  dL/dx = dL/dxc - mean(dL/dxc) over the samples
        A, Ps, S, _ = ctx.saved_tensors
        training, group_size = ctx.conf
        if g is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        G = _grouped(g, group_size)
        if not training:
            return _from_groups(G @ Ps[0].mT, g), None, None, None, None, None, None, None
        tr = _trace(S)
        SN = S / tr
        PT = Ps[-1]
        gU = A.mT @ G
        B = gU / torch.sqrt(tr)
        gtr = -(gU * PT).sum((-2, -1), keepdim=True) / (2 * tr ** 1.5)
        gSN = torch.zeros_like(S)
        for k in range((Ps.shape[0] - 1) // 3 - 1, -1, -1):
            P, P2, P3 = Ps[3 * k], Ps[3 * k + 1], Ps[3 * k + 2]
            gSN = gSN - 0.5 * (P3.mT @ B)
            C = -0.5 * (B @ SN.mT)
            D = C @ P.mT
            B = 1.5 * B + P2.mT @ C + D @ P.mT + P.mT @ D
        gtr = gtr - (gSN * S).sum((-2, -1), keepdim=True) / tr ** 2
        gS = gSN / tr + gtr * torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
        gxc = _ungroup(G @ (PT / torch.sqrt(tr)).mT + A @ (gS + gS.mT) / A.shape[-2])
        return _unrows(gxc - gxc.mean(0, keepdim=True), g), None, None, None, None, None, None, None


def iter_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None,
              running_whitening: torch.Tensor | None = None, training: bool = True,
              momentum: float = 0.1, eps: float = 1e-5, iterations: int = 5,
              group_size: int | None = None) -> torch.Tensor:
    """IterNorm (Huang et al., CVPR 2019): centre, then approximate (S + eps I)^{-1/2} of each group of
    ``group_size`` channels by ``iterations`` Newton-Schulz steps on the trace-normalised covariance
    (matmuls only).

    Args:
        x: input of shape ``(N, C)`` or ``(N, C, H, W)`` (the pixels are the samples, as in
            ``decorrelated_batch_norm``), at least 2 samples in training mode.
        running_mean: buffer ``(C,)``, running_whitening: buffer ``(C / g, g, g)`` (``(C, C)`` is
            accepted for one group); as in ``decorrelated_batch_norm``.
        training, momentum, eps: as in ``batch_norm``.
        iterations: T >= 1, the Newton-Schulz steps (the paper's default: 5).
        group_size: g, a divisor of C (None: one group of all C channels); IterNorm-pytorch's
            ``num_channels``.

    Returns:
        Tensor of ``x``'s shape. The backward differentiates through the T iterations.
    """
    g = _check_whitening_input("iter_norm", x, eps, momentum, training, group_size)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iter_norm: iterations must be an int >= 1, got {iterations!r}")
    w = _check_running("iter_norm", x, running_mean, running_whitening, training, x.shape[1] // g, g)
    return IterNormFunction.call(x, running_mean, w, bool(training), float(momentum), float(eps), iterations, g)[0]
