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


def _check_running(op, x, running_mean, running_whitening, training, wshape=None):
    d = x.shape[1]
    wshape = wshape or (d, d)
    if (running_mean is None) != (running_whitening is None):
        raise ValueError(f"{op}: give both running_mean and running_whitening, or neither")
    if running_mean is None:
        if not training:
            raise ValueError(f"{op}: running_mean and running_whitening are required in eval mode")
        return
    for name, r, shape in (("running_mean", running_mean, (d,)),
                           ("running_whitening", running_whitening, wshape)):
        if not isinstance(r, torch.Tensor) or tuple(r.shape) != shape or r.dtype != x.dtype \
                or r.device != x.device:
            got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"{op}: {name} must be a tensor of shape {shape} with x's dtype and device; "
                             f"got {got}")


def _check_whitening_input(op, x, eps, momentum, training):
    check_tensor(op, "x", x, ndim=2, shape_hint="(N, D)")
    check_positive(op, "eps", eps)
    check_momentum(op, momentum)
    if training and x.shape[0] < 2:
        raise ValueError(f"{op}: training needs a batch of at least 2 rows to centre; got shape "
                         f"{tuple(x.shape)}")


def _groups(x: torch.Tensor, g: int) -> torch.Tensor:
    """(N, D) -> (D / g, N, g): the columns of each group of g dimensions as one batch entry."""
    return x.reshape(x.shape[0], -1, g).transpose(0, 1)


def _ungroup(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(0, 1).reshape(a.shape[1], -1)


class DecorrelatedBatchNormFunction(ManualFunction):
    """Decorrelated batch norm: xc = x - mean(x); for each group of g dimensions A = xc[:, group],
    S = A^T A / N, y[:, group] = A (S + eps I)^{-1/2} (g = D: one group, full ZCA).

    Eval mode uses the running mean and the running whitening matrices W (G, g, g).
    Returns (y, A, U, E, s); only y is differentiable.
    """

    generate_vmap_rule = True   # torch.func.vmap runs forward and backward over the extra dimension

    @staticmethod
    def forward(x, running_mean, running_whitening, training, momentum, eps, backend, group_size):
        if not training:
            A = _groups(x - running_mean, group_size)
            # U: a copy of the running matrices, so that a training forward run before this backward,
            # which updates the buffer in place, cannot change what the backward reads
            return _ungroup(A @ running_whitening), A, running_whitening.clone(), None, None
        mu = x.mean(0)
        A = _groups(x - mu, group_size)
        U, E, s = _inv_sqrt_psd(A.mT @ A / x.shape[0], eps, backend)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mu, alpha=momentum)
            running_whitening.mul_(1 - momentum).add_(U, alpha=momentum)
        return _ungroup(A @ U), A, U, E, s

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
        # per group, training: dL/dA = G U + A (dS + dS^T) / N (the ZCA backward), then the centering
        #           backward dL/dx = dL/dxc - mean(dL/dxc);   eval: dL/dA = G W^T
        A, U, E, s, _ = ctx.saved_tensors
        training, group_size = ctx.conf
        if g is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        G = _groups(g, group_size)
        if not training:
            return _ungroup(G @ U.mT), None, None, None, None, None, None, None
        gxc = _ungroup(_whiten_backward(A, G, U, E, s))
        return gxc - gxc.mean(0, keepdim=True), None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t, *_):
        # per group, training: dA = (dx - mean(dx))[:, group], dY = dA U + A dU (``_whiten_jvp``);
        #            eval: dY = dA W (the running matrices are constants)
        A, U, E, s = ctx.saved_tensors
        training, group_size = ctx.conf
        if not training:
            return _ungroup(_groups(t, group_size) @ U), None, None, None, None
        tA = _groups(t - t.mean(0, keepdim=True), group_size)
        return _ungroup(_whiten_jvp(A, tA, U, E, s)), None, None, None, None


