"""Experiment ``gradient-pov``: regularization seen through the gradients (article 004).

CNN6 without batch norm (as in weights-pov), Adam lr 0.0008, the 11 regularizers of the article's
letters Z, A-J (``ARTICLE_LETTERS["gradient-pov"]``), several seeds each. Once per epoch, on the last
training batch, the loop's probes record for each of the six layers the pre-activation, the
post-activation, the weights, the weight gradient (regularizer included), the gradient passed to the
layer's input and Adam's first moment: histograms and five statistics (mean, sd, skewness, excess
kurtosis, non-zero count) in TensorBoard, one run per case, and ``stats.npz``
[epoch, layer, quantity, statistic] in each run folder, which ``report`` reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from manualbp.functional import ARTICLE_LETTERS, REGULARIZERS
from manualbp.plotting import band_text, integer_ticks, runs_text, sweep_title
from manualbp.train.probes import QUANTITIES, STATS

from .report import (VERDICT_RULES, claim_cell, distinct_cases, estimate, family, family_note, load_runs,
                     markdown_table, mean_ci, plt, save, status_figures)

LETTERS = ARTICLE_LETTERS["gradient-pov"]
LAMBDA = 1e-5           # the sound presets
ARTICLE_LAMBDA = 1e-4   # the notebook whose logs the article shows ("blog - higher lambda": lamda = 0.0001)
ARTICLE_BATCH = 20      # its batch size, also the scale of the gradients it passed between layers
CLAIMS = {"best_test": "H", "worst": "C", "sparser_post_activation": "H"}   # the article's findings
FINAL_MAP_AREA = {"stl10": 6 * 6, "cifar10": 2 * 2}   # S: the final feature map's area (96 or 32 pixels / 16)
STL10_SIZE = (5000, 8000)     # STL-10's training and test images: the CIFAR-10 stand-in keeps these sizes

# the sound presets also record the per-example gradient statistics and the optimizer state on the probe steps
_SOUND = {"model": {"name": "cnn6", "batch_norm": False, "init_std": 0.05}, "optim": {"name": "Adam", "lr": 0.0008},
          "batch_size": 20, "eval_batch_size": 500,
          "log": {"probe_every": "epoch", "histograms": True, "per_example": True, "optimizer_state": True}}


def _article(dataset: str, epochs: int, limits: tuple = (None, None), area: str | None = None) -> dict:
    """The authors' code: weights-pov's shared initial draw (init_seed 0, layers 2-5 equal), TensorFlow's
    "SAME" padding (``model.padding=tf_same``), file order, the data term weighted S / B, Adam-c (lr
    0.0008, eps 1e-9), lambda 1e-4 (``ARTICLE_LAMBDA``), letter G's coded derivative
    (``regularizer.article_grad``), and the probe after each epoch on the fixed last batch whose
    gradient enters Adam's first moment (``log.probe_every=after_epoch``, ``log.probe_moment_step``),
    recording the passed gradients at the script's scale (B times the mean cost's,
    ``log.input_grad_scale=20``) with layer 1's (``log.first_input_grad``)."""
    return {"model": {"name": "cnn6", "batch_norm": False, "init_std": 0.05, "equal_init": True,
                      "padding": "tf_same"},
            "optim": {"name": "ConstantBiasAdam", "lr": 0.0008, "eps": 1e-9}, "init_seed": 0,
            "data": {"name": dataset, "shuffle": False, "train_limit": limits[0], "test_limit": limits[1]},
            "batch_size": ARTICLE_BATCH, "eval_batch_size": ARTICLE_BATCH, "epochs": epochs,
            "objective": {"data": FINAL_MAP_AREA[area or dataset] / ARTICLE_BATCH, "regularizer": 1.0},
            "log": {"probe_every": "after_epoch", "probe_moment_step": True, "histograms": True,
                    "input_grad_scale": float(ARTICLE_BATCH), "first_input_grad": True}}


