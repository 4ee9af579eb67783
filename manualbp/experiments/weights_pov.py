"""Experiment ``weights-pov``: regularization seen through the final weights (article 000).

CNN6 (3-16-16-16-16-16-10, 3x3 convolutions without bias, strides 2,2,2,2,1,1, "same" padding,
ReLU after every convolution, global average pooling, softmax cross-entropy), initial weights
N(0, 0.05), with and without batch norm (no affine, eps 1e-8, decay 0.9 = momentum 0.1) after the
ReLU of layers 1-5; Adam lr 0.0008, lambda 1e-5; the 13 regularizers of the article's letters Z, A-L
(``ARTICLE_LETTERS["weights-pov"]``); several episodes (seeds) each. The baseline case is also run
at batch 20 ("Z20") to measure the batch-size effect on overfitting.

``report`` reads the final weights from each run's checkpoint and writes the figures (weight
histograms per case and layer with their episode mean, accuracy curves, a summary of all layers,
R and R' of every regularizer, a 3-D histogram over episodes), the per-dataset tables and the
article's four observations as numbers with confidence intervals.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from manualbp.functional import ARTICLE_LETTERS, REGULARIZERS
from manualbp.plotting import band_text, integer_ticks, runs_text, sweep_title

from .report import (VERDICT_RULES, bootstrap_correlation_runs, claim_cell, correlation_cell, distinct_cases,
                     estimate, family, family_note, load_runs, markdown_table, mean_ci, plt, save, status_figures)

LETTERS = ARTICLE_LETTERS["weights-pov"]
LAMBDA = 1e-5
SPARSE_BELOW = 1e-3     # a weight counts as sparse (near zero) when |w| < 1e-3

# The article's code spread each example's softmax - y over the final feature map (area S) and divided the
# weight gradient by B twice: the data term weighs S / B against the project's mean cross-entropy.
FINAL_MAP_AREA = {"cifar10": 2 * 2, "stl10": 6 * 6}     # 32 and 96 pixels after four stride-2 layers
ARTICLE_BATCH = {"cifar10": 100, "stl10": 20}
ARTICLE_EPOCHS = {"cifar10": 100, "stl10": 150}
# the article's lambda per arm: (dataset, batch norm) -> lambda (0: no regularizer at all)
ARTICLE_LAMBDA = {("cifar10", False): 1e-5, ("cifar10", True): 0.01, ("stl10", False): 1e-5, ("stl10", True): 0.0}


def data_weight(dataset: str, batch_size: int) -> float:
    """S / B: the weight of the data term in the article's code (0.04 for CIFAR-10 at batch 100)."""
    return FINAL_MAP_AREA[dataset] / batch_size


_MODEL = {"name": "cnn6", "batch_norm": False, "init_std": 0.05, "bn_eps": 1e-8, "bn_momentum": 0.1}
_LOG = {"probe_every": 0}   # the final weights are read from the checkpoint; per-epoch probes are gradient-pov's
#                              subject, so this sweep skips them (log.probe_every=epoch turns them on)
# the sound presets also record the final weights' spectra (log.spectra=end)
_SOUND = {"model": _MODEL, "optim": {"name": "Adam", "lr": 0.0008}, "eval_batch_size": 500,
          "log": {**_LOG, "spectra": "end"}, "data": {"name": "cifar10"}, "batch_size": 100}


def _article(dataset: str, epochs: int, limits: tuple = (None, None)) -> dict:
    """The authors' code: one shared initial draw (init_seed 0; layers 2-5 equal), TensorFlow's "SAME"
    padding (``model.padding=tf_same``), batch-norm running
    statistics from 0 with the biased variance, pixels / 255 in file order, the data term weighted S / B,
    Adam-c (lr 0.0008, eps 1e-9), test accuracy over batches of B."""
    b = ARTICLE_BATCH[dataset]
    return {"model": {**_MODEL, "equal_init": True, "bn_running_init": "zero", "bn_running_variance": "biased",
                      "padding": "tf_same"},
            "optim": {"name": "ConstantBiasAdam", "lr": 0.0008, "eps": 1e-9}, "init_seed": 0,
            "data": {"name": dataset, "shuffle": False, "train_limit": limits[0], "test_limit": limits[1]},
            "batch_size": b, "eval_batch_size": b, "epochs": epochs,
            "objective": {"data": data_weight(dataset, b), "regularizer": 1.0}, "log": _LOG}


