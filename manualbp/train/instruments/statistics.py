"""The statistics of the instruments beyond the articles' probes (the classes that run them in the loop are in
this package's other modules), computed on probe steps only and switched by configuration:

- ``log.per_example``: per-example gradients of the data term through the model's own manual
  Functions (``torch.func.vmap`` of ``torch.func.grad`` over the examples of the probed batch), and
  per layer: the per-example gradient norms (mean, sd, histogram), the gradient variance (the trace
  of the per-example covariance / parameter count, with the 1/N covariance) and the gradient
  signal-to-noise ratio (GSNR: the mean over parameters of mean^2 / variance, with the 1/N variance,
  over the parameters whose variance is not 0). Cockpit's MeanGSNR computes mean^2 / (variance +
  1e-5) and averages over every parameter: it counts a parameter whose per-example gradients are all
  0 (a dead unit) as 0 where this one leaves it out (and one whose gradients are all equal and not 0
  as mean^2 / 1e-5), and its 1e-5 dominates variances of
  that size or smaller, so its value shrinks with the loss's scale; this one is invariant to the
  scale and equals Cockpit's with eps 0 when no variance is 0. Batch norm couples the examples of a batch; its
  per-example gradients are defined with the batch statistics fixed: each example is normalised
  with the mean and (biased) variance of the whole probed batch, taken as constants, so the
  statistics' own dependence on the example is left out (the per-example gradients do not sum to
  the batch gradient of a BN network). Other layers that couple the examples (whitening over the
  batch) are refused.
- ``log.optimizer_state``: per layer the optimizer's second moment (Adam's ``exp_avg_sq``,
  RMSprop's ``square_avg``, the TF1 optimizers' accumulators), the update-to-weight ratio
  ||delta w|| / ||w|| of the probed step, and the global gradient norm.
- ``log.spectra``: per layer (the weight reshaped to out x rest) the spectral norm, the stable rank
  ||W||_F^2 / ||W||_2^2 and, for layers with at least ``MIN_SINGULAR_VALUES`` singular values, the
  power-law exponent alpha of the eigenvalues of W^T W fitted by WeightWatcher's power-law fit
  (``weightwatcher.WW_powerlaw.WWFit``: the maximum-likelihood alpha for every candidate xmin, the
  xmin of the smallest Kolmogorov-Smirnov distance; the ``weightwatcher`` package, installed with
  the ``instruments`` extra), at the end of the run (``"end"``) or after every epoch (``"epoch"``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

HIST_BINS = 30
MIN_SINGULAR_VALUES = 50
# second-moment state by optimizer (the first key present is used): torch's Adam / AdamW / Adam-c
# (exp_avg_sq), RMSprop (square_avg), Adagrad (sum); the TF1 optimizers' Adam (v), RMSProp (ms),
# AdagradDA (gradient_squared_accumulator) and the accumulators of squared gradients of Adadelta, Adagrad,
# Ftrl and ProximalAdagrad (accum; tf1.Momentum's accum is its velocity, not a second moment)
SECOND_MOMENT_KEYS = ("exp_avg_sq", "square_avg", "sum", "v", "ms", "gradient_squared_accumulator", "accum")
NO_SECOND_MOMENT = ("Momentum", "GradientDescent", "ProximalGradientDescent", "SGD")


# ---------------------------------------------------------------- per-example gradients

def _batch_coupling_layers(model) -> list[str]:
    from manualbp.nn.norm import BatchNorm
    coupled = []
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, BatchNorm):
            continue
        if kind in ("ZCAWhiten", "DecorrelatedBatchNorm", "IterNorm") or \
                (kind in ("Center", "Standardize") and getattr(m, "dim", None) == 0):
            coupled.append(f"{name} ({kind})")
    return coupled


def check_instruments(model, log: dict, task=None) -> None:
    """Refuse, before a run trains, instruments that its model cannot give: per-example gradients of a
    model with layers that couple the examples of a batch beyond batch norm; curvature through a layer
    without a second derivative, or by finite differences across kinks."""
    from ..config import ConfigError
    coupled = _batch_coupling_layers(model) if log.get("per_example") else []
    if coupled:
        raise ConfigError(f"log.per_example=true: {', '.join(coupled)} couple the examples of a batch beyond batch "
                          "norm, so per-example gradients are not defined for this model; set log.per_example=false")
    if log.get("spectra", "off") != "off":   # the power-law fit's package, before any training
        _wwfit()
    if log.get("curvature"):
        from .curvature import check_curvature
        check_curvature(model, task, log)


def batch_statistics(model, x) -> dict:
    """{buffer name: value}: every batch norm's running_mean / running_var replaced by the mean and the
    biased variance of its input over the batch ``x`` (the statistics a training step normalises with)."""
    from manualbp.nn.norm import BatchNorm
    out, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, BatchNorm):
            def hook(mod, inputs, output, name=name):
                t = inputs[0].detach()
                dims = [0] + list(range(2, t.dim()))
                out[f"{name}.running_mean"] = t.mean(dims)
                out[f"{name}.running_var"] = t.var(dims, unbiased=False)
            hooks.append(m.register_forward_hook(hook))
    if hooks:
        was = model.training
        model.train()
        try:
            with torch.no_grad():
                _run_without_updates(model, x)
        finally:
            for h in hooks:
                h.remove()
            model.train(was)
    return out


def _run_without_updates(model, x):
    """A forward in training mode that leaves the running statistics as they were."""
    saved = {k: v.clone() for k, v in model.named_buffers()}
    try:
        model(x)
    finally:
        for k, v in model.named_buffers():
            v.copy_(saved[k])


def per_example_gradients(model, example_loss, x, y, names=None) -> dict:
    """{parameter name: (N, *shape)}: the gradient of ``example_loss(model output for one example, its
    target)`` for every example of (x, y), by ``torch.func.vmap`` of ``torch.func.grad`` through the
    model's Functions; batch norm with the batch's statistics fixed (module docstring). ``names``:
    the parameters to differentiate (default all)."""
    from torch.func import functional_call, grad, vmap
    coupled = _batch_coupling_layers(model)
    if coupled:
        raise ValueError(f"per-example gradients: {', '.join(coupled)} couple the examples of a batch beyond batch "
                         "norm; per-example statistics are defined for batch norm only (statistics fixed); set "
                         "log.per_example=false for this model")
    params = {k: v.detach() for k, v in model.named_parameters()}
    wanted = list(params) if names is None else list(names)
    unknown = [n for n in wanted if n not in params]
    if unknown:
        raise ValueError(f"per-example gradients: no parameter named {unknown} in {type(model).__name__}; its "
                         f"parameters are {list(params)}")
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    buffers.update(batch_statistics(model, x))
    fixed = {k: v for k, v in params.items() if k not in wanted}

    def loss_one(p, xi, yi):
        out = functional_call(model, ({**fixed, **p}, buffers), (xi[None],))
        return example_loss(out, yi[None])

    was = model.training
    model.eval()   # batch norm reads the (swapped-in) batch statistics
    try:
        return vmap(grad(loss_one), in_dims=(None, 0, 0))({k: params[k] for k in wanted}, x, y)
    finally:
        model.train(was)


def gradient_statistics(g: torch.Tensor) -> dict:
    """Statistics of one layer's per-example gradients g (N, ...): the per-example norms (their mean, sd
    and values), the gradient variance tr(Cov) / P (1/N covariance) and the mean GSNR."""
    flat = g.detach().reshape(g.shape[0], -1).double()
    norms = flat.norm(dim=1)
    mean = flat.mean(0)
    var = flat.var(0, unbiased=False)
    keep = var > 0
    gsnr = (mean[keep] ** 2 / var[keep]).mean() if bool(keep.any()) else torch.tensor(float("nan"))
    return {"norm_mean": float(norms.mean()), "norm_sd": float(norms.std(unbiased=False)),
            "grad_variance": float(var.mean()), "gsnr": float(gsnr), "norms": norms.cpu().numpy()}


def per_example_rows(model, task, x, y, step: int, epoch: int, writer=None, histograms: bool = True) -> list[dict]:
    """One row per probed layer (``probe_points``) with ``gradient_statistics`` of its weight, from the
    per-example gradients of the task's data term; written to TensorBoard as ``per_example/*``."""
    from ..probes import histogram, probe_points
    points = probe_points(model)
    index = {id(p): n for n, p in model.named_parameters()}
    layers = [(name, index[id(layer.weight)]) for name, layer, _ in points]
    grads = per_example_gradients(model, task.example_loss, x, y, [p for _, p in layers])
    rows = []
    for name, pname in layers:
        s = gradient_statistics(grads[pname])
        norms = s.pop("norms")
        row = {"epoch": epoch, "step": step, "layer": name, "instrument": "per_example", **s}
        if histograms and np.isfinite(norms).all():
            row["hist"] = histogram(norms)
        rows.append(row)
        if writer is not None:
            for k in ("norm_mean", "norm_sd", "grad_variance", "gsnr"):
                writer.add_scalar(f"per_example_{k}/{name}", s[k], step)
            if histograms and np.isfinite(norms).all():
                writer.add_histogram(f"per_example_norms/{name}", norms, step)
    return rows