PRESETS = {
    # the authors' code: STL-10, batch 20, 150 epochs, one run per letter
    "article": _article("stl10", 150),
    # STL-10's stand-in: CIFAR-10 subsets of STL-10's sizes (5,000 / 8,000; fixed random subsets in file order),
    # the article's batch 20, 40 of its 150 epochs; the data term at STL-10's S / B = 36 / 20, so that lambda
    # weighs against the data as in the article's runs (CIFAR-10's own 2x2 map would give 4 / 20: lambda 9x
    # heavier, and the l2 network A, which trained in the article, collapses in its first epoch)
    "article-cpu": _article("cifar10", 40, STL10_SIZE, area="stl10"),
    "article-quick": _article("cifar10", 3, (1000, 1000), area="stl10"),
    # the errors fixed: seeds as episodes (own initial weights, shuffled batches), the mean cross-entropy,
    # Adam, G's exact derivative (zero), probes on the epoch's last training step; STL-10, 150 epochs
    "sound": {**_SOUND, "data": {"name": "stl10"}, "epochs": 150},
    # the sound preset on the CIFAR-10 stand-in, 40 epochs
    "sound-cpu": {**_SOUND, "data": {"name": "cifar10", "train_limit": STL10_SIZE[0], "test_limit": STL10_SIZE[1]},
                  "epochs": 40},
    # minutes on a 2-core CPU
    "quick": {**_SOUND, "data": {"name": "cifar10", "train_limit": 1000, "test_limit": 1000}, "epochs": 3},
}


def _case(name: str, article: bool) -> dict:
    """``article``: the coded derivative where the article's differs from R' (G: ``ratio``'s, not zero)."""
    none = name == "none"
    coded = article and not none and REGULARIZERS[name].article_grad is not None
    lam = 0.0 if none else (ARTICLE_LAMBDA if article else LAMBDA)
    return {"regularizer": {"name": name, "lam": lam, "article_grad": coded}}


CASES = {letter: _case(name, False) for letter, name in LETTERS.items()}
ARTICLE_CASES = {letter: _case(name, True) for letter, name in LETTERS.items()}
GRID = {"case": CASES, "seed": [0, 1, 2]}


def grid(preset: str) -> dict:
    if preset.startswith("article"):   # one run per letter
        return {"case": ARTICLE_CASES, "seed": [0]}
    if preset == "sound-cpu":           # seeds outermost: a cut sweep has whole seeds
        return {"seed": [0, 1, 2], "case": CASES}
    return GRID
LAYERS = [f"conv{i}" for i in range(1, 7)]


def _load(specs) -> list[dict]:
    out = load_runs(specs)
    for r in out:   # the probes' statistics [epoch, layer, quantity, statistic]
        with np.load(r["dir"] / "stats.npz") as z:
            r.update(stats=z["stats"], numel=z["numel"], epochs=z["epochs"])
    return out


def _last_histograms(run_dir: Path) -> dict:
    """{(quantity, layer): (bin edges, counts)} of the last probe (the probes' 30-bin histograms)."""
    rows = [json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in rows)
    return {(r["quantity"], r["layer"]): (np.linspace(*r["hist"]["range"], len(r["hist"]["counts"]) + 1),
                                          np.array(r["hist"]["counts"]))
            for r in rows if r["step"] == last and "hist" in r}