PRESETS = {
    # the authors' code on CIFAR-10: all 50,000 training images in file order, batch 100, 100 epochs
    "article": _article("cifar10", ARTICLE_EPOCHS["cifar10"]),
    # the same for the article's STL-10 arm: batch 20, 150 epochs (S / B = 36 / 20)
    "article-stl10": _article("stl10", ARTICLE_EPOCHS["stl10"]),
    # the CIFAR-10 article preset on a CPU budget: all 50,000 images, 20 of the 100 epochs
    "article-cpu": _article("cifar10", 20),
    # minutes on a 2-core CPU: a CIFAR-10 subset (2k / 1k, same order), 3 epochs
    "article-quick": _article("cifar10", 3, (2000, 1000)),
    # the errors fixed: seeds as episodes (own initial weights and data order), the mean cross-entropy,
    # lambda 1e-5 in every arm, Adam, running statistics as torch's; CIFAR-10, all 50k images, 100 epochs
    "sound": {**_SOUND, "epochs": 100},
    "sound-stl10": {**_SOUND, "data": {"name": "stl10"}, "batch_size": 20, "epochs": 150},
    # the sound preset on a CPU budget: fixed random subsets of 10,000 training and 5,000 test images,
    # 12 epochs, 3 seeds
    "sound-cpu": {**_SOUND, "data": {"name": "cifar10", "train_limit": 10000, "test_limit": 5000}, "epochs": 12},
    # minutes on a 2-core CPU: a CIFAR-10 subset, 3 epochs
    "quick": {**_SOUND, "data": {"name": "cifar10", "train_limit": 2000, "test_limit": 1000}, "epochs": 3},
}


def _case(letter: str, lam: float = LAMBDA, article: bool = False) -> dict:
    """``article``: the coded derivative where the article's differs from R' (K: 2 / (w + eps))."""
    name = LETTERS[letter]
    none = name == "none" or lam == 0
    reg = {"name": "none" if none else name, "lam": 0.0 if none else lam}
    if article and not none and REGULARIZERS[name].article_grad is not None:
        reg["article_grad"] = True
    return {"regularizer": reg}


CASES = {letter: _case(letter) for letter in LETTERS}
CASES["Z20"] = {**_case("Z"), "batch_size": 20}   # the baseline at batch 20: observation 3
BN = {"bn": {"model": {"batch_norm": True}}, "nobn": {"model": {"batch_norm": False}}}
GRID = {"bn": BN, "case": CASES, "seed": [0, 1]}


def article_grid(dataset: str, seeds=(0,)) -> list:
    """The article's runs: per batch-norm arm its own lambda (``ARTICLE_LAMBDA``), every letter; one
    episode (the article's episodes shared their initial weights and data order, so on a CPU they are
    the same run: ``--seeds 0,1`` shows it)."""
    out = []
    for bn, on in (("bn", True), ("nobn", False)):
        lam = ARTICLE_LAMBDA[(dataset, on)]
        out.append({"bn": {bn: BN[bn]}, "case": {c: _case(c, lam, article=True) for c in LETTERS},
                    "seed": list(seeds)})
    return out


def grid(preset: str):
    if preset.startswith("article"):
        return article_grid("stl10" if preset.endswith("stl10") else "cifar10")
    if preset in ("sound", "sound-stl10"):   # 10 episodes, as the article
        return {"bn": BN, "case": CASES, "seed": list(range(10))}
    if preset == "sound-cpu":   # seeds outermost: a cut sweep has whole episodes
        return {"seed": [0, 1, 2], "bn": BN, "case": CASES}
    return GRID


# ---------------------------------------------------------------- reading runs