def decorrelated_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None,
                            running_whitening: torch.Tensor | None = None, training: bool = True,
                            momentum: float = 0.1, eps: float = 1e-5, backend: str = "eigh",
                            group_size: int | None = None) -> torch.Tensor:
    """Decorrelated batch norm (Huang et al., CVPR 2018): centre, then ZCA-whiten each group of
    ``group_size`` consecutive dimensions with its own covariance.

    Args:
        x: input of shape ``(N, D)``; training needs N >= 2 (and N > group_size for a full-rank
            covariance, which is why the paper whitens in groups).
        running_mean: buffer ``(D,)``, running_whitening: buffer ``(D / g, g, g)``; both updated in
            place in training mode (torch's momentum convention) and used in eval mode; None (both)
            in training mode only.
        training, momentum, eps: as in ``batch_norm`` (eps on the covariance's diagonal).
        backend: ``"eigh"`` or ``"svd"``.
        group_size: g, a divisor of D (None: one group of all D).

    Returns:
        Tensor of shape ``(N, D)``.
    """
    _check_whitening_input("decorrelated_batch_norm", x, eps, momentum, training)
    check_choice("decorrelated_batch_norm", "backend", backend, BACKENDS)
    d = x.shape[1]
    g = d if group_size is None else group_size
    if not isinstance(g, int) or g < 1 or d % g:
        raise ValueError(f"decorrelated_batch_norm: group_size must be a positive divisor of D = {d}, got "
                         f"{group_size!r}")
    _check_running("decorrelated_batch_norm", x, running_mean, running_whitening, training, (d // g, g, g))
    return DecorrelatedBatchNormFunction.call(x, running_mean, running_whitening, bool(training),
                                               float(momentum), float(eps), backend, g)[0]


class IterNormFunction(ManualFunction):
    """IterNorm: xc = x - mean(x), S = xc^T xc / N + eps I, S_N = S / tr(S),
    P_0 = I, P_k = (3 P_{k-1} - P_{k-1}^3 S_N) / 2, U = P_T / sqrt(tr(S)), y = xc U.

    Returns (y, xc, stacked [P_{k-1}, P_{k-1}^2, P_{k-1}^3] for k = 1..T plus P_T, S); only y is
    differentiable.
    """

    generate_vmap_rule = True   # torch.func.vmap runs forward and backward over the extra dimension

    @staticmethod
    def forward(x, running_mean, running_whitening, training, momentum, eps, iterations):
        if not training:
            xc = x - running_mean
            # the iterates' slot holds a copy of the running matrix W: a training forward run before this
            # backward updates the buffer in place
            return xc @ running_whitening, xc, running_whitening[None].clone(), None
        d = x.shape[1]
        mu = x.mean(0)
        xc = x - mu
        S = xc.mT @ xc / x.shape[0] + eps * torch.eye(d, dtype=x.dtype, device=x.device)
        tr = torch.diagonal(S).sum()
        SN = S / tr
        P = torch.eye(d, dtype=x.dtype, device=x.device)
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
        return xc @ U, xc, torch.stack(saved + [P]), S

    @staticmethod
    def setup_context(ctx, inputs, output):
        training = inputs[3]
        _, xc, Ps, S = output
        ctx.mark_non_differentiable(*(t for t in (xc, Ps, S) if t is not None))
        ctx.set_materialize_grads(False)   # no zero tensors for the gradients of xc, the iterates and S
        ctx.save_for_backward(xc, Ps, S, inputs[0])   # x: only so that a second derivative reaches the refusal
        save_for_jvp(ctx, xc, Ps, S)
        ctx.training = training

    @staticmethod
    def jvp(ctx, t, *_):
        # training, in the forward's notation: dxc = dx - mean(dx) ; dS = (dxc^T xc + xc^T dxc) / N ;
        #   dtr = tr(dS) ; dS_N = dS / tr - S dtr / tr^2 ; dP_0 = 0 and, with P = P_{k-1},
        #   dP_k = 3 dP / 2 - (dP P^2 + P dP P + P^2 dP) S_N / 2 - P^3 dS_N / 2 ;
        #   dU = dP_T / sqrt(tr) - P_T dtr / (2 tr^{3/2}) ; dy = dxc U + xc dU
        # eval: dy = dx W (the running matrix, a constant)
        xc, Ps, S = ctx.saved_tensors
        if not ctx.training:
            return t @ Ps[0], None, None, None
        tc = t - t.mean(0, keepdim=True)
        tr = torch.diagonal(S).sum()
        dS = (tc.mT @ xc + xc.mT @ tc) / xc.shape[0]
        dtr = torch.diagonal(dS).sum()
        SN, dSN = S / tr, dS / tr - S * (dtr / tr ** 2)
        dP = torch.zeros_like(S)
        for k in range((Ps.shape[0] - 1) // 3):
            P, P2, P3 = Ps[3 * k], Ps[3 * k + 1], Ps[3 * k + 2]
            dP = 1.5 * dP - 0.5 * ((dP @ P2 + P @ dP @ P + P2 @ dP) @ SN + P3 @ dSN)
        PT = Ps[-1]
        dU = dP / torch.sqrt(tr) - PT * (dtr / (2 * tr ** 1.5))
        return tc @ (PT / torch.sqrt(tr)) + xc @ dU, None, None, None

    @staticmethod
    @once_differentiable(_NO_SECOND_ITER)
    def backward(ctx, g, *_):
        # Reverse mode through the iterations, in the forward's notation:
        #   dL/dU = xc^T G ;  dL/dP_T = dL/dU / sqrt(tr) ;  dL/dtr = -sum(dL/dU o P_T) / (2 tr^{3/2})
        #   for k = T..1, with P = P_{k-1}, B = dL/dP_k and P_k = 3 P / 2 - P^3 S_N / 2:
        #     dL/dS_N += -(P^3)^T B / 2 ;  C = dL/d(P^3) = -B S_N^T / 2
        #     dL/dP = 3 B / 2 + (P^2)^T C + D P^T + P^T D,  D = dL/d(P^2) = C P^T   (P^3 = P^2 P, P^2 = P P)
        #   dL/dS = dL/dS_N / tr + (dL/dtr - sum(dL/dS_N o S) / tr^2) I
        #   dL/dxc = G U^T + xc (dS + dS^T) / N ;  dL/dx = dL/dxc - mean(dL/dxc)
        xc, Ps, S, _ = ctx.saved_tensors
        if g is None or not ctx.needs_input_grad[0]:
            return (None,) * 7
        if not ctx.training:
            return g @ Ps[0].mT, None, None, None, None, None, None
        tr = torch.diagonal(S).sum()
        SN = S / tr
        PT = Ps[-1]
        gU = xc.mT @ g
        B = gU / torch.sqrt(tr)
        gtr = -(gU * PT).sum() / (2 * tr ** 1.5)
        gSN = torch.zeros_like(S)
        for k in range((Ps.shape[0] - 1) // 3 - 1, -1, -1):
            P, P2, P3 = Ps[3 * k], Ps[3 * k + 1], Ps[3 * k + 2]
            gSN = gSN - 0.5 * (P3.mT @ B)
            C = -0.5 * (B @ SN.mT)
            D = C @ P.mT
            B = 1.5 * B + P2.mT @ C + D @ P.mT + P.mT @ D
        gtr = gtr - (gSN * S).sum() / tr ** 2
        gS = gSN / tr + gtr * torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
        gxc = g @ (PT / torch.sqrt(tr)).mT + xc @ (gS + gS.mT) / xc.shape[0]
        return gxc - gxc.mean(0, keepdim=True), None, None, None, None, None, None


def iter_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None,
              running_whitening: torch.Tensor | None = None, training: bool = True,
              momentum: float = 0.1, eps: float = 1e-5, iterations: int = 5) -> torch.Tensor:
    """IterNorm (Huang et al., CVPR 2019): centre, then approximate (S + eps I)^{-1/2} by
    ``iterations`` Newton-Schulz steps on the trace-normalised covariance (matmuls only).

    Args:
        x: input of shape ``(N, D)``, N >= 2 in training mode.
        running_mean: buffer ``(D,)``, running_whitening: buffer ``(D, D)``; as in
            ``decorrelated_batch_norm``.
        training, momentum, eps: as in ``batch_norm``.
        iterations: T >= 1, the Newton-Schulz steps.

    Returns:
        Tensor of shape ``(N, D)``. The backward differentiates through the T iterations.
    """
    _check_whitening_input("iter_norm", x, eps, momentum, training)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iter_norm: iterations must be an int >= 1, got {iterations!r}")
    _check_running("iter_norm", x, running_mean, running_whitening, training)
    return IterNormFunction.call(x, running_mean, running_whitening, bool(training), float(momentum),
                                  float(eps), iterations)[0]