def case_figures(runs, case, fig_dir: Path, writer=None, head: str = ""):
    """The article's grid (rows: layers; columns: the six quantities' histograms at the last epoch, seed 0),
    and the five statistics over epochs (mean over seeds) with the accuracy (%). ``head`` names the preset and
    the scale."""
    pyplot = plt()
    hists = _last_histograms(runs[0]["dir"])
    fig, axes = pyplot.subplots(6, 6, figsize=(18, 14.5), layout="constrained")
    for r, layer in enumerate(LAYERS):
        for c, q in enumerate(QUANTITIES):
            ax = axes[r, c]
            if (q, layer) in hists:
                edges, counts = hists[(q, layer)]
                ax.stairs(counts, edges, fill=True, color="tab:blue")
            else:
                ax.text(0.5, 0.5, "not captured\n(the data needs no gradient)", ha="center", transform=ax.transAxes)
                ax.axis("off")
            if r == 0:
                ax.set_title(q)
            if c == 0:
                ax.set_ylabel(f"{layer}: count")
            if r == len(LAYERS) - 1:
                ax.set_xlabel("value")
    seed = str(runs[0]["labels"]["seed"])
    fig.suptitle(f"{head}\ncase {case} ({LETTERS[case]}): histograms at the last epoch "
                 f"({seed if seed.startswith('seed') else f'seed {seed}'})".lstrip("\n"))
    save(fig, fig_dir / f"{case}-histograms.png", writer, f"gradient-pov/{case}-histograms")

    fig, axes = pyplot.subplots(5, 7, figsize=(22, 13.5), layout="constrained")
    stats = np.stack([r["stats"] for r in runs])     # [seed, epoch, layer, quantity, statistic]
    ep = runs[0]["epochs"]
    for si, stat in enumerate(STATS):
        for qi, q in enumerate(QUANTITIES):
            ax = axes[si, qi]
            for li, layer in enumerate(LAYERS):
                v = stats[:, :, li, qi, si]
                if not np.isnan(v).all():
                    ax.plot(ep, np.nanmean(v, 0), label=layer)
            if si == 0:
                ax.set_title(q)
            if qi == 0:
                ax.set_ylabel(stat)
            if si == len(STATS) - 1:
                ax.set_xlabel("epoch")
            if stat == "nonzero":
                integer_ticks(ax)
                ax.ticklabel_format(axis="y", useOffset=False)
        axes[si, 6].axis("off")
    axes[0, 0].legend(fontsize=6)
    ax = axes[2, 6]
    ax.axis("on")
    for key, color in (("train_acc", "red"), ("test_acc", "blue")):
        v = 100 * np.array([[m[key] for m in r["metrics"]] for r in runs])
        ax.plot([m["epoch"] for m in runs[0]["metrics"]], v.mean(0), color=color, label=key.replace("_", " "))
        if len(runs) > 1:
            ax.fill_between([m["epoch"] for m in runs[0]["metrics"]], v.min(0), v.max(0), color=color, alpha=0.2)
    ax.legend(fontsize=7)
    ax.set_title(f"accuracy ({band_text(len(runs))})")
    ax.set(xlabel="epoch", ylabel="accuracy %")
    fig.suptitle(f"{head}\ncase {case} ({LETTERS[case]}): statistics over epochs "
                 f"({'one run' if len(runs) == 1 else f'mean over {len(runs)} seeds'})".lstrip("\n"))
    save(fig, fig_dir / f"{case}-statistics.png", writer, f"gradient-pov/{case}-statistics")


def overlay_figure(groups, stat: str, path: Path, writer=None, head: str = ""):
    """One statistic for all cases: rows quantities, columns layers; mean over seeds with a min-max band (one
    run per case: its curve). A quantity a layer does not have (the input's gradient) leaves its panel blank
    with a note; ``head`` names the preset and the scale."""
    import matplotlib
    pyplot = plt()
    si = STATS.index(stat)
    fig, axes = pyplot.subplots(len(QUANTITIES), len(LAYERS), figsize=(20, 15.5), layout="constrained")
    colours = [matplotlib.colormaps["tab10"](i) for i in range(10)] + ["black", "darkred", "navy"]
    drawn = set()
    for i, (case, runs) in enumerate(groups.items()):
        stats = np.stack([r["stats"] for r in runs])
        ep = runs[0]["epochs"]
        for qi, q in enumerate(QUANTITIES):
            for li, layer in enumerate(LAYERS):
                v = stats[:, :, li, qi, si]
                if np.isnan(v).all():
                    continue
                ax = axes[qi, li]
                drawn.add((qi, li))
                colour = colours[i % len(colours)]
                ax.plot(ep, np.nanmean(v, 0), color=colour, label=case)
                if len(runs) > 1:
                    ax.fill_between(ep, np.nanmin(v, 0), np.nanmax(v, 0), color=colour, alpha=0.1)
    for qi, q in enumerate(QUANTITIES):
        for li, layer in enumerate(LAYERS):
            ax = axes[qi, li]
            if qi == 0:
                ax.set_title(layer)
            if li == 0:
                ax.set_ylabel(f"{q}: {stat}")
            if qi == len(QUANTITIES) - 1:
                ax.set_xlabel("epoch")
            if (qi, li) not in drawn:
                ax.axis("off")
                why = "\n(the data needs no gradient)" if q == "input_grad" and li == 0 else ""
                ax.text(0.5, 0.5, f"{q} of {layer}:\nnot captured{why}", ha="center", va="center",
                        transform=ax.transAxes, color="gray")
            elif stat == "nonzero":
                integer_ticks(ax)
                ax.ticklabel_format(axis="y", useOffset=False)
    axes[0, 0].legend(fontsize=6, ncol=2, title="case")
    sizes = sorted({len(runs) for runs in groups.values()})
    spread = ("one run per case" if sizes == [1] else band_text(sizes[0]) if len(sizes) == 1
              else "mean, min-max band over seeds")
    fig.suptitle(f"{head}\n{stat} of every probed quantity, all cases ({spread})".lstrip("\n"))
    save(fig, path, writer, f"gradient-pov/overlay-{stat}")