# ---------------------------------------------------------------- optimizer state and update size

def second_moment(optimizer, p):
    """The optimizer's running second moment (or accumulated squared gradient) of parameter p, or None."""
    if optimizer is None or type(optimizer).__name__ in NO_SECOND_MOMENT:
        return None
    state = optimizer.state.get(p, {})
    for k in SECOND_MOMENT_KEYS:
        if isinstance(state.get(k), torch.Tensor):
            return state[k]
    return None


class UpdateSize:
    """Snapshot the probed layers' weights before a step; ``rows`` after it: per layer the update-to-weight
    ratio ||delta w|| / ||w|| (w before the step), the second moment's mean and sd, and the global
    gradient norm over every parameter with a gradient."""

    def __init__(self, model):
        from ..probes import probe_points
        self.points = [(name, layer.weight) for name, layer, _ in probe_points(model)]
        self.model = model
        self.before: dict = {}

    def snapshot(self) -> None:
        self.before = {name: w.detach().clone() for name, w in self.points}

    def rows(self, optimizer, step: int, epoch: int, writer=None) -> list[dict]:
        grads = [p.grad.detach().double().reshape(-1) for p in self.model.parameters() if p.grad is not None]
        global_norm = float(torch.cat(grads).norm()) if grads else float("nan")
        out = []
        for name, w in self.points:
            b = self.before.get(name)
            ratio = float((w.detach() - b).double().norm() / b.double().norm().clamp_min(1e-300)) if b is not None \
                else float("nan")
            v = second_moment(optimizer, w)
            row = {"epoch": epoch, "step": step, "layer": name, "instrument": "optimizer", "update_ratio": ratio,
                   "grad_norm": float(w.grad.detach().double().norm()) if w.grad is not None else float("nan"),
                   "second_moment_mean": float(v.double().mean()) if v is not None else float("nan"),
                   "second_moment_sd": float(v.double().std(unbiased=False)) if v is not None else float("nan"),
                   "global_grad_norm": global_norm}
            out.append(row)
            if writer is not None:
                for k in ("update_ratio", "grad_norm", "second_moment_mean"):
                    if math.isfinite(row[k]):
                        writer.add_scalar(f"optimizer_{k}/{name}", row[k], step)
        if writer is not None and math.isfinite(global_norm):
            writer.add_scalar("optimizer_global_grad_norm", global_norm, step)
        self.before = {}
        return out


