"""``log.curvature``: the curvature of the loss at the current weights, on probe steps, through the model's own
manual Functions (their double backward): the Hessian's top eigenvalue (Lanczos on Hessian-vector
products) and its trace (Hutchinson's estimator with Rademacher vectors), of the data term and of the
full objective, on the probed batch (as Cockpit's HessMaxEV / HessTrace and PyHessian report them).

A Hessian-vector product is one double backward: g = grad(L, w, create_graph=True), Hv = grad(<g, v>, w).
The passes restore the batch-norm running statistics and leave the parameters' ``.grad`` alone, and draw
their random vectors from their own generator (seeded by the step), so a run with the instrument trains
exactly as one without it.
"""
from __future__ import annotations

import contextlib
import math

import torch

from .base import Instrument


def hvp(loss_fn, params: list, vecs: list) -> list:
    """H v for the Hessian of ``loss_fn()`` (a scalar through ``params``), v given per parameter, by double
    backward: g = grad(L, w, create_graph=True), H v = grad(<g, v>, w)."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vecs))
    return list(torch.autograd.grad(dot, params, allow_unused=True, materialize_grads=True))


def hvp_finite_difference(loss_fn, params: list, vecs: list) -> list:
    """H v by central differences of the first-order gradient, (grad L(w + h v) - grad L(w - h v)) / (2 h),
    h = eps^(1/3) max(1, ||w||) / ||v|| (eps the dtype's machine epsilon): for models holding an op that gives
    no second derivative (the whitening ops); error O(h^2) plus rounding O(eps / h)."""
    with torch.no_grad():
        w_norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in params)))
        v_norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in vecs)))
    if v_norm == 0:
        return [torch.zeros_like(p) for p in params]
    h = torch.finfo(params[0].dtype).eps ** (1 / 3) * max(1.0, w_norm) / v_norm
    saved = [p.detach().clone() for p in params]

    def grad_at(sign):
        with torch.no_grad():
            for p, w0, v in zip(params, saved, vecs):
                p.copy_(w0 + sign * h * v)
        return torch.autograd.grad(loss_fn(), params, allow_unused=True, materialize_grads=True)
    try:
        plus, minus = grad_at(1.0), grad_at(-1.0)
    finally:
        with torch.no_grad():
            for p, w0 in zip(params, saved):
                p.copy_(w0)
    return [(a - b) / (2 * h) for a, b in zip(plus, minus)]


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _split(v: torch.Tensor, like: list) -> list:
    return [p.view_as(q) for p, q in zip(v.split([q.numel() for q in like]), like)]


def lanczos(matvec, n: int, steps: int, generator: torch.Generator, dtype=torch.float64, device="cpu"):
    """The Ritz values of ``steps`` Lanczos iterations (full reorthogonalisation, float64) of the symmetric
    operator ``matvec`` on R^n from a random unit start: their largest approximates the top eigenvalue.
    Returns (ascending Ritz values, the residual bound |beta_k s_k| of the largest)."""
    steps = min(steps, n)
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    q = q / q.norm()
    Q, alphas, betas = [q], [], []
    for k in range(steps):
        w = matvec(Q[-1].to(dtype)).to(torch.float64)
        alpha = torch.dot(w, Q[-1])
        basis = torch.stack(Q)
        w = w - basis.T @ (basis @ w)   # full reorthogonalisation (twice is enough)
        w = w - basis.T @ (basis @ w)
        alphas.append(alpha)
        beta = w.norm()
        if k == steps - 1 or beta <= 1e-12 * max(1.0, float(alpha.abs())):
            break
        betas.append(beta)
        Q.append(w / beta)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[:m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    theta, S = torch.linalg.eigh(T)
    last_beta = float(w.norm())
    return theta, abs(last_beta * float(S[-1, -1]))


def hutchinson(matvec, n: int, samples: int, generator: torch.Generator, dtype=torch.float64, device="cpu"):
    """Hutchinson's estimate of tr(H) = E[v^T H v] over Rademacher v: (mean, standard error over samples)."""
    vals = []
    for _ in range(samples):
        v = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(device=device, dtype=torch.float64)
        vals.append(float(torch.dot(v, matvec(v.to(dtype)).to(torch.float64))))
    t = torch.tensor(vals, dtype=torch.float64)
    se = float(t.std(unbiased=True) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
    return float(t.mean()), se


KINKED = ("relu", "leaky_relu", "max_pool", "pool_mix", "l1", "elastic", "neg_tanh_abs", "abs_sin")


def kinked_ops(model, task=None) -> list[str]:
    """The ops of a model (and its task's regularizer) whose gradient jumps: a central difference of the
    gradient across such a kink divides the jump by 2h, so finite-difference Hessian-vector products are
    meaningless there."""
    found = []
    for name, m in model.named_modules():
        kind = type(m).__name__
        if kind == "Activation" and m.name in ("relu", "leaky_relu"):
            found.append(f"{name or 'model'} ({m.name})")
        if kind in ("MaxPool2d", "PoolMix") or "pool_mix" in name:
            found.append(f"{name} ({kind})")
    if type(model).__name__ in ("CNN6",):   # its convolutions fuse a ReLU
        found.append("model (relu after each convolution)")
    if type(model).__name__ in ("SegmentationAE", "ArticleSegAE"):
        found.append("model (max / mixed pooling)")
    reg = task.cfg.get("regularizer") if task is not None else None
    if isinstance(reg, dict) and reg.get("name") in KINKED and reg.get("lam", 0):
        found.append(f"regularizer {reg['name']}")
    return found


def refusing_layers(model) -> list[str]:
    """The layers of a model that give no second derivative (the whitening ops) and have parameters below them
    (a whitening of the input, an MLP's ``norm_at=0``, refuses nothing the Hessian in the weights needs)."""
    found = []
    for name, m in model.named_modules():
        if type(m).__name__ in ("ZCAWhiten", "DecorrelatedBatchNorm", "IterNorm"):
            if not (type(model).__name__ == "MLP" and getattr(model, "norm_at", None) == 0 and name == "norm"):
                found.append(f"{name} ({type(m).__name__})")
    return found


def check_curvature(model, task, log: dict) -> None:
    """Refuse, before a run starts, curvature settings its model cannot give."""
    from ..config import ConfigError
    names = [n for n, _ in model.named_parameters()]
    prefixes = log["curvature_params"]
    if prefixes != "all" and not any(n.startswith(tuple(prefixes)) for n in names):
        raise ConfigError(f"log.curvature_params={prefixes!r} names none of the model's parameters {names}")
    if log["curvature_hvp"] == "finite_difference":
        kinks = kinked_ops(model, task)
        if kinks:
            raise ConfigError(f"log.curvature_hvp=finite_difference: the gradient of this model jumps at "
                              f"{', '.join(kinks)}, where central differences of it are meaningless; use "
                              "double_backward (with log.curvature_params naming the parameters above a layer "
                              "that gives no second derivative)")
    elif prefixes == "all" and refusing_layers(model):
        raise ConfigError(f"log.curvature=true: {', '.join(refusing_layers(model))} gives no second derivative, so "
                          "the Hessian in every weight is not available; set log.curvature_params to the "
                          "parameters above it (e.g. [\"layers.1\", \"layers.2\"] for an MLP whitened after "
                          "layer 1: the Hessian's block in them)")


def curvature(loss_fn, params: list, lanczos_steps: int, hutchinson_samples: int, seed: int,
              method: str = "auto") -> dict:
    """{top_eigenvalue, top_residual, trace, trace_se, hvp} of the Hessian of ``loss_fn()`` in ``params``:
    ``method`` "double_backward" (or "auto", the same) or "finite_difference" (for smooth models only; the
    caller checks ``kinked_ops``)."""
    n = sum(p.numel() for p in params)
    dtype, device = params[0].dtype, params[0].device
    used = "finite_difference" if method == "finite_difference" else "double_backward"

    def matvec(v):
        vecs = _split(v, params)
        if used == "double_backward":
            return _flat(hvp(loss_fn, params, vecs)).detach()
        return _flat(hvp_finite_difference(loss_fn, params, vecs)).detach()
    gen = torch.Generator().manual_seed(seed)
    theta, residual = lanczos(matvec, n, lanczos_steps, gen, dtype, device)
    trace, se = hutchinson(matvec, n, hutchinson_samples, gen, dtype, device)
    return {"top_eigenvalue": float(theta[-1]), "top_residual": residual, "trace": trace, "trace_se": se,
            "hvp": used}


@contextlib.contextmanager
def exact_derivatives(model, task=None):
    """Within the block the model differentiates its loss exactly: a named backward that is not the gradient
    is switched to the exact one (the zca article's tanh derivative to tanh's, the article's ZCA backward to the
    exact one, dilated back-propagation's taps off, the articles' coded regularizer derivatives off), so that
    curvature is the loss's own. Restored after."""
    import manualbp.functional as MF
    undo = []
    for m in model.modules():
        if type(m).__name__ == "Activation" and m.name == "tanh_sigmoid_derivative":
            undo.append((m, {"name": m.name, "fn": m.fn, "fusable": m.fusable}))
            m.name, m.fn, m.fusable = "tanh", MF.tanh, True
        if isinstance(getattr(m, "grad", None), str) and m.grad != "exact":
            undo.append((m, {"grad": m.grad}))
            m.grad = "exact"
        if getattr(m, "dilation", None) is not None:
            undo.append((m, {"dilation": m.dilation}))
            m.dilation = None
    reg = task.cfg.get("regularizer") if task is not None else None
    coded = isinstance(reg, dict) and reg.get("article_grad")
    if coded:
        reg["article_grad"] = False
    try:
        yield model
    finally:
        for m, attrs in undo:
            for k, v in attrs.items():
                setattr(m, k, v)
        if coded:
            reg["article_grad"] = True


class Curvature(Instrument):
    """``log.curvature=true``: on probe steps (after the backward, before the update, on the probed batch;
    with ``log.probe_every=after_epoch`` after each epoch's last step); ``log.curvature=end``: once, after the
    last epoch's last step, on its batch (the final weights): ``curvature`` of the data term and of the
    full objective with exact derivatives (``exact_derivatives``). Rows ``instrument: curvature`` in
    instruments.jsonl (one per term), TensorBoard ``curvature_top_eigenvalue/<term>`` and ``curvature_trace/<term>``."""

    TERMS = ("data", "objective")

    def __init__(self, run):
        self.run = run
        lg = run.log
        self.steps, self.samples, self.method = (lg["curvature_lanczos_steps"], lg["curvature_hutchinson_samples"],
                                                 lg["curvature_hvp"])
        self.prefixes = lg["curvature_params"]

    def measure(self, x, y, weights, epoch: int, step: int) -> list[dict]:
        model, task = self.run.model, self.run.task
        params = [p for n, p in model.named_parameters() if p.requires_grad and
                  (self.prefixes == "all" or n.startswith(tuple(self.prefixes)))]
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        x = x.detach()
        rows = []
        try:
            with exact_derivatives(model, task):
                same = dict(weights) == {"data": 1.0}   # the objective is the data term: measured once
                for term in self.TERMS:
                    w = {"data": 1.0} if term == "data" else weights
                    if term == "objective" and same:
                        c = rows[-1]
                        rows.append({**c, "term": term})
                        if self.run.writer is not None:
                            self.run.writer.add_scalar(f"curvature_top_eigenvalue/{term}", c["top_eigenvalue"], step)
                            self.run.writer.add_scalar(f"curvature_trace/{term}", c["trace"], step)
                        continue

                    def loss_fn(w=w):
                        with torch.no_grad():   # each pass sees the same running statistics
                            for k, v in model.named_buffers():
                                v.copy_(buffers[k])
                        return task.loss(model, x, y, w)[0]
                    c = curvature(loss_fn, params, self.steps, self.samples, self.run.seed * 1_000_003 + step,
                                  self.method)
                    rows.append({"epoch": epoch, "step": step, "instrument": "curvature", "term": term, **c,
                                 "params": self.prefixes if self.prefixes == "all" else list(self.prefixes),
                                 "lanczos_steps": self.steps, "hutchinson_samples": self.samples})
                    if self.run.writer is not None:
                        self.run.writer.add_scalar(f"curvature_top_eigenvalue/{term}", c["top_eigenvalue"], step)
                        self.run.writer.add_scalar(f"curvature_trace/{term}", c["trace"], step)
        finally:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        return rows

    def after_backward(self, s) -> None:
        # a non-finite loss: the loop stops with its NaN message after the step; nothing to measure
        if s.probe and self.run.log["curvature"] is True and bool(torch.isfinite(s.loss.detach())):
            self.run.write_instruments(self.measure(s.x, s.y, s.weights, s.epoch, s.step))

    def end_of_steps(self, s) -> None:
        mode = self.run.log["curvature"]
        if (mode is True and self.run.after_epoch) or (mode == "end" and s.epoch == self.run.epochs):
            self.run.write_instruments(self.measure(s.x, s.y, s.weights, s.epoch, s.step))