def _ci(values, k=100.0, digits=2):
    m, sd, half, n = mean_ci(values)
    if n < 2:
        return f"{k * m:.{digits}f}"
    return f"{k * m:.{digits}f} ± {k * half:.{digits}f}"


def report(sweep_dir: Path, specs) -> list[str]:
    from torch.utils.tensorboard import SummaryWriter
    runs = _load(specs)
    if not runs:
        return ["gradient-pov report: no finished runs"]
    sweep_dir = Path(sweep_dir)
    writer = SummaryWriter(str(sweep_dir / "tb_report"))
    status_figures([r["dir"] for r in runs], writer)   # one status figure per run
    try:
        groups: dict = {}
        for r in runs:
            groups.setdefault(r["labels"]["case"], []).append(r)
        groups = {c: groups[c] for c in CASES if c in groups}
        sizes = sorted({len(g) for g in groups.values()})
        head = sweep_title(specs[0].config, (f"{runs_text(sizes[0])} per case" if len(sizes) == 1 else
                                             f"{sizes[0]}-{sizes[-1]} seeds per case"), len(runs[0]["metrics"]))
        for case, g in groups.items():
            case_figures(g, case, sweep_dir / "figures", writer, head)
        for stat in STATS:
            overlay_figure(groups, stat, sweep_dir / f"overlay-{stat}.png", writer, head)
        qi, si = QUANTITIES.index("post_activation"), STATS.index("nonzero")

        def post_nonzero_share(run, layer):   # share of non-zeros after the ReLU, last epoch, last batch
            return run["stats"][-1, layer, qi, si] / run["numel"][-1, layer, qi]

        rows, best = [], []
        for case, g in groups.items():
            test = [x["metrics"][-1]["test_acc"] for x in g]
            train = [x["metrics"][-1]["train_acc"] for x in g]
            share = [np.mean([post_nonzero_share(x, li) for li in range(5)]) for x in g]
            rows.append([case, LETTERS[case], len(g), _ci(train), _ci(test), _ci(share)])
            best.append((float(np.mean(test)), float(np.mean(train)), case))
        epochs = len(runs[0]["metrics"])
        hi, lo = max(best), min(best)
        hi_train = max(best, key=lambda b: b[1])
        ds = specs[0].config["data"]["name"]
        md = [f"# gradient-pov: {ds}{' (JPEG copy)' if ds == 'cifar10' else ''}, {epochs} epochs, "
              f"{len(runs)} runs", "",
              markdown_table(["case", "regularizer", "n", "train acc % (mean ± 95% t)", "test acc % (mean ± 95% t)",
                              "post-activation non-zero share % (layers 1-5, last batch)"], rows), "",
              f"- highest test accuracy: case {hi[2]} ({LETTERS[hi[2]]}), {100 * hi[0]:.2f}% (article: case "
              f"{CLAIMS['best_test']}, {LETTERS[CLAIMS['best_test']]})",
              f"- lowest test accuracy: case {lo[2]} ({LETTERS[lo[2]]}), {100 * lo[0]:.2f}% (article: case "
              f"{CLAIMS['worst']}, {LETTERS[CLAIMS['worst']]})",
              f"- highest training accuracy: case {hi_train[2]} ({LETTERS[hi_train[2]]}), {100 * hi_train[1]:.2f}% "
              "(article: case G, ratio)"]
        if "H" in groups and "Z" in groups:
            h = {x["labels"]["seed"]: x for x in groups["H"]}
            z = {x["labels"]["seed"]: x for x in groups["Z"]}
            seeds = sorted(set(h) & set(z))
            lines = []
            for li in range(5):
                diff = [post_nonzero_share(h[s], li) - post_nonzero_share(z[s], li) for s in seeds]
                lines.append([LAYERS[li], _ci([post_nonzero_share(h[s], li) for s in seeds]),
                              _ci([post_nonzero_share(z[s], li) for s in seeds]), _ci(diff)])
            md += ["", "Post-activation non-zero share (%, last batch of the last epoch), case H against the "
                   "baseline Z, paired by seed (mean ± 95% t-interval; negative difference: H sparser):", "",
                   markdown_table(["layer", "H", "Z", "H - Z"], lines)]
        findings = instrument_findings(runs)
        if findings:
            md += ["", "## Per-example gradient statistics against the baseline Z", ""] + findings
        (sweep_dir / "results.md").write_text("\n".join(md) + "\n")
    finally:
        writer.close()
    return md + ["", f"figures and results.md in {sweep_dir}"]