# ---------------------------------------------------------------- weight spectra

def as_matrix(w: torch.Tensor, transposed: bool = False) -> np.ndarray:
    """The weight reshaped to out x rest (a linear layer's (out, in); a convolution's (out, in kH kW);
    ``transposed``: a transposed convolution's weight is (in, out, kH, kW), so its out axis is moved
    first)."""
    w = w.detach().double()
    if transposed:
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1).cpu().numpy()


def _wwfit():
    import contextlib
    import io
    import logging
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from weightwatcher.WW_powerlaw import WWFit   # the package prints its SVD backend on import
    except ImportError:
        raise ImportError("log.spectra fits power laws with WeightWatcher's fit; install it with "
                          "pip install -e '.[instruments]' (or pip install weightwatcher), or set log.spectra=off") \
            from None
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return WWFit


def powerlaw_alpha(eigenvalues: np.ndarray) -> dict:
    """The power-law exponent of a set of eigenvalues by WeightWatcher's fit (the eigenvalues above its
    threshold 1e-5, as WeightWatcher's ``analyze`` takes them): {alpha, xmin, ks_distance}."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    ev = ev[ev > 1e-5]
    if len(ev) < 2:
        return {"alpha": float("nan"), "xmin": float("nan"), "ks_distance": float("nan")}
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = _wwfit()(ev)
    return {"alpha": float(fit.alpha), "xmin": float(fit.xmin), "ks_distance": float(fit.D)}


def layer_spectrum(w: torch.Tensor, min_singular_values: int = MIN_SINGULAR_VALUES, transposed: bool = False) -> dict:
    """{spectral_norm, stable_rank, n_singular, alpha, xmin, ks_distance} of one weight (alpha and its fit
    only with at least ``min_singular_values`` singular values; NaN otherwise); ``transposed``: the
    weight of a transposed convolution (``as_matrix``)."""
    m = as_matrix(w, transposed)
    s = np.linalg.svd(m, compute_uv=False)
    out = {"spectral_norm": float(s[0]), "stable_rank": float((s ** 2).sum() / s[0] ** 2) if s[0] > 0 else float("nan"),
           "n_singular": int(len(s)), "alpha": float("nan"), "xmin": float("nan"), "ks_distance": float("nan")}
    if len(s) >= min_singular_values:
        out.update(powerlaw_alpha(s ** 2))
    return out


def spectra_rows(model, step: int, epoch: int, writer=None) -> list[dict]:
    """One row per probed layer with ``layer_spectrum`` of its weight; TensorBoard ``spectra_*``."""
    from ..probes import probe_points
    out = []
    for name, layer, _ in probe_points(model):
        spectrum = layer_spectrum(layer.weight, transposed=type(layer).__name__ == "ConvTranspose2d")
        row = {"epoch": epoch, "step": step, "layer": name, "instrument": "spectra", **spectrum}
        out.append(row)
        if writer is not None:
            for k in ("spectral_norm", "stable_rank", "alpha"):
                if math.isfinite(row[k]):
                    writer.add_scalar(f"spectra_{k}/{name}", row[k], step)
    return out
