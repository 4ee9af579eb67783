"""One status figure per run: what a researcher reads at a glance, from the run folder alone.

Eight panels: the loss curves (train, test), the accuracy curves (and IoU for segmentation), the
per-layer gradient norms, the per-layer gradient signal-to-noise ratios, the per-layer
update-to-weight ratios, the weight spectra (stable rank per layer over epochs, with the
power-law exponent alpha where fitted), and the Hessian's top eigenvalue and trace (data term and
objective). Panels whose instrument was off say which setting turns it
on. ``status_figure(run_dir)`` writes ``status.png`` into the run folder and returns its path.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _per_layer(rows, instrument, key):
    """{layer: (steps, values)} of one instrument's value, in step order."""
    out: dict = {}
    for r in rows:
        if r.get("instrument") == instrument and key in r and r[key] is not None and np.isfinite(r[key]):
            s, v = out.setdefault(r["layer"], ([], []))
            s.append(r["step"])
            v.append(r[key])
    return out


def _per_term(rows, key):
    """{term: (steps, values)} of the curvature rows' ``key``, in step order."""
    out: dict = {}
    for r in rows:
        if r.get("instrument") == "curvature" and r.get(key) is not None and np.isfinite(r[key]):
            s, v = out.setdefault(r["term"], ([], []))
            s.append(r["step"])
            v.append(r[key])
    return out


def _off(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="gray")


def status_figure(run_dir, path=None, writer=None, tag=None) -> Path:
    """Write the run's status figure (PNG; with ``writer``, also a TensorBoard image) and return its path."""
    from manualbp.plotting import plt, save
    run_dir = Path(run_dir)
    metrics = _rows(run_dir / "metrics.jsonl")
    if not metrics:
        raise ValueError(f"{run_dir}: no metrics.jsonl rows; the status figure needs a run that trained an epoch")
    inst = _rows(run_dir / "instruments.jsonl")
    pyplot = plt()
    fig, axes = pyplot.subplots(2, 4, figsize=(21, 8))
    ep = [m["epoch"] for m in metrics]

    curves = ((axes[0, 0], "loss", (("train_loss", "tab:red"), ("test_loss", "tab:blue"),
                                    ("train_objective", "tab:gray"))),
              (axes[0, 1], "accuracy", (("train_acc", "tab:red"), ("test_acc", "tab:blue"), ("test_iou", "tab:green"))))
    for ax, title, keys in curves:
        for key, color in keys:
            if key in metrics[0]:
                ax.plot(ep, [m[key] for m in metrics], color=color, label=key.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)

    panels = [(axes[0, 2], "optimizer", "grad_norm", "gradient norm per layer", "log.optimizer_state=true", True),
              (axes[1, 0], "per_example", "gsnr", "gradient signal-to-noise ratio (per-example)",
               "log.per_example=true", True),
              (axes[1, 1], "optimizer", "update_ratio", "update-to-weight ratio ||dw|| / ||w||",
               "log.optimizer_state=true", True)]
    for ax, instrument, key, title, setting, logy in panels:
        series = _per_layer(inst, instrument, key)
        if not series:
            _off(ax, f"not recorded ({setting})")
        for layer, (s, v) in series.items():
            ax.plot(s, v, marker=".", ms=3, lw=1, label=layer)
        if series:
            if logy and all(x > 0 for _, v in series.values() for x in v):
                ax.set_yscale("log")
            ax.legend(fontsize=6, ncol=2)
        ax.set_title(title)
        ax.set_xlabel("step")

    ax = axes[1, 2]
    ranks = _per_layer(inst, "spectra", "stable_rank")
    alphas = _per_layer(inst, "spectra", "alpha")
    if not ranks:
        _off(ax, "not recorded (log.spectra=end or epoch)")
    for layer, (s, v) in ranks.items():
        line, = ax.plot(s, v, marker="o", ms=3, lw=1, label=layer)
        if layer in alphas:
            ax.annotate(f"alpha {alphas[layer][1][-1]:.1f}", (s[-1], v[-1]), fontsize=6, color=line.get_color())
    if ranks:
        ax.legend(fontsize=6, ncol=2)
    ax.set_title("stable rank per layer (alpha: power-law exponent where fitted)")
    ax.set_xlabel("step")

    for ax, key, title in ((axes[0, 3], "top_eigenvalue", "Hessian top eigenvalue (Lanczos)"),
                           (axes[1, 3], "trace", "Hessian trace (Hutchinson)")):
        series = _per_term(inst, key)
        if not series:
            _off(ax, "not recorded (log.curvature=true)")
        for term, (s, v) in series.items():
            ax.plot(s, v, marker=".", ms=3, lw=1, label=term)
        if series:
            ax.legend(fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("step")

    fig.suptitle(f"{run_dir.name}: status after epoch {ep[-1]}")
    fig.tight_layout()
    out = Path(path) if path is not None else run_dir / "status.png"
    save(fig, out, writer, tag or f"status/{run_dir.name}")
    return out
