"""Probes: per-layer tensors captured with module and tensor hooks on chosen steps only
(models carry no logging code), summarised and written to TensorBoard and ``probes.jsonl``.

For each probe point (a layer and the activation that follows it): the pre-activation (layer
output), the post-activation, the weight, the weight gradient (regularizer included), the
gradient passed to the layer's input (the first layer's too when the batch requires grad), and the
optimizer's first moment (Adam's ``exp_avg`` or
SGD's momentum buffer). Statistics: mean, standard deviation, skewness, excess kurtosis (biased,
as scipy.stats' defaults) and the count of non-zeros.
"""
from __future__ import annotations

import math

import numpy as np
import torch

QUANTITIES = ("pre_activation", "post_activation", "weight", "weight_grad", "input_grad", "first_moment")
STATS = ("mean", "std", "skewness", "kurtosis", "nonzero")
HIST_BINS = 30   # probes.jsonl keeps a 30-bin histogram (equal bins over [min, max]) of every probed tensor


def tensor_stats(t: torch.Tensor) -> torch.Tensor:
    """(mean, std, skewness, excess kurtosis, non-zero count) of all entries, as a float64 tensor on t's device.
    Central moments are biased (divided by n), as numpy.std and scipy.stats.skew/kurtosis by default."""
    x = t.detach().reshape(-1).double()
    m = x.mean()
    d = x - m
    m2 = (d * d).mean()
    m3 = (d * d * d).mean()
    m4 = (d * d * d * d).mean()
    return torch.stack([m, m2.sqrt(), m3 / m2 ** 1.5, m4 / (m2 * m2) - 3, (x != 0).sum().double()])


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> dict:
    """{"range": [lo, hi], "counts": [...]}: equal bins over [min, max], in float64. A range too narrow
    for ``bins`` finite bins at the values' magnitude (e.g. weights pushed to a huge near-constant value)
    puts everything in one bin instead of failing."""
    v = values.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    try:
        counts, _ = np.histogram(v, bins, range=(lo, hi))
    except ValueError:
        counts = np.zeros(bins, dtype=np.int64)
        counts[0] = v.size
    return {"range": [lo, hi], "counts": counts.tolist()}


def probe_points(model) -> list:
    """(name, layer, activation or None) triples; models describe their structure with ``probe_points()``."""
    if not hasattr(model, "probe_points"):
        raise ValueError(f"{type(model).__name__} has no probe_points(); probes need it (log.probe_every=0 to disable)")
    return list(model.probe_points())


class Probes:
    """``input_grad_scale``: the passed gradients are recorded multiplied by it (the gradient-pov article's
    script passed B times the gradient of the mean cost from layer to layer)."""

    def __init__(self, model, writer=None, histograms: bool = True, input_grad_scale: float = 1.0):
        self.points = probe_points(model)
        self.writer, self.histograms = writer, histograms
        self.input_grad_scale = float(input_grad_scale)
        self._handles: list = []
        self._captured: dict = {}

    def arm(self) -> None:
        """Install the hooks for the next forward/backward (call before the forward of a probed step)."""
        self._captured = {}
        for name, layer, act in self.points:
            self._handles.append(layer.register_forward_hook(self._layer_hook(name)))
            if act is not None:
                self._handles.append(act.register_forward_hook(self._act_hook(name)))

    def _layer_hook(self, name):
        def hook(module, inputs, output):
            self._captured[(name, "pre_activation")] = output.detach()
            x = inputs[0]
            if isinstance(x, torch.Tensor) and x.requires_grad:
                x.register_hook(lambda g: self._captured.__setitem__((name, "input_grad"), self._scaled(g)))
        return hook

    def _scaled(self, g):
        g = g.detach()
        return g if self.input_grad_scale == 1.0 else g * self.input_grad_scale

    def _act_hook(self, name):
        def hook(module, inputs, output):
            self._captured[(name, "post_activation")] = output.detach()
        return hook

    def disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def collect(self, optimizer, step: int, epoch: int) -> list[dict]:
        """After optimizer.step(): summarise everything captured, log it, remove the hooks; returns rows."""
        self.disarm()
        tensors = {}
        for name, layer, _ in self.points:
            w = layer.weight
            tensors[(name, "weight")] = w.detach()
            if w.grad is not None:
                tensors[(name, "weight_grad")] = w.grad.detach()
            state = optimizer.state.get(w, {}) if optimizer is not None else {}
            moment = state.get("exp_avg", state.get("momentum_buffer"))
            if moment is not None:
                tensors[(name, "first_moment")] = moment.detach()
        tensors.update(self._captured)
        self._captured = {}
        keys = [(n, q) for n, _, _ in self.points for q in QUANTITIES if (n, q) in tensors]
        if not keys:
            return []
        values = torch.stack([tensor_stats(tensors[k]) for k in keys]).cpu().tolist()  # one device-to-host copy
        rows = []
        for (name, q), vals in zip(keys, values):
            row = {"epoch": epoch, "step": step, "layer": name, "quantity": q, **dict(zip(STATS, vals)),
                   "numel": tensors[(name, q)].numel()}
            rows.append(row)
            finite = all(math.isfinite(v) for v in vals[:2])   # NaN/Inf: no histogram
            if self.histograms and finite:
                host = tensors[(name, q)].detach().float().cpu().numpy().ravel()
                row["hist"] = histogram(host)
            if self.writer is not None:
                for s, v in zip(STATS, vals):
                    self.writer.add_scalar(f"probe_{s}/{q}/{name}", v, step)
                if self.histograms and finite:
                    self.writer.add_histogram(f"probe_hist/{q}/{name}", host, step)
        return rows


def probes_to_arrays(rows: list[dict], layers: list[str]) -> dict:
    """Probe rows (``probes.jsonl``) as arrays: ``stats`` [probe, layer, quantity, statistic] (NaN where a
    quantity was not captured, e.g. the input gradient of the first layer), ``numel`` [probe, layer,
    quantity] (the tensors' sizes, for shares of non-zeros), with ``steps``, ``epochs``,
    ``layers``, ``quantities`` and ``statistics`` naming the axes."""
    steps = sorted({r["step"] for r in rows})
    index = {s: i for i, s in enumerate(steps)}
    li = {n: i for i, n in enumerate(layers)}
    stats = np.full((len(steps), len(layers), len(QUANTITIES), len(STATS)), np.nan)
    numel = np.zeros((len(steps), len(layers), len(QUANTITIES)), dtype=np.int64)
    epochs = np.zeros(len(steps), dtype=np.int64)
    for r in rows:
        if r["layer"] not in li:
            continue
        i = index[r["step"]]
        epochs[i] = r["epoch"]
        stats[i, li[r["layer"]], QUANTITIES.index(r["quantity"])] = [r[k] for k in STATS]
        numel[i, li[r["layer"]], QUANTITIES.index(r["quantity"])] = r.get("numel", 0)
    return {"stats": stats, "numel": numel, "steps": np.array(steps, dtype=np.int64), "epochs": epochs,
            "layers": np.array(layers), "quantities": np.array(QUANTITIES), "statistics": np.array(STATS)}
