"""One status figure per run: what a researcher reads at a glance, from the run folder alone.

Up to eight panels: the loss curves (train, test), the accuracy curves in % (and IoU for segmentation),
the per-layer gradient norms, the per-layer gradient signal-to-noise ratios, the per-layer
update-to-weight ratios, the weight spectra (stable rank per layer over epochs, with the
power-law exponent alpha where fitted), and the Hessian's top eigenvalue and trace (data term and
objective). A panel whose instrument was off is left out, and a line under the panels names the setting
that turns it on. The title names the experiment, the preset, the run and its scale (from ``config.json``).
``status_figure(run_dir)`` writes ``status.png`` into the run folder and returns its path.
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


def _title(run_dir: Path, last_epoch) -> str:
    """"<experiment>, <preset>: run <name> (seed s), <epochs> epochs, <data>; status after epoch k" from the
    run's config.json (the folder's name alone without one)."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return f"{run_dir.name}: status after epoch {last_epoch}"
    from manualbp.plotting import data_text
    seed = f" (seed {cfg['seed']})" if cfg.get("seed") is not None else ""
    return (f"{cfg.get('experiment', '?')}, {cfg.get('preset', '?')}: run {run_dir.name}{seed}, "
            f"{cfg.get('epochs', '?')} epochs, {data_text(cfg)}; status after epoch {last_epoch}")


def status_figure(run_dir, path=None, writer=None, tag=None) -> Path:
    """Write the run's status figure (PNG; with ``writer``, also a TensorBoard image) and return its path."""
    from manualbp.plotting import integer_ticks, plt, save
    run_dir = Path(run_dir)
    metrics = _rows(run_dir / "metrics.jsonl")
    if not metrics:
        raise ValueError(f"{run_dir}: no metrics.jsonl rows; the status figure needs a run that trained an epoch")
    inst = _rows(run_dir / "instruments.jsonl")
    ep = [m["epoch"] for m in metrics]

    def column(key, k=1.0):
        return [k * m[key] if m.get(key) is not None else float("nan") for m in metrics]

    def curves(keys, k, ylabel):
        def draw(ax):
            for key, color in keys:
                if key in metrics[0]:
                    ax.plot(ep, column(key, k), color=color, label=key.replace("_", " "))
            ax.set(xlabel="epoch", ylabel=ylabel)
            integer_ticks(ax, "x")
            ax.legend(fontsize=7)
        return draw

    def lines(series, ylabel, logy=True, marker=".", notes=None):
        def draw(ax):
            for name, (s, v) in series.items():
                line, = ax.plot(s, v, marker=marker, ms=3, lw=1, label=name)
                if notes and name in notes:
                    ax.annotate(notes[name], (s[-1], v[-1]), fontsize=6, color=line.get_color())
            if logy and all(x > 0 for _, v in series.values() for x in v):
                ax.set_yscale("log")
            ax.set(xlabel="step", ylabel=ylabel)
            ax.legend(fontsize=6, ncol=2)
        return draw

    iou = "test_iou" in metrics[0]
    # (title, draw, or None when not recorded, and the setting that records it)
    panels = [("loss", curves((("train_loss", "tab:red"), ("test_loss", "tab:blue"), ("train_objective", "tab:gray")),
                              1.0, "loss"), ""),
              ("accuracy" + (" and IoU" if iou else ""),
               curves((("train_acc", "tab:red"), ("test_acc", "tab:blue"), ("test_iou", "tab:green")), 100.0,
                      "accuracy / IoU %" if iou else "accuracy %"), "")]
    for instrument, key, title, ylabel, setting in (
            ("optimizer", "grad_norm", "gradient norm per layer", "||g||", "log.optimizer_state=true"),
            ("per_example", "gsnr", "gradient signal-to-noise ratio (per-example)", "GSNR", "log.per_example=true"),
            ("optimizer", "update_ratio", "update-to-weight ratio ||dw|| / ||w||", "||dw|| / ||w||",
             "log.optimizer_state=true")):
        series = _per_layer(inst, instrument, key)
        panels.append((title, lines(series, ylabel) if series else None, setting))
    ranks = _per_layer(inst, "spectra", "stable_rank")
    alphas = {layer: f"alpha {v[-1]:.1f}" for layer, (_, v) in _per_layer(inst, "spectra", "alpha").items()}
    panels.append(("stable rank per layer (alpha: power-law exponent where fitted)",
                   lines(ranks, "stable rank", logy=False, marker="o", notes=alphas) if ranks else None,
                   "log.spectra=end or epoch"))
    for key, title, ylabel in (("top_eigenvalue", "Hessian top eigenvalue (Lanczos)", "top eigenvalue"),
                               ("trace", "Hessian trace (Hutchinson)", "trace")):
        series = _per_term(inst, key)
        panels.append((title, lines(series, ylabel, logy=False) if series else None, "log.curvature=true"))

    drawn = [(title, draw) for title, draw, _ in panels if draw is not None]
    short = {"log.optimizer_state=true": "gradient norms and update ratios", "log.per_example=true": "GSNR",
             "log.spectra=end or epoch": "weight spectra", "log.curvature=true": "Hessian"}
    off = [f"{short[setting]} ({setting})" for setting in dict.fromkeys(s for _, d, s in panels if d is None)]
    cols = min(4, len(drawn))
    rows = -(-len(drawn) // cols)
    pyplot = plt()
    fig, axes = pyplot.subplots(rows, cols, figsize=(5.25 * cols, 4 * rows + 0.6), squeeze=False, layout="constrained")
    for ax, (title, draw) in zip(axes.flat, drawn):
        draw(ax)
        ax.set_title(title)
    for ax in axes.flat[len(drawn):]:
        ax.remove()
    fig.suptitle(_title(run_dir, ep[-1]))
    if off:
        import textwrap
        fig.supxlabel(textwrap.fill("not recorded: " + "; ".join(off), 60 * cols), fontsize=8, color="gray")
    out = Path(path) if path is not None else run_dir / "status.png"
    save(fig, out, writer, tag or f"status/{run_dir.name}")
    return out