# ---------------------------------------------------------------- article against sound

def _case_values(runs) -> dict:
    """case -> {"test", "train", "post_nonzero"}: per run, the final accuracies and the share of non-zeros
    after the ReLU (layers 1-5, the last probe)."""
    qi, si = QUANTITIES.index("post_activation"), STATS.index("nonzero")
    out: dict = {}
    for r in runs:
        share = float(np.mean([r["stats"][-1, li, qi, si] / r["numel"][-1, li, qi] for li in range(5)]))
        d = out.setdefault(r["labels"]["case"], {"test": [], "train": [], "post_nonzero": [], "seed": []})
        d["test"].append(r["metrics"][-1]["test_acc"])
        d["train"].append(r["metrics"][-1]["train_acc"])
        d["post_nonzero"].append(share)
        d["seed"].append(r["labels"]["seed"])
    return {c: out[c] for c in CASES if c in out}


def _pairs(values: dict, a: str, b: str, key: str) -> list:
    """a - b of ``key``, paired by seed (empty when either letter is missing)."""
    if a not in values or b not in values:
        return []
    pb = dict(zip(values[b]["seed"], values[b][key]))
    return [v - pb[s] for s, v in zip(values[a]["seed"], values[a][key]) if s in pb]


def _ranked(values: dict, key: str, best=max) -> list:
    """The distinct letters (each function once) ranked by their mean of ``key``, the best first."""
    once = [c for c in distinct_cases({c: LETTERS[c] for c in values}) if c in values]
    return sorted(once, key=lambda c: float(np.mean(values[c][key])), reverse=best is max)


def verdict_table(article: dict, sound: dict, epochs: tuple) -> list[str]:
    """Markdown: each claim under the article preset (one run per letter), under the sound preset (over seeds),
    and what the article said; accuracies and shares in %. A "highest" or "lowest" cell names the letter and its
    margin over the runner-up, paired by seed (D and F, the same function, count once); every paired cell
    carries its 95% t-interval, n and verdict, and Holm's correction runs over the column's six paired claims."""
    def claims(col):   # (label, diffs, direction) of the six paired claims of one column
        out = []
        for key, best, what in (("test", max, "highest test accuracy"), ("test", min, "lowest test accuracy"),
                                ("train", max, "highest training accuracy")):
            r = _ranked(col, key, best)
            out.append((what, r[:2], key, _pairs(col, r[0], r[1], key) if len(r) > 1 else [],
                        "higher" if best is max else "lower"))
        out.append(("H - Z test", ("H", "Z"), "test", _pairs(col, "H", "Z", "test"), "higher"))
        out.append(("G - Z train", ("G", "Z"), "train", _pairs(col, "G", "Z", "train"), "higher"))
        out.append(("H - Z post", ("H", "Z"), "post_nonzero", _pairs(col, "H", "Z", "post_nonzero"), "lower"))
        return out

    cols = {}
    for name, col in (("article", article), ("sound", sound)):
        cl = claims(col)
        flags = family([(d, direction) for _, _, _, d, direction in cl])
        cells = []
        for (what, pair, key, d, direction), flag in zip(cl, flags):
            if what.startswith(("highest", "lowest")):
                top = pair[0]
                text = f"{top} ({LETTERS[top]}): {estimate(col[top][key], 100)}"
                if len(pair) > 1:
                    text += f"; margin over {pair[1]}: {claim_cell(d, direction, 100, corrected=flag)}"
                cells.append(text)
            else:
                cells.append(claim_cell(d, direction, 100, corrected=flag) if d else "not run")
        cols[name] = (cells, flags)
    said = [f"{CLAIMS['best_test']} ({LETTERS[CLAIMS['best_test']]})",
            f"{CLAIMS['worst']} ({LETTERS[CLAIMS['worst']]})", "G (ratio)",
            "H above the baseline (positive)", "G highest (positive)", "H sparser (negative)"]
    names = ["highest test accuracy", "lowest test accuracy", "highest training accuracy", "test accuracy of H - Z",
             "training accuracy of G - Z", "post-activation non-zero share of H - Z (layers 1-5, last probe)"]
    rows = [[n, a, s, w] for n, a, s, w in zip(names, cols["article"][0], cols["sound"][0], said)]
    head = ["claim", f"article ({epochs[0]} epochs, one run per letter)", f"sound ({epochs[1]} epochs, over seeds)",
            "the article said"]
    return [markdown_table(head, rows), "", VERDICT_RULES + " A highest or lowest letter's margin is taken over the "
            "runner-up chosen after seeing the means, a selection that Holm's correction does not account for.",
            "Article column: " + family_note(cols["article"][1], "paired claims"),
            "Sound column: " + family_note(cols["sound"][1], "paired claims")]


