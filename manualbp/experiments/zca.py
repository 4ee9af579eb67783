"""Experiment ``zca``: back-propagating through ZCA whitening (article 001).

A three-layer fully connected network with a whitening layer on Fashion-MNIST, compared in one
sweep over whitening variants (none, centering, ZCA per dimension and per example, decorrelated
batch norm, IterNorm; eigh against SVD; the backward with the eigenvalue term zeroed),
several seeds each. ``report`` writes the figures and the results table.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import manualbp.functional as MF

from manualbp.plotting import DATASETS, band_text, integer_ticks, runs_text, sweep_title

from .report import (VERDICT_RULES, claim_cell, family, family_note, group, load_runs, markdown_table, mean_ci, plt,
                     save, status_figures)

GRU_SVM_REFERENCE = 0.897   # Agarap (2017), GRU+SVM with dropout, as quoted by the article
ARTICLE_CLAIM = 0.8951

# The paper configuration: 784-256-256-10 with ReLU, the whitening layer on the input of the second
# layer, ZCA per example (the article's whitening of X^T, an N x N covariance) with eps = 1, Adam 1e-3
# with a cosine decay over the 15 epochs, batch 100. (Measured on Fashion-MNIST before fixing it:
# with a constant learning rate every variant's final accuracy wandered by about 0.3% from epoch
# to epoch, and with eps = 1e-3 the exact ZCA layers landed near 87.7%.)
_MODEL = {"name": "mlp", "widths": [784, 256, 256, 10], "activation": "relu", "bias": True,
          "norm": "zca_example", "norm_at": 1, "norm_kwargs": {"eps": 1.0}}
_COMMON = {"batch_size": 100, "model": _MODEL, "optim": {"name": "Adam", "lr": 1e-3}}

# The article's script (Understanding_Concepts/EIG_Layer/a_zca.py of the authors' repository): the last
# 55,000 training images in the file's order, batch 250; 784 -> 676 tanh (its coded derivative
# 1 - sigmoid^2), ZCA per example with eps 0.06 and the script's backward, then 676 -> 256 -> 10 with
# leaky ReLU (the output too); weights
# N(0, 0.008^2), biases N(0, 0.0001^2); 0.5 sum (y - t)^2 on the output activations; Adam with
# constant bias corrections, eps 1e-40, learning rate 1e-3 * 0.99^(t + 1) in epoch t; float64.
ARTICLE_LOG = [85.64, 87.04, 87.82, 88.25, 88.62, 88.87, 88.93, 89.13, 89.25, 89.25, 89.23, 89.41, 89.37, 89.39,
               89.51]   # the article's test accuracy after epochs 1-15 (its log), percent
_ARTICLE = {
    "epochs": 15, "batch_size": 250, "eval_batch_size": 250, "dtype": "float64",
    "data": {"name": "fashion_mnist", "shuffle": False, "options": {"validation": 5000}},
    "model": {"name": "mlp", "widths": [784, 676, 256, 10], "bias": True, "final_activation": True,
              "activation": ["tanh_sigmoid_derivative", "leaky_relu", "leaky_relu"],
              "norm": "zca_example", "norm_at": 1, "norm_kwargs": {"eps": 0.06, "grad": "article"},
              "init_std": 0.008, "bias_init_std": 1e-4},
    "loss": "sum_squared_error",
    "optim": {"name": "ConstantBiasAdam", "lr": 1e-3 * 0.99, "eps": 1e-40},
    "schedule": {"name": "ExponentialLR", "gamma": 0.99},
}

ARTICLE_NUMPY_SEED = 1234   # the script's np.random.seed: its weights and biases drawn layer by layer

PRESETS = {
    "article": _ARTICLE,
    "ablation": _ARTICLE,     # the article preset, with grid("ablation")'s cumulative fixes
    # the project's configuration: every variant, exact gradients, a fair comparison
    "sound": {**_COMMON, "epochs": 15, "data": {"name": "fashion_mnist"},
              "schedule": {"name": "CosineAnnealingLR", "T_max": 15}},
    "quick": {**_COMMON, "epochs": 3, "data": {"name": "fashion_mnist", "train_limit": 10000, "test_limit": 2000},
              "schedule": {"name": "CosineAnnealingLR", "T_max": 3}},
}


def _norm(norm, **kw):
    return {"model": {"norm": norm, "norm_kwargs": kw}}


VARIANTS = {
    "none": _norm("none"),
    "center": _norm("center"),
    "zca_dim": _norm("zca_dim", eps=1.0, backend="eigh"),
    "zca_dim_svd": _norm("zca_dim", eps=1.0, backend="svd"),
    # the same training as zca_dim; eval mode whitens with a running average of the whitening matrix
    # instead of each test batch's own statistics (as decorrelated batch norm does)
    "zca_dim_running": _norm("zca_dim", eps=1.0, backend="eigh", running=True, momentum=0.1),
    "zca_example": _norm("zca_example", eps=1.0, backend="eigh"),
    "zca_example_svd": _norm("zca_example", eps=1.0, backend="svd"),
    # the backward with the eigenvalue term zeroed (not a gradient, within a few percent of it)
    "zca_example_no_eigenvalue_term": _norm("zca_example", eps=1.0, backend="eigh", grad="no_eigenvalue_term"),
    # whitened in groups of 16 features: with batch 100 < 256 features a single group is rank-deficient
    # and its running whitening matrix fails in eval mode (measured: 75.8% test accuracy)
    "dbn": _norm("decorrelated_batch_norm", eps=1e-3, backend="eigh", group_size=16),
    "iternorm": _norm("iter_norm", eps=1e-3, iterations=5),
}
GRID = {"variant": VARIANTS, "seed": list(range(10))}


# The ablation from the article preset: each step fixes one more of the article script's errors,
# cumulatively; the steps up to softmax_ce keep the script's network, data and eps, the last is the
# sound preset's configuration
_EXACT = {"model": {"norm_kwargs": {"grad": "exact"}}}
_TANH = {"model": {"norm_kwargs": {"grad": "exact"}, "activation": ["tanh", "leaky_relu", "leaky_relu"]}}
_ADAM = {**_TANH, "optim": {"name": "Adam", "lr": 1e-3 * 0.99}}
# the sound preset's zca_example run, written over the article preset (every key the article sets, reset)
_SOUND = {**PRESETS["sound"], "eval_batch_size": None, "dtype": "float32", "loss": "softmax_cross_entropy",
          "data": {**PRESETS["sound"]["data"], "shuffle": True, "options": {"validation": 0}},
          "model": {**_MODEL, "final_activation": False, "init_std": None, "bias_init_std": None,
                    "norm_kwargs": {"eps": 1.0, "grad": "exact"}}}
ABLATION = {
    "article": {},                                        # the script, errors included
    "exact_zca": _EXACT,                                  # + the exact ZCA backward
    "exact_tanh": _TANH,                                  # + tanh's own derivative 1 - tanh^2
    "textbook_adam": _ADAM,                               # + Adam with the 1 - b^t bias corrections
    "softmax_ce": {**_ADAM, "loss": "softmax_cross_entropy"},   # + softmax cross-entropy on the outputs
    "sound": _SOUND,                                      # the sound preset's zca_example configuration
}
ABLATION_ENDS = ("article", "sound")


def grid(preset: str) -> dict | list:
    """The article preset is one configuration (the script's) over 10 seeds, seed 0 on the script's own
    initial draw (``model.numpy_init_seed``); the ablation preset its
    cumulative fixes, 10 seeds for the two ends and 5 for the steps between; the others every variant."""
    if preset == "article":   # seed 0 on the script's own draw (numpy RandomState(1234)), seeds 1-9 on torch's
        return [{"variant": {"article": {"model": {"numpy_init_seed": ARTICLE_NUMPY_SEED}}}, "seed": [0]},
                {"variant": {"article": {}}, "seed": list(range(1, 10))}]
    if preset == "ablation":
        return [{"variant": {k: ABLATION[k] for k in ABLATION_ENDS}, "seed": list(range(10))},
                {"variant": {k: v for k, v in ABLATION.items() if k not in ABLATION_ENDS}, "seed": list(range(5))}]
    return GRID


def ablation_table(groups: dict) -> str:
    """Each ablation step's final test accuracy (mean ± sd, 95% t-interval) and its change from the step
    above, paired by seed."""
    rows, prev = [], None
    for step in ABLATION:
        if step not in groups:
            continue
        acc = {r["config"]["seed"]: 100 * r["metrics"][-1]["test_acc"] for r in groups[step]}
        m, sd, ci, n = mean_ci(list(acc.values()))
        change = "-"
        if prev is not None:
            seeds = sorted(set(acc) & set(prev))
            if len(seeds) > 1:
                dm, _, dci, dn = mean_ci([acc[k] - prev[k] for k in seeds])
                change = f"{dm:+.2f} [{dm - dci:+.2f}, {dm + dci:+.2f}] (n={dn})"
        rows.append([step, n, f"{m:.2f} ± {sd:.2f}" if n > 1 else f"{m:.2f}",
                     f"[{m - ci:.2f}, {m + ci:.2f}]" if n > 1 else "-", change])
        prev = acc
    return markdown_table(["step (cumulative)", "n", "test acc % mean ± sd", "95% t-interval",
                           "change from the step above, paired by seed"], rows)


def article_comparison(runs: list, path: Path | None = None, writer=None) -> str:
    """The article preset's test accuracy per epoch against the article's log: a figure (the log, the
    seeds' mean and min-max band) and a Markdown table of the differences per epoch (mean over seeds,
    its 95% t-interval)."""
    acc = np.array([[100 * r["test_acc"] for r in run["metrics"]] for run in runs])   # [seed, epoch]
    n_ep = min(acc.shape[1], len(ARTICLE_LOG))
    acc, log = acc[:, :n_ep], np.array(ARTICLE_LOG[:n_ep])
    rows = []
    for e in range(n_ep):
        m, sd, ci, n = mean_ci(list(acc[:, e] - log[e]))
        rows.append([e + 1, f"{log[e]:.2f}", f"{acc[:, e].mean():.2f}", f"{m:+.2f}",
                     f"[{m - ci:+.2f}, {m + ci:+.2f}]" if n > 1 else "-", n])
    if path is not None:
        pyplot = plt()
        fig, ax = pyplot.subplots(figsize=(7, 4.5))
        ep = np.arange(1, n_ep + 1)
        ax.plot(ep, log, "k--o", ms=3, label="the article's log")
        if len(acc) > 1:
            ax.plot(ep, acc.mean(0), color="C0", label=f"article preset, mean of {len(acc)} seeds")
            ax.fill_between(ep, acc.min(0), acc.max(0), color="C0", alpha=0.2, label="min-max over seeds")
        else:
            ax.plot(ep, acc[0], color="C0", label="article preset, one run")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy %")
        integer_ticks(ax, "x")
        cfg = runs[0].get("config")
        title = (sweep_title(cfg, runs_text(len(acc)), n_ep) if cfg
                 else f"zca, article: {n_ep} epochs, {runs_text(len(acc))}")
        ax.set_title(f"{title}\nthe article's script against its log")
        ax.legend()
        save(fig, path, writer, "zca/article_log")
    return (markdown_table(["epoch", "article's log %", "seeds' mean %", "mean - log", "95% t-interval", "n"], rows)
            + f"\n\nOne interval per epoch, {n_ep} in all, none corrected for the others.")


# ---------------------------------------------------------------- the independent whitening check

def whitening_check(x: torch.Tensor, mode: str = "dim", eps: float = 1e-8, backend: str = "eigh") -> dict:
    """Whiten ``x`` (N, D) with the op and compare with a ZCA computed separately in numpy float64.

    Returns the largest deviation of the whitened covariance from the identity and the largest
    difference from numpy's result (both in float64)."""
    x64 = x.detach().double().cpu()
    y = MF.zca_whiten(x64, eps=eps, mode=mode, backend=backend)
    a = x64.numpy() if mode == "dim" else x64.numpy().T
    lam, e = np.linalg.eigh(a.T @ a / a.shape[0])
    ref = a @ (e / np.sqrt(np.maximum(lam, 0) + eps)) @ e.T
    ref = ref if mode == "dim" else ref.T
    yn = y.numpy()
    cov = yn.T @ yn / yn.shape[0] if mode == "dim" else yn @ yn.T / yn.shape[1]
    return {"identity_error": float(np.abs(cov - np.eye(cov.shape[0])).max()),
            "numpy_difference": float(np.abs(yn - ref).max())}


@torch.no_grad()
def batch_statistics_accuracy(run_dir, config: dict, batch_size: int | None = None) -> float:
    """Test accuracy of a finished run's final model when every test batch is whitened with its own
    statistics (the layers' training-mode forward), whatever the layer keeps for eval mode. For a
    ``zca_dim_running`` run this is what ``zca_dim`` (same seed, identical training) reports, so one
    training gives both evaluations."""
    import copy

    from manualbp.data import load_dataset
    from manualbp.models import build_model
    model = build_model(config["model"])
    state = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state)
    model = copy.deepcopy(model).train()   # training-mode forward: batch statistics (running buffers are a copy)
    d = config["data"]
    test = load_dataset(d["name"], "test", d["root"], limit=d["test_limit"])
    bs = batch_size or config["eval_batch_size"] or config["batch_size"]
    correct = 0
    for x, y in test.batches(bs):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(test)