def _load(specs) -> list[dict]:
    out = load_runs(specs)
    for r in out:   # the final weights of the six convolutions
        state = torch.load(r["dir"] / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        r["weights"] = [state[f"convs.{i}.weight"].double().flatten().numpy() for i in range(6)]
    return out


def excess_kurtosis(w: np.ndarray) -> float:
    d = w - w.mean()
    m2 = (d ** 2).mean()
    return float((d ** 4).mean() / m2 ** 2 - 3)


def sparsity(ws) -> float:
    allw = np.concatenate(ws)
    return float((np.abs(allw) < SPARSE_BELOW).mean())


def gap(run) -> float:
    f = run["metrics"][-1]
    return f["train_acc"] - f["test_acc"]


def _fmt(values, pct=True):
    m, sd, half, n = mean_ci(values)
    k = 100 if pct else 1
    if n < 2:
        return f"{k * m:.2f}"
    return f"{k * m:.2f} ± {k * sd:.2f}"


def _ci(values, pct=True, digits=2):
    """Mean [95% t-interval], n (scaled to points with ``pct``); one value is labelled as one run."""
    return estimate(values, 100 if pct else 1, digits)


def bootstrap_correlation(x, y, n_boot=5000, seed=0):
    """Pearson r of (x, y) and its 95% percentile bootstrap interval (resampling the pairs): the one-run-per-
    case form of ``report.bootstrap_correlation_runs``."""
    return bootstrap_correlation_runs([([a], [b]) for a, b in zip(x, y)], n_boot, seed)


def case_correlation(groups, bn, letters, fx, fy):
    """(r, lo, hi) between the case means of fx and fy over ``letters`` (each regularizer counted once),
    bootstrapped over cases and over the runs within each case; None with fewer than 3 cases or no spread."""
    cases = [([fx(r) for r in groups[(bn, c)]], [fy(r) for r in groups[(bn, c)]])
             for c in distinct_cases({c: LETTERS[c] for c in letters}) if (bn, c) in groups]
    if len(cases) < 3 or np.ptp([np.mean(x) for x, _ in cases]) == 0:
        return None
    return bootstrap_correlation_runs(cases)


# ---------------------------------------------------------------- figures

def case_figure(runs, title, path, writer=None):
    """Per layer: the final-weight histogram of every episode and their mean; plus train (red) / test
    (blue) accuracy (%), mean with a min-max band over episodes (one episode: its curves). ``title`` names the
    case, the preset and the scale."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 7, figsize=(22, 3.4), layout="constrained")
    for layer in range(6):
        ax = axes[layer]
        allw = np.concatenate([r["weights"][layer] for r in runs])
        bins = np.linspace(allw.min(), allw.max(), 41)
        hists = np.array([np.histogram(r["weights"][layer], bins)[0] for r in runs])
        centers = (bins[1:] + bins[:-1]) / 2
        if len(runs) > 1:
            for h in hists:
                ax.plot(centers, h, color="tab:red", alpha=0.35, lw=0.8)
        ax.plot(centers, hists.mean(0), color="magenta", lw=2, label="mean" if len(runs) > 1 else "one episode")
        ax.set_title(f"layer {layer + 1}: kurtosis {np.mean([excess_kurtosis(r['weights'][layer]) for r in runs]):.2f}")
        ax.set(xlabel="final weight", ylabel="count" + (" (red: each episode)" if len(runs) > 1 and not layer else ""))
    ax = axes[6]
    ep = [m["epoch"] for m in runs[0]["metrics"]]
    for key, color in (("train_acc", "red"), ("test_acc", "blue")):
        v = 100 * np.array([[m[key] for m in r["metrics"]] for r in runs])
        ax.plot(ep, v.mean(0), color=color, label=key.replace("_acc", ""))
        if len(runs) > 1:
            ax.fill_between(ep, v.min(0), v.max(0), color=color, alpha=0.2)
    ax.set_title(f"accuracy ({band_text(len(runs), 'episodes')})")
    ax.set(xlabel="epoch", ylabel="accuracy %")
    integer_ticks(ax, "x")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path, writer, f"weights-pov/{path.stem}")


def summary_figure(groups, cases, path, writer=None, title=""):
    """Mean final-weight histogram of every case (rows) and layer (columns), BN on and off overlaid; ``title``
    names the preset and the scale."""
    pyplot = plt()
    fig, axes = pyplot.subplots(len(cases), 6, figsize=(18, 1.6 * len(cases) + 0.8), squeeze=False,
                                layout="constrained")
    for r, case in enumerate(cases):
        for layer in range(6):
            ax = axes[r, layer]
            for bn, color in (("nobn", "tab:blue"), ("bn", "tab:orange")):
                runs = groups.get((bn, case))
                if not runs:
                    continue
                allw = np.concatenate([x["weights"][layer] for x in runs])
                bins = np.linspace(np.percentile(allw, 0.5), np.percentile(allw, 99.5), 41)
                h = np.mean([np.histogram(x["weights"][layer], bins, density=True)[0] for x in runs], 0)
                ax.plot((bins[1:] + bins[:-1]) / 2, h, color=color, label=bn)
            ax.set_yticks([])
            _sparse_ticks(ax)
            if r == 0:
                ax.set_title(f"layer {layer + 1}")
            if layer == 0:
                ax.set_ylabel(f"{case}: {LETTERS.get(case, 'none, batch 20')}", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title)
    fig.supxlabel("final weight (0.5-99.5 percentile range)")
    fig.supylabel("density, scaled per panel (rows: case)")
    save(fig, path, writer, "weights-pov/summary")


def _sparse_ticks(ax) -> None:
    """At most 4 x ticks, small numbers with a shared power of ten: the narrow panels' labels must not overlap."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax.tick_params(axis="x", labelsize=7)


def regularizer_figure(path, writer=None):
    """R (solid) and R' (dashed) of every regularizer of the article's letters."""
    import textwrap
    pyplot = plt()
    letters = [k for k in LETTERS if LETTERS[k] != "none"]
    fig, axes = pyplot.subplots(2, 6, figsize=(18, 6.6), layout="constrained")
    t = torch.linspace(-2, 2, 801, dtype=torch.float64)
    t = t[t.abs() > 1e-3]
    for ax, letter in zip(axes.flat, letters):
        reg = REGULARIZERS[LETTERS[letter]]
        ax.plot(t, reg.value(t), "-", label="R")
        ax.plot(t, reg.grad(t).expand_as(t), "--", label="R'")
        ax.set_ylim(-4, 4)
        ax.set_title(textwrap.fill(f"{letter}: {reg.name} = {reg.formula}", 34), fontsize=8)
        ax.set(xlabel="weight t", ylabel="R(t), R'(t)")
    for ax in axes.flat[len(letters):]:
        ax.remove()
    axes.flat[0].legend()
    fig.suptitle("weights-pov: the regularizers of the article's letters, R(t) (solid) and its derivative R'(t) "
                 "(dashed), per weight")
    save(fig, path, writer, "weights-pov/regularizers")


def histogram_3d_figure(runs, layer, path, writer=None, title=""):
    """The final-weight histogram of one layer for each episode, as a 3-D bar chart over episodes."""
    pyplot = plt()
    fig = pyplot.figure(figsize=(8, 5))
    ax = fig.add_subplot(projection="3d")
    allw = np.concatenate([r["weights"][layer] for r in runs])
    bins = np.linspace(allw.min(), allw.max(), 31)
    centers = (bins[1:] + bins[:-1]) / 2
    for e, r in enumerate(runs):
        h = np.histogram(r["weights"][layer], bins)[0]
        ax.bar(centers, h, zs=e, zdir="y", width=bins[1] - bins[0], alpha=0.7)
    ax.set_xlabel("final weight")
    ax.set_ylabel("episode")
    ax.set_zlabel("count")
    ax.set_yticks(range(len(runs)))
    integer_ticks(ax, "z")
    ax.set_title(title)
    save(fig, path, writer, f"weights-pov/{path.stem}")


def mean_weights_figure(groups, cases, bn, path, writer=None, title=""):
    """Per case (rows) and layer (columns): the article's "mean histogram", the histogram of the
    element-wise mean of the final weights over the episodes (bars), beside the mean of the episodes'
    histograms (line). The two agree when the episodes share their initial weights (the article's code),
    and the first narrows towards 0 when each episode draws its own."""
    pyplot = plt()
    rows = [c for c in cases if (bn, c) in groups]
    if not rows:
        return
    fig, axes = pyplot.subplots(len(rows), 6, figsize=(18, 1.7 * len(rows) + 0.8), squeeze=False,
                                layout="constrained")
    for r, case in enumerate(rows):
        runs = groups[(bn, case)]
        for layer in range(6):
            ax = axes[r, layer]
            ws = np.stack([x["weights"][layer] for x in runs])
            bins = np.linspace(ws.min(), ws.max(), 41)
            ax.hist(ws.mean(0), bins, density=True, color="tab:green", alpha=0.6, label="mean of weights")
            h = np.mean([np.histogram(w, bins, density=True)[0] for w in ws], 0)
            ax.plot((bins[1:] + bins[:-1]) / 2, h, color="magenta", lw=1.2, label="mean of histograms")
            ax.set_yticks([])
            _sparse_ticks(ax)
            if r == 0:
                ax.set_title(f"layer {layer + 1}")
            if layer == 0:
                ax.set_ylabel(f"{case} (n = {len(runs)})", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title)
    fig.supxlabel("final weight")
    fig.supylabel("density, scaled per panel (rows: case, n episodes)")
    save(fig, path, writer, f"weights-pov/{path.stem}")


# ---------------------------------------------------------------- the report

def findings(groups, cases) -> list[str]:
    """The article's four observations as numbers (percent points for accuracies)."""
    out = []
    letters = distinct_cases({c: LETTERS[c] for c in cases if c != "Z20"})   # each function once
    seeds = sorted({r["labels"]["seed"] for runs in groups.values() for r in runs})

    def per_episode(bn, fn):   # mean over the distinct cases within each episode -> one value per episode
        vals = []
        for s in seeds:
            xs = [fn(r) for c in letters for r in groups.get((bn, c), []) if r["labels"]["seed"] == s]
            if xs:
                vals.append(float(np.mean(xs)))
        return vals

    rows = []
    for layer in range(6):
        on = per_episode("bn", lambda r: excess_kurtosis(r["weights"][layer]))
        off = per_episode("nobn", lambda r: excess_kurtosis(r["weights"][layer]))
        rows.append([layer + 1, _ci(on, False), _ci(off, False)])
    out += ["1. BN makes the final weights Gaussian-like (excess kurtosis 0): mean excess kurtosis over the "
            f"{len(letters)} distinct regularizers (each function once), mean and 95% t-interval over episodes:", "",
            markdown_table(["layer", "BN on", "BN off"], rows), ""]
    on, off = per_episode("bn", gap), per_episode("nobn", gap)
    diff = [a - b for a, b in zip(on, off)]
    out += [f"2. BN overfits more: train-test accuracy gap (points, mean over the {len(letters)} distinct "
            f"regularizers; 95% t-interval over episodes): BN on {_ci(on)}, BN off {_ci(off)}, paired difference "
            f"on - off {claim_cell(diff, 'higher', 100)}.", ""]
    rows = []
    for bn in ("bn", "nobn"):
        g20 = [gap(r) for r in groups.get((bn, "Z20"), [])]
        g100 = [gap(r) for r in groups.get((bn, "Z"), [])]
        rows.append([bn, _ci(g20), _ci(g100)])
    out += ["3. Smaller batches overfit more: gap of the baseline Z (points, 95% t-interval over episodes):", "",
            markdown_table(["", "batch 20", "batch 100"], rows), ""]
    for bn in ("bn", "nobn"):
        once = [c for c in distinct_cases({c: LETTERS[c] for c in letters}) if (bn, c) in groups]
        if len(once) < 3:
            continue
        c = case_correlation(groups, bn, letters, lambda r: sparsity(r["weights"]), gap)
        what = (f"4. ({bn}) sparsity (share of abs(w) < {SPARSE_BELOW:g}) against the gap across {len(once)} "
                "distinct regularizers (each function once)")
        if c is None:
            out.append(f"{what}: n/a (no spread of sparsity).")
        else:
            out.append(f"{what}: Pearson r of the case means = {c[0]:.2f}, 95% interval [{c[1]:.2f}, {c[2]:.2f}] "
                       "from a bootstrap over the cases and the runs within them (negative r = sparser weights, "
                       "less overfitting).")
    return out


def report(sweep_dir: Path, specs) -> list[str]:
    from torch.utils.tensorboard import SummaryWriter
    runs = _load(specs)
    if not runs:
        return ["weights-pov report: no finished runs"]
    sweep_dir = Path(sweep_dir)
    writer = SummaryWriter(str(sweep_dir / "tb_report"))
    status_figures([r["dir"] for r in runs], writer)   # one status figure per run
    lines = []
    try:
        regularizer_figure(sweep_dir / "regularizers.png", writer)
        by_dataset: dict = {}
        for r in runs:
            by_dataset.setdefault(r["config"]["data"]["name"], []).append(r)
        md = [f"# weights-pov: {len(runs)} finished runs", ""]
        for ds, rs in by_dataset.items():
            groups: dict = {}
            for r in rs:
                groups.setdefault((r["labels"]["bn"], r["labels"]["case"]), []).append(r)
            cases = [c for c in CASES if any((bn, c) in groups for bn in BN)]
            epochs = len(rs[0]["metrics"])
            fig_dir = sweep_dir / "figures" / ds
            n_ep = len({r["labels"]["seed"] for r in rs})
            head = sweep_title(rs[0]["config"], f"{runs_text(n_ep, 'episodes')} per case", epochs)
            for (bn, case), g in sorted(groups.items()):
                case_figure(g, f"{head}\ncase {case} ({LETTERS.get(case, 'none, batch 20')}), {bn}, "
                            f"{runs_text(len(g), 'episodes')}", fig_dir / f"{case}-{bn}.png", writer)
            summary_figure(groups, cases, sweep_dir / f"summary-{ds}.png", writer,
                           f"{head}\nmean final-weight histograms (BN on orange, off blue)")
            for bn in BN:
                mean_weights_figure(groups, cases, bn, sweep_dir / f"mean-weights-{ds}-{bn}.png", writer,
                                    f"{head}, {bn}\nhistogram of the element-wise mean of the final weights over "
                                    "episodes (bars) and the mean of the histograms (line)")
                if (bn, "Z") in groups:
                    histogram_3d_figure(groups[(bn, "Z")], 2, sweep_dir / f"hist3d-{ds}-{bn}.png", writer,
                                        f"{head}\nbaseline Z, {bn}, layer 3 over episodes")
            label = f"{ds} (JPEG copy)" if ds == "cifar10" else ds
            md += [f"## {label}, {epochs} epochs", ""]
            for bn in BN:
                table = []
                for case in cases:
                    g = groups.get((bn, case))
                    if not g:
                        continue
                    table.append([case, LETTERS.get(case, "none (batch 20)"), len(g),
                                  _fmt([r["metrics"][-1]["train_acc"] for r in g]),
                                  _fmt([r["metrics"][-1]["test_acc"] for r in g]),
                                  _fmt([gap(r) for r in g]),
                                  f"{100 * np.mean([sparsity(r['weights']) for r in g]):.2f}",
                                  f"{np.mean([np.mean([excess_kurtosis(w) for w in r['weights']]) for r in g]):.2f}"])
                md += [f"### batch norm {'on' if bn == 'bn' else 'off'}", "",
                       markdown_table(["case", "regularizer", "n", "train acc %", "test acc %", "gap (points)",
                                       f"sparsity % (abs(w) < {SPARSE_BELOW:g})", "kurtosis (mean of layers)"], table),
                       ""]
            md += ["### The article's observations", ""] + findings(groups, cases) + [""]
            spectra = spectra_findings(groups, cases)
            if spectra:
                md += ["### Weight spectra and the train-test gap", ""] + spectra + [""]
        (sweep_dir / "results.md").write_text("\n".join(md) + "\n")
        lines += md + [f"figures and results.md in {sweep_dir}"]
    finally:
        writer.close()
    return lines


# ---------------------------------------------------------------- article against sound

ARTICLE_SAID = {
    "gaussian": "BN makes the final weights Gaussian-like",
    "overfit": "BN overfits more",
    "batch": "smaller batches overfit more (STL-10 at batch 20 against CIFAR-10 at batch 100)",
    "sparse": "sparser weights go with less overfitting",
}


def claim_numbers(runs) -> dict:
    """The article's four observations as numbers for one preset's runs. The units of the intervals are
    the episodes when there are several, else the distinct regularizers (the article preset's one episode); each
    function is counted once (``distinct_cases``)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["labels"]["bn"], r["labels"]["case"]), []).append(r)
    letters = distinct_cases({c: LETTERS[c] for c in LETTERS if ("bn", c) in groups and ("nobn", c) in groups})
    seeds = sorted({r["labels"]["seed"] for r in runs})
    by_seed = len(seeds) > 1

    def units(bn, fn):   # one value per episode (mean over the cases) or per case (one episode)
        if by_seed:
            return [float(np.mean([fn(r) for c in letters for r in groups[(bn, c)] if r["labels"]["seed"] == s]))
                    for s in seeds]
        return [float(np.mean([fn(r) for r in groups[(bn, c)]])) for c in letters]

    def kurt(r):   # distance from a Gaussian's 0, whichever side: mean over the layers of |excess kurtosis|
        return float(np.mean([abs(excess_kurtosis(w)) for w in r["weights"]]))

    out = {"unit": "episodes" if by_seed else "regularizers", "n": len(seeds) if by_seed else len(letters),
           "epochs": len(runs[0]["metrics"])}
    for bn in ("bn", "nobn"):
        out[f"kurtosis_{bn}"] = units(bn, kurt)
        out[f"gap_{bn}"] = units(bn, gap)
        out[f"train_{bn}"] = units(bn, lambda r: r["metrics"][-1]["train_acc"])
        out[f"test_{bn}"] = units(bn, lambda r: r["metrics"][-1]["test_acc"])
        out[f"corr_{bn}"] = case_correlation(groups, bn, letters, lambda r: sparsity(r["weights"]), gap)
        out[f"corr_n_{bn}"] = len(letters)
        z20, z = groups.get((bn, "Z20"), []), groups.get((bn, "Z"), [])
        if z20 and z:
            zs = {r["labels"]["seed"]: gap(r) for r in z}
            out[f"batch_{bn}"] = [gap(r) - zs[r["labels"]["seed"]] for r in z20 if r["labels"]["seed"] in zs]
    out["gap_diff"] = [a - b for a, b in zip(out["gap_bn"], out["gap_nobn"])]
    out["kurtosis_diff"] = [a - b for a, b in zip(out["kurtosis_bn"], out["kurtosis_nobn"])]
    return out


def _cell(values, pct=True) -> str:
    return estimate(values, 100 if pct else 1)


def _corr(c, quantity: str = "sparsity") -> str:
    return f"n/a (no spread of {quantity})" if c is None else f"r = {c[0]:.2f} [{c[1]:.2f}, {c[2]:.2f}]"


# the observations with a direction: key of claim_numbers, direction of the paired difference, scale
PAIRED_CLAIMS = (("kurtosis_diff", "lower", 1), ("gap_diff", "higher", 100), ("batch_bn", "higher", 100),
                 ("batch_nobn", "higher", 100))


def verdict_table(article: dict, sound: dict) -> list[str]:
    """Markdown rows: each observation under the article preset, under the sound preset, and what the
    article said. Accuracies and gaps in points; intervals: 95% Student-t over the units named, n beside them,
    with each paired claim's verdict and Holm's correction over a column's four paired claims; correlations: a
    bootstrap over the distinct regularizers and the runs within each, not corrected."""
    flags = {}
    for name, col in (("article", article), ("sound", sound)):
        claims = [(col.get(k, []), d) for k, d, _ in PAIRED_CLAIMS]
        flags[name] = dict(zip([k for k, _, _ in PAIRED_CLAIMS], family(claims)))

    def claim(col, name, key):
        d = dict((k, (dr, sc)) for k, dr, sc in PAIRED_CLAIMS)[key]
        return claim_cell(col[key], d[0], d[1], corrected=flags[name][key])

    rows = []
    for key, name in (("kurtosis", "abs(excess kurtosis) of the final weights (mean of layers and cases)"),
                      ("gap", "train - test gap, points")):
        pct = key == "gap"
        rows.append([f"{name}: BN on", _cell(article[f"{key}_bn"], pct), _cell(sound[f"{key}_bn"], pct), ""])
        rows.append([f"{name}: BN off", _cell(article[f"{key}_nobn"], pct), _cell(sound[f"{key}_nobn"], pct), ""])
        said = ARTICLE_SAID["gaussian"] + " (closer to 0 with BN: negative)" if key == "kurtosis" \
            else ARTICLE_SAID["overfit"] + " (positive)"
        rows.append([f"{name}: on - off (paired)", claim(article, "article", f"{key}_diff"),
                     claim(sound, "sound", f"{key}_diff"), said])
    for bn in ("bn", "nobn"):
        rows.append([f"train accuracy %, BN {'on' if bn == 'bn' else 'off'}", _cell(article[f"train_{bn}"]),
                     _cell(sound[f"train_{bn}"]), ""])
    for bn in ("bn", "nobn"):
        b = [f"batch 20 - batch 100 gap of Z, BN {'on' if bn == 'bn' else 'off'}",
             claim(article, "article", f"batch_{bn}") if f"batch_{bn}" in article else "not in the article's code",
             claim(sound, "sound", f"batch_{bn}") if f"batch_{bn}" in sound else "not run",
             ARTICLE_SAID["batch"] + " (positive)" if bn == "bn" else ""]
        rows.append(b)
    for bn in ("bn", "nobn"):
        on = "on" if bn == "bn" else "off"
        rows.append([f"sparsity (abs(w) < {SPARSE_BELOW:g}) against gap across the distinct regularizers, BN {on}",
                     correlation_cell(article[f"corr_{bn}"], "lower", article.get(f"corr_n_{bn}")),
                     correlation_cell(sound[f"corr_{bn}"], "lower", sound.get(f"corr_n_{bn}")),
                     ARTICLE_SAID["sparse"] + " (negative r)" if bn == "bn" else ""])
    head = ["observation", f"article ({article['epochs']} epochs; over {article['n']} {article['unit']})",
            f"sound ({sound['epochs']} epochs; over {sound['n']} {sound['unit']})", "the article said"]
    return [markdown_table(head, rows), "", VERDICT_RULES,
            "Article column: " + family_note(list(flags["article"].values()), "paired claims"),
            "Sound column: " + family_note(list(flags["sound"].values()), "paired claims"),
            "The correlations' bootstrap intervals (over the distinct regularizers and the runs within each) are not "
            "corrected for the other comparisons."]


def verdicts(article_specs, sound_specs) -> list[str]:
    """The verdict table from the finished runs of an article sweep and a sound sweep."""
    article, sound = _load(article_specs), _load(sound_specs)
    if not article or not sound:
        return ["weights-pov verdicts: an article and a sound sweep with finished runs are needed"]
    return verdict_table(claim_numbers(article), claim_numbers(sound))


# ---------------------------------------------------------------- instruments (weight spectra)

def _final_spectra(run_dir: Path) -> dict | None:
    """{"spectral_norm": [per layer], "stable_rank": [...]} from the run's last spectra rows (None if
    the run recorded none: log.spectra=off)."""
    path = Path(run_dir) / "instruments.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if r.get("instrument") == "spectra"]
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    rows = sorted((r for r in rows if r["step"] == last), key=lambda r: r["layer"])
    return {k: [r[k] for r in rows] for k in ("spectral_norm", "stable_rank")}


def spectra_findings(groups, cases) -> list[str]:
    """Spectral norm and stable rank of the final weights per regularizer, with and without batch norm,
    and whether either tracks the train-test gap across the regularizers better than the share of
    near-zero weights (Pearson r over the cases' means, each function once; 95% intervals from a bootstrap over
    the cases and the runs within them, not corrected for the six correlations)."""
    letters = [c for c in cases if c != "Z20"]
    out, rows = [], []
    have = False
    for bn in ("bn", "nobn"):
        stats = {}
        for c in letters:
            runs = groups.get((bn, c), [])
            sp = [_final_spectra(r["dir"]) for r in runs]
            if not runs or any(s is None for s in sp):
                continue
            have = True
            stats[c] = {"norm": [float(np.mean(s["spectral_norm"])) for s in sp],
                        "rank": [float(np.mean(s["stable_rank"])) for s in sp],
                        "sparsity": [sparsity(r["weights"]) for r in runs], "gap": [gap(r) for r in runs]}
            v = {k: float(np.mean(x)) for k, x in stats[c].items()}
            rows.append([c, "on" if bn == "bn" else "off", len(runs), f"{v['norm']:.3f}", f"{v['rank']:.2f}",
                         f"{100 * v['sparsity']:.2f}", f"{100 * v['gap']:.2f}"])
        once = [c for c in distinct_cases({c: LETTERS[c] for c in stats}) if c in stats]
        if len(once) >= 3:
            corr = []
            for key, name, what in (("norm", "spectral norm (mean of layers)", "spectral norm"),
                                    ("rank", "stable rank (mean of layers)", "stable rank"),
                                    ("sparsity", f"share of abs(w) < {SPARSE_BELOW:g}", "sparsity")):
                cs = [(stats[c][key], stats[c]["gap"]) for c in once]
                c = bootstrap_correlation_runs(cs) if np.ptp([np.mean(x) for x, _ in cs]) > 0 else None
                corr.append(f"{name}: {_corr(c, what)}")
            out.append(f"- BN {'on' if bn == 'bn' else 'off'}, across {len(once)} distinct regularizers (each "
                       "function once), Pearson r with the gap: " + "; ".join(corr))
    if not have:
        return []
    return ["Spectra of the final weights (log.spectra=end; each weight reshaped to out x (in kH kW)): means over "
            "episodes of the layer means, beside the share of near-zero weights and the gap (points):", "",
            markdown_table(["case", "BN", "n", "spectral norm", "stable rank", "near-zero %", "gap"], rows), ""] + out