def verdicts(article_specs, sound_specs) -> list[str]:
    """The verdict table from the finished runs of an article sweep and a sound sweep."""
    a, s = _load(article_specs), _load(sound_specs)
    if not a or not s:
        return ["gradient-pov verdicts: an article and a sound sweep with finished runs are needed"]
    return verdict_table(_case_values(a), _case_values(s), (len(a[0]["metrics"]), len(s[0]["metrics"])))


# ---------------------------------------------------------------- instruments (per-example statistics)

INSTRUMENT_EPOCHS = 10   # the per-example statistics are averaged over the last 10 probes (one batch each)


def _instrument_means(run_dir: Path, key: str) -> dict:
    """{layer: mean of ``key`` over the last INSTRUMENT_EPOCHS per-example probes} of one run (empty if
    the run recorded none)."""
    path = run_dir / "instruments.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if r.get("instrument") == "per_example"]
    if not rows:
        return {}
    last = sorted({r["epoch"] for r in rows})[-INSTRUMENT_EPOCHS:]
    out: dict = {}
    for r in rows:
        if r["epoch"] in last:
            if key == "spread":   # a dead network (every per-example gradient 0) has no spread
                v = r["norm_sd"] / r["norm_mean"] if r["norm_mean"] > 0 else float("nan")
            else:
                v = r[key]
            out.setdefault(r["layer"], []).append(v)
    return {k: float(np.mean(v)) if np.isfinite(v).all() else float("nan") for k, v in out.items()}


def instrument_findings(runs) -> list[str]:
    """Does a regularizer change the gradients' signal-to-noise ratio or the spread of the per-example
    gradient norms (sd / mean), per layer, against the baseline Z? Differences paired by seed, mean ±
    95% t half-width; each run's value is its mean over the last INSTRUMENT_EPOCHS probes."""
    by: dict = {}
    for r in runs:
        by.setdefault(r["labels"]["case"], {})[r["labels"]["seed"]] = r
    if "Z" not in by or not _instrument_means(next(iter(by["Z"].values()))["dir"], "gsnr"):
        return []
    out = []
    for key, title, k in (("gsnr", "GSNR (mean over parameters of mean^2 / variance of the per-example gradients)",
                           1.0),
                          ("spread", "spread of the per-example gradient norms (sd / mean)", 1.0)):
        z = {s: _instrument_means(r["dir"], key) for s, r in by["Z"].items()}
        def cell(values):   # runs without a finite value (a dead network) are left out and counted
            finite = [v for v in values if np.isfinite(v)]
            text = _ci(finite, k, 3) if finite else "n/a"
            return text + (f" ({len(values) - len(finite)} dead)" if len(finite) < len(values) else "")

        rows = [["Z (value)"] + [cell([z[s][layer] for s in z]) for layer in LAYERS]]
        for case in CASES:
            if case == "Z" or case not in by:
                continue
            vals = {s: _instrument_means(r["dir"], key) for s, r in by[case].items()}
            rows.append([f"{case} - Z"] + [cell([vals[s][layer] - z[s][layer] for s in vals if s in z])
                                           for layer in LAYERS])
        out += [f"{title}, last {INSTRUMENT_EPOCHS} probes, paired by seed (mean ± 95% t half-width, unscaled):", "",
                markdown_table(["case"] + LAYERS, rows), ""]
    return out