# ---------------------------------------------------------------- figures

def transforms_figure(x: torch.Tensor, path: Path, writer=None, eps: float = 1e-5, title: str = ""):
    """Histograms and covariance matrices of 100 examples: original, centred, standardised,
    ZCA-whitened and standardised-then-whitened, per dimension and per example; ``title`` names the data."""
    x = x.double()
    rows = {
        "per dimension": (0, "dim", lambda y: y.T @ y / y.shape[0]),
        "per example": (1, "example", lambda y: y @ y.T / y.shape[1]),
    }
    pyplot = plt()
    fig, axes = pyplot.subplots(4, 5, figsize=(16, 13))
    fig.subplots_adjust(hspace=0.55, wspace=0.4, right=0.9, top=0.9)
    for r, (kind, (dim, mode, cov)) in enumerate(rows.items()):
        data = {"original": x, "centred": MF.center(x, dim), "standardised": MF.standardize(x, 1e-5, dim),
                "ZCA-whitened": MF.zca_whiten(x, eps, mode),
                "standardised + whitened": MF.zca_whiten(MF.standardize(x, 1e-5, dim), eps, mode)}
        for c, (name, y) in enumerate(data.items()):
            y = y.detach()
            ax = axes[2 * r, c]
            ax.hist(y.flatten().numpy(), bins=60, color="tab:blue")
            ax.set_title(f"{name}, {kind}\nmean {y.mean():.3f}, std {y.std():.3f}")
            ax.set(xlabel="value", ylabel="count")
            ax = axes[2 * r + 1, c]
            im = ax.imshow(cov(y).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_title(f"covariance, {kind}")
            index = "pixel" if mode == "dim" else "example"
            ax.set(xlabel=f"{index} index", ylabel=f"{index} index")
            ax.grid(False)
    fig.colorbar(im, cax=fig.add_axes([0.925, 0.3, 0.012, 0.4]), label="covariance")
    fig.suptitle(title or f"zca: transforms of {len(x)} examples (ZCA eps {eps:g})", y=0.96)
    save(fig, path, writer, "zca/transforms")


def curves_figure(groups: dict, path: Path, writer=None, title: str = ""):
    """Training and test accuracy (%) and cost per epoch of every variant: the mean over its seeds with a min-max
    band (one run: its curve); ``title`` names the preset and the scale."""
    pyplot = plt()
    fig, axes = pyplot.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = [("train_acc", "training accuracy", "training accuracy %"),
              ("test_acc", "test accuracy", "test accuracy %"),
              ("train_loss", "training cost", "training cost"),
              ("test_loss", "test cost", "test cost")]
    sizes = sorted({len(runs) for runs in groups.values()})
    for ax, (key, name, ylabel) in zip(axes.flat, panels):
        k = 100.0 if key.endswith("_acc") else 1.0
        for variant, runs in groups.items():
            ep = [r["epoch"] for r in runs[0]["metrics"]]
            v = k * np.array([[r[key] for r in run["metrics"]] for run in runs])
            line, = ax.plot(ep, v.mean(0), label=f"{variant} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(ep, v.min(0), v.max(0), color=line.get_color(), alpha=0.15)
        if key == "test_acc":
            ax.axhline(100 * ARTICLE_CLAIM, color="k", ls="--", lw=0.8, label="article's 89.51%")
            ax.axhline(100 * GRU_SVM_REFERENCE, color="gray", ls=":", lw=0.8, label="GRU+SVM 89.7%")
        ax.set_title(f"{name} ({band_text(sizes[0]) if len(sizes) == 1 else 'mean, min-max band over seeds'})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_tick_params(labelbottom=True)
        integer_ticks(ax, "x")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(title or "zca: accuracy and cost per epoch")
    fig.tight_layout()
    save(fig, path, writer, "zca/curves")


def against_baseline(groups: dict, baseline: str = "none") -> str:
    """Markdown: each variant's final test accuracy minus the baseline's, paired by seed (points), with its
    95% t-interval, n and verdict on "the variant beats the baseline", Holm's correction over every variant."""
    if baseline not in groups:
        return ""
    base = {r["labels"]["seed"]: r["metrics"][-1]["test_acc"] for r in groups[baseline]}
    names = [v for v in groups if v != baseline]
    diffs = [[r["metrics"][-1]["test_acc"] - base[r["labels"]["seed"]] for r in groups[v]
              if r["labels"]["seed"] in base] for v in names]
    if not names:
        return ""
    flags = family([(d, "higher") for d in diffs])
    rows = [[v, claim_cell(d, "higher", 100, corrected=f) if d else "no shared seed"]
            for v, d, f in zip(names, diffs, flags)]
    return (f"\n## Test accuracy against `{baseline}`, paired by seed (points)\n\n"
            + markdown_table(["variant", f"variant - {baseline}: mean [95% t-interval], n: does it beat {baseline}?"],
                             rows)
            + f"\n\n{VERDICT_RULES} {family_note(flags, 'variants')}\n")


def eigh_svd_figure(groups: dict, timing: list, path: Path, writer=None, title: str = ""):
    """Final test accuracy (%) and seconds per epoch of the ZCA variants, eigh against SVD, and the op's own
    forward + backward time per whitened dimension; ``title`` names the preset and the scale."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(14, 4))
    pairs = [(m, f"zca_{m}", f"zca_{m}_svd") for m in ("dim", "example")]
    labels, accs, errs, secs = [], [], [], []
    for mode, e, s in pairs:
        for name, backend in ((e, "eigh"), (s, "svd")):
            if name not in groups:
                continue
            runs = groups[name]
            m, sd, _, _ = mean_ci([100 * r["metrics"][-1]["test_acc"] for r in runs])
            labels.append(f"{mode}\n{backend}")
            accs.append(m)
            errs.append(0 if np.isnan(sd) else sd)
            secs.append(np.mean([r["metrics"][-1]["time_s"] / len(r["metrics"]) for r in runs]))
    colors = ["tab:blue", "tab:orange"] * (len(labels) // 2 + 1)
    axes[0].bar(labels, accs, yerr=errs, color=colors[:len(labels)])
    axes[0].set_ylim(min(accs + [85.0]) - 1.0, max(accs + [90.0]) + 0.5)
    n = sorted({len(groups[name]) for _, e, s in pairs for name in (e, s) if name in groups})
    axes[0].set_title("final test accuracy " + ("(one run)" if n == [1] else
                                               f"(mean ± sd over {n[0] if len(n) == 1 else 'the'} seeds)"))
    axes[0].set(xlabel="ZCA mode, backend", ylabel="test accuracy %")
    axes[1].bar(labels, secs, color=colors[:len(labels)])
    axes[1].set_title("training time per epoch (whole step)")
    axes[1].set(xlabel="ZCA mode, backend", ylabel="seconds per epoch")
    if timing:
        widths = sorted({w for w, _ in timing})
        for backend in ("eigh", "svd"):
            axes[2].plot(widths, [timing[(w, backend)] for w in widths], "o-", label=backend)
        axes[2].set_xscale("log", base=2)
        axes[2].set_yscale("log")
        axes[2].set_xlabel("whitened dimension D (batch 100, per dimension)")
        axes[2].set_ylabel("ms (median of 5)")
        axes[2].set_title("zca_whiten forward + backward")
        axes[2].legend()
    else:
        axes[2].remove()
    fig.suptitle(title or "zca: eigh against SVD")
    fig.tight_layout()
    save(fig, path, writer, "zca/eigh_vs_svd")


def time_backends(widths=(64, 128, 256, 512), n=100, repeats=5, device="cpu") -> dict:
    """{(D, backend): median ms} of zca_whiten forward+backward per dimension, eigh against SVD (interleaved)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for d in widths:
        x = torch.randn(n, d, generator=g).to(device).requires_grad_()
        for backend in ("eigh", "svd"):
            MF.zca_whiten(x, 1e-3, "dim", backend).sum().backward()  # warm-up
        samples = {"eigh": [], "svd": []}
        for _ in range(repeats):
            for backend in ("eigh", "svd"):
                t0 = time.perf_counter()
                MF.zca_whiten(x, 1e-3, "dim", backend).sum().backward()
                if device != "cpu":
                    torch.cuda.synchronize()
                samples[backend].append(time.perf_counter() - t0)
        for backend, s in samples.items():
            out[(d, backend)] = 1000 * float(np.median(s))
    return out


# ---------------------------------------------------------------- the report

def report(sweep_dir: Path, specs) -> list[str]:
    """Figures (PNG in the sweep folder, also in its TensorBoard log) and results.md from finished runs."""
    from torch.utils.tensorboard import SummaryWriter

    from manualbp.data import TensorData, load_dataset
    runs = load_runs(specs)
    if not runs:
        return ["zca report: no finished runs"]
    sweep_dir = Path(sweep_dir)
    cfg = specs[0].config
    writer = SummaryWriter(str(sweep_dir / "tb_report"))
    status_figures([r["dir"] for r in runs], writer)   # one status figure per run
    lines = []
    try:
        test = load_dataset(cfg["data"]["name"], "test", cfg["data"]["root"], limit=100)
        x = TensorData.as_float(test.x).double().reshape(len(test), -1)   # 100, or all of a smaller test split
        data = DATASETS.get(cfg["data"]["name"], cfg["data"]["name"])
        transforms_figure(x, sweep_dir / "transforms.png", writer,
                          title=f"zca: the transforms on {len(x)} {data} test images (ZCA eps 1e-5)")
        chk_e = whitening_check(x, "example")
        chk_d = whitening_check(x[:, ::8][:, :64] + 0.01 * torch.randn(len(x), 64, generator=torch.Generator()
                                                                      .manual_seed(0), dtype=torch.float64), "dim")
        lines.append(f"whitening check on {len(x)} test images (float64): per example |cov - I| = "
                     f"{chk_e['identity_error']:.1e}, |op - numpy eigh| = {chk_e['numpy_difference']:.1e}; per "
                     f"dimension (64 pixels) |cov - I| = {chk_d['identity_error']:.1e}, |op - numpy eigh| = "
                     f"{chk_d['numpy_difference']:.1e}")
        groups = group(runs)
        article_table = ""
        if cfg["preset"] == "article":
            article_table = ("\n\n## Test accuracy per epoch against the article's log\n\n"
                             + article_comparison(runs, sweep_dir / "article_log.png", writer))
        if cfg["preset"] == "ablation":
            article_table = "\n\n## The ablation\n\n" + ablation_table(groups)
        sizes = sorted({len(rs) for rs in groups.values()})
        scale = (f"{runs_text(sizes[0])} per variant" if len(sizes) == 1
                 else f"{sizes[0]}-{sizes[-1]} seeds per variant")
        title = sweep_title(cfg, scale, len(runs[0]["metrics"]))
        curves_figure(groups, sweep_dir / "curves.png", writer, title)
        timing = time_backends()
        eigh_svd_figure(groups, timing, sweep_dir / "eigh_vs_svd.png", writer, title)
        head = ["variant", "n", "test acc mean ± sd", "95% t-interval", "min", "max", "train acc", "s/epoch"]
        rows = []
        for variant, rs in groups.items():
            accs = [r["metrics"][-1]["test_acc"] for r in rs]
            m, sd, ci, n = mean_ci(accs)
            rows.append([variant, n, f"{100 * m:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * m:.2f}",
                         f"± {100 * ci:.2f}" if n > 1 else "-", f"{100 * min(accs):.2f}", f"{100 * max(accs):.2f}",
                         f"{100 * np.mean([r['metrics'][-1]['train_acc'] for r in rs]):.2f}",
                         f"{np.mean([r['metrics'][-1]['time_s'] / len(r['metrics']) for r in rs]):.1f}"])
        rows.append(["GRU+SVM (reference, with dropout)", "-", f"{100 * GRU_SVM_REFERENCE:.2f}", "-", "-", "-", "-",
                     "-"])
        epochs = len(runs[0]["metrics"])
        table = markdown_table(head, rows)
        paired = against_baseline(groups)
        timing_table = markdown_table(["D", "eigh ms", "svd ms"],
                                      [[d, f"{timing[(d, 'eigh')]:.1f}", f"{timing[(d, 'svd')]:.1f}"]
                                       for d in sorted({d for d, _ in timing})])
        (sweep_dir / "results.md").write_text(
            f"# zca: test accuracy after {epochs} epochs ({cfg['data']['name']})\n\n{table}\n\n"
            f"zca_whiten forward+backward per dimension, batch 100, median of 5 (CPU):\n\n{timing_table}\n\n"
            f"{lines[0]}\n{paired}{article_table}\n")
        lines += ["", table, "", f"figures and results.md in {sweep_dir}"]
    finally:
        writer.close()
    return lines
