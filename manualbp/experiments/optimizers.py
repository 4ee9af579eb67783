"""Experiment ``optimizers``: gradient noise and dilated back-propagation against ten TensorFlow-1
optimizers (article 002).

MLP 784-N-N-N-N-10 without biases, arctan after every layer (the last too), softmax, MNIST as flat
vectors, batch 1000. 17 cases: 0 gradient noise with plain back-propagation and gradient descent;
1-6 dilated back-propagation (``manualbp.functional.dilated``; case 2 with gradient descent and noise);
7-16 the ten ``manualbp.optim.tf1`` optimizers with TF1's defaults. Every case uses the trial's
learning rate. Four trials (learning rate, width). Two configurations:

- ``sound`` (and its fractions ``sound-cpu``, ``quick``): every case of a run starts from the same
  initial weights (``init_seed`` = ``seed``) and sees the same batches; mean softmax cross-entropy;
  cases 1, 3-6 use textbook Adam (``torch.optim.Adam``); Neelakantan et al.'s per-entry noise with
  eta ``ETA`` per step; Momentum 0.9.
- ``article`` (and ``article-cpu``, ``article-quick``): the authors' code. The last 55,000 training
  images in the file's order, gradients summed over the batch (the data term weighted by the batch
  size), weights N(0, 1) drawn per case (``init_seed_offset`` = 1000 x case), cases 0-6 on softmax
  cross-entropy, 7-16 on the summed binary cross-entropy of the softmax, cases 1, 3-6 with Adam-c
  (``ConstantBiasAdam``, eps 1e-8, taking the new m and v), cases 0 and 2 with one scalar of noise per
  step of std 0.001 / (1 + epoch)^0.55, Momentum = the learning rate; every case reports that binary
  cross-entropy as its cost (running over the epoch's batches) and the training accuracy from a pass
  after each epoch; a run's winner is the first case (lowest number) among the tied best.

``report`` counts, per trial, how often each case had the lowest final training cost, the highest
final training accuracy and the highest final test accuracy, tabulates each case's final metrics with
Student-t intervals, and draws the bar charts and the curves of every case.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from manualbp.plotting import integer_ticks, sweep_title

from .report import load_runs, markdown_table, mean_ci, plt, save, status_figures

TRIALS = {1: (0.001, 1024), 2: (0.0025, 824), 3: (0.001, 824), 4: (0.0025, 1024)}   # (learning rate, width)
ETA = 0.01           # gradient-noise variance scale, from the paper's {0.01, 0.3, 1}
MOMENTUM = 0.9       # tf.train.MomentumOptimizer has no default momentum
BATCH = 1000
TRAIN_IMAGES = 55000  # the article's: the last 55,000 MNIST training images

NOISE = [{"name": "gradient_noise", "eta": ETA, "gamma": 0.55}]
# the article's code: one scalar per step, std 0.001 / (1 + epoch)^0.55 = sqrt(1e-6 / (1 + epoch)^1.1)
ARTICLE_NOISE = [{"name": "gradient_noise", "eta": 1e-6, "gamma": 1.1, "scalar": True, "clock": "epoch"}]
# case: (label, optimizer name, uses TF1's keyword names, extra optimizer settings, noise, dilation case)
CASES = {
    0: ("noise + plain backprop (SGD)", "SGD", False, {}, NOISE, None),
    1: ("dilated 1 (Adam)", "Adam", False, {}, [], 1),
    2: ("dilated 1 + noise (SGD)", "SGD", False, {}, NOISE, 2),
    3: ("dilated 3, dense sum (Adam)", "Adam", False, {}, [], 3),
    4: ("dilated 4, dense product (Adam)", "Adam", False, {}, [], 4),
    5: ("dilated 5, sum, P 800 D 0.064 (Adam)", "Adam", False, {}, [], 5),
    6: ("dilated 6, P 500 D 0.04 (Adam)", "Adam", False, {}, [], 6),
    7: ("tf1.GradientDescent", "tf1.GradientDescent", True, {}, [], None),
    8: ("tf1.Adadelta", "tf1.Adadelta", True, {}, [], None),
    9: ("tf1.Adagrad", "tf1.Adagrad", True, {}, [], None),
    10: ("tf1.AdagradDA", "tf1.AdagradDA", True, {}, [], None),
    11: ("tf1.Momentum", "tf1.Momentum", True, {"momentum": MOMENTUM}, [], None),
    12: ("tf1.Adam", "tf1.Adam", True, {}, [], None),
    13: ("tf1.Ftrl", "tf1.Ftrl", True, {}, [], None),
    14: ("tf1.ProximalGradientDescent", "tf1.ProximalGradientDescent", True, {}, [], None),
    15: ("tf1.ProximalAdagrad", "tf1.ProximalAdagrad", True, {}, [], None),
    16: ("tf1.RMSProp", "tf1.RMSProp", True, {}, [], None),
}

# the article's percentages of runs (10 per trial) in which a case was best
ARTICLE = {
    1: {"cost": {5: 60, 3: 30, 0: 20, 1: 10}, "train_acc": {3: 40, 5: 30, 0: 20, 1: 10}, "test_acc": {0: 60, 16: 40}},
    2: {"cost": {3: 60, 5: 40}, "train_acc": {3: 50, 5: 50}, "test_acc": {5: 70, 3: 20, 1: 10}},
    3: {"cost": {0: 90, 3: 10}, "train_acc": {0: 90, 3: 10}, "test_acc": {0: 70, 7: 10, 14: 10, 16: 10}},
    4: {"cost": {5: 60, 3: 40}, "train_acc": {5: 60, 3: 40}, "test_acc": {3: 50, 1: 30, 5: 20}},
}
CRITERIA = {"cost": ("train_loss", "lowest final training cost", min),
            "train_acc": ("train_acc", "highest final training accuracy", max),
            "test_acc": ("test_acc", "highest final test accuracy", max)}

_MNIST = {"name": "mnist"}
_ARTICLE_DATA = {"name": "mnist", "shuffle": False, "options": {"validation": 60000 - TRAIN_IMAGES}}
# preset: (configuration, data settings, epochs, runs per trial, width divisor)
_SETTINGS = {
    "sound": ("sound", _MNIST, 801, 10, 1),          # the article's schedule: batch 1000, 801 epochs, 10 runs
    "article": ("article", _ARTICLE_DATA, 801, 10, 1),
    # GPU-sized: full widths, 30 epochs, 3 runs per trial
    "sound-gpu": ("sound", _MNIST, 30, 3, 1),
    "article-gpu": ("article", _ARTICLE_DATA, 30, 3, 1),
    # the fraction that a 2-core CPU trains in about 40 minutes each: widths / 4, the first 20 epochs, 3 runs
    "sound-cpu": ("sound", _MNIST, 20, 3, 4),
    "article-cpu": ("article", _ARTICLE_DATA, 20, 3, 4),
    # seconds to minutes on a CPU: 5k training images, widths / 4, 5 epochs, one run per trial
    "quick": ("sound", {**_MNIST, "train_limit": 5000, "test_limit": 2000}, 5, 1, 4),
    "article-quick": ("article", {**_ARTICLE_DATA, "train_limit": 5000, "test_limit": 2000}, 5, 1, 4),
}


def _preset(style, data, epochs) -> dict:
    cfg = {"task": "classification", "data": data, "epochs": epochs, "batch_size": BATCH, "eval_batch_size": 2000,
           "model": {"name": "mlp", "widths": [784, 1024, 1024, 1024, 1024, 10]}, "log": {"probe_every": 0}}
    if style == "article":
        cfg.update({"objective": {"data": float(BATCH)},        # gradients summed over the batch of 1000
                    "metric_loss": "softmax_binary_cross_entropy",   # every case's reported cost
                    "train_metrics": "full_pass_accuracy"})
    return cfg


PRESETS = {name: _preset(style, data, epochs) for name, (style, data, epochs, _, _) in _SETTINGS.items()}


def case_config(case: int, lr: float, width: int, style: str = "sound") -> dict:
    """Config overrides of one case in one trial, under the sound or the article configuration."""
    if style not in ("sound", "article"):
        raise ValueError(f"case_config: style must be 'sound' or 'article', got {style!r}")
    _, name, tf1_names, extra, noise, dilation = CASES[case]
    model = {"name": "mlp", "widths": [784, width, width, width, width, 10], "activation": "arctan", "bias": False,
             "final_activation": True, "dilation": None if dilation is None else {"case": dilation}}
    if style == "sound":
        optim = {"name": name, ("learning_rate" if tf1_names else "lr"): lr, **extra}
        return {"model": model, "optim": optim, "grad_transforms": [dict(t) for t in noise]}
    if name == "Adam":
        optim = {"name": "ConstantBiasAdam", "lr": lr, "eps": 1e-8}
    elif tf1_names:
        optim = {"name": name, "learning_rate": lr, **({"momentum": lr} if case == 11 else {})}
    else:
        optim = {"name": name, "lr": lr}
    return {"model": {**model, "init_std": 1.0}, "optim": optim, "init_seed_offset": 1000 * case,
            "loss": "softmax_binary_cross_entropy" if tf1_names else "softmax_cross_entropy",
            "grad_transforms": [dict(t) for t in ARTICLE_NOISE] if noise else []}


def grid(preset: str) -> dict:
    if preset not in _SETTINGS:
        raise ValueError(f"optimizers has no preset {preset!r}; choose one of {sorted(_SETTINGS)}")
    style, _, _, runs, div = _SETTINGS[preset]
    settings = {}
    for t, (lr, width) in TRIALS.items():
        for c in CASES:
            settings[f"trial{t}-case{c:02d}"] = case_config(c, lr, max(1, width // div), style)
    # the seed axis: under sound every case of a run shares the seed, hence the initial weights (init_seed =
    # seed) and the batches; under article each case adds its own offset to the initial-weight seed
    return {"setting": settings, "seed": list(range(runs))}


GRID = grid("quick")


# ---------------------------------------------------------------- report

def _load(specs) -> list[dict]:
    out = []
    for r in load_runs(specs):
        trial, case = r["labels"]["setting"].split("-")
        out.append({"trial": int(trial[5:]), "case": int(case[4:]), "run": r["labels"]["seed"], "dir": r["dir"],
                    "metrics": r["metrics"], "style": "article" if r["config"]["preset"].startswith("article")
                    else "sound", "width": r["config"]["model"]["widths"][1]})
    return out


def winners(runs: list[dict], ties: str = "all") -> dict:
    """{trial: {criterion: {case: count}}, plus "n": {trial: runs compared}}. Within a run the cases'
    final values are compared; ties credit every tied case (``ties="all"``, the sound presets) or the
    lowest-numbered one (``ties="first"``: the article's code took the first index). A case whose run
    failed (e.g. NaN) cannot win."""
    if ties not in ("all", "first"):
        raise ValueError(f"winners: ties must be 'all' or 'first', got {ties!r}")
    by_run: dict = {}
    for r in runs:
        by_run.setdefault((r["trial"], r["run"]), {})[r["case"]] = r["metrics"][-1]
    out: dict = {"n": {}, "width": {r["trial"]: r.get("width", TRIALS[r["trial"]][1]) for r in runs}}
    for (trial, _), finals in sorted(by_run.items()):
        out["n"][trial] = out["n"].get(trial, 0) + 1
        for crit, (key, _, pick) in CRITERIA.items():
            vals = {c: f[key] for c, f in finals.items() if np.isfinite(f[key])}
            if not vals:
                continue
            best = pick(vals.values())
            counts = out.setdefault(trial, {}).setdefault(crit, {})
            tied = sorted(c for c, v in vals.items() if v == best)
            for c in (tied[:1] if ties == "first" else tied):
                counts[c] = counts.get(c, 0) + 1
    return out


def _pct(count, n):
    return f"{100 * count / n:.0f}%" if count else ""


def frequency_tables(w: dict) -> list[str]:
    lines = []
    trials = sorted(t for t in w if t not in ("n", "width"))
    for crit, (_, title, _) in CRITERIA.items():
        lines += ["", f"### Share of runs in which a case had the {title}", ""]
        head = ["case"] + [f"trial {t} (lr {TRIALS[t][0]}, width {w['width'][t]}) this sweep, n={w['n'][t]}"
                           for t in trials] + [f"trial {t} article" for t in trials]
        rows = []
        for c in CASES:
            here = [_pct(w[t].get(crit, {}).get(c, 0), w["n"][t]) for t in trials]
            art = [f"{ARTICLE[t][crit][c]}%" if c in ARTICLE[t][crit] else "" for t in trials]
            if any(here) or any(art):
                rows.append([f"{c}: {CASES[c][0]}"] + here + art)
        lines.append(markdown_table(head, rows))
    return lines


def _curves(runs, key):
    """{(trial, case): (epochs, values [run, epoch])} over the runs that finished."""
    out: dict = {}
    for r in runs:
        out.setdefault((r["trial"], r["case"]), []).append([m[key] for m in r["metrics"]])
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def _colors():
    import matplotlib
    cmap = matplotlib.colormaps["tab20"]
    return {c: cmap(i) for i, c in enumerate(CASES)}


def bar_figure(w: dict, path: Path, writer=None, title: str = ""):
    """Per trial and criterion: in how many runs each case ended best (integer counts); ``title`` names the
    preset and the scale."""
    pyplot = plt()
    trials = sorted(t for t in w if t not in ("n", "width"))
    colors = _colors()
    fig, axes = pyplot.subplots(len(trials), 3, figsize=(13, 2.6 * len(trials) + 0.6), squeeze=False,
                                layout="constrained")
    for i, t in enumerate(trials):
        for j, (crit, (_, name, _)) in enumerate(CRITERIA.items()):
            ax = axes[i, j]
            counts = [w[t].get(crit, {}).get(c, 0) for c in CASES]
            ax.bar(list(CASES), counts, color=[colors[c] for c in CASES])
            ax.set_xticks(list(CASES))
            ax.set_ylim(0, max(1, w["n"][t]) + 0.3)
            integer_ticks(ax)
            ax.set_title(f"trial {t} (lr {TRIALS[t][0]}, width {w['width'][t]}): {name}")
            ax.set_xlabel("case")
            ax.set_ylabel(f"wins out of {w['n'][t]} run{'s' if w['n'][t] != 1 else ''}")
    fig.suptitle(title or "optimizers: which case ends best, per trial")
    save(fig, path, writer, "optimizers/frequency")


def curve_figure(runs, path: Path, writer=None, title: str = ""):
    """Per trial: every case's training cost, training and test accuracy (%) per epoch, the mean over the runs
    with a min-max band (one run: its curve); ``title`` names the preset and the scale."""
    pyplot = plt()
    trials = sorted({r["trial"] for r in runs})
    colors = _colors()
    keys = [("train_loss", "training cost", "training cost (log scale)"),
            ("train_acc", "training accuracy", "training accuracy %"), ("test_acc", "test accuracy", "test accuracy %")]
    fig, axes = pyplot.subplots(len(trials), 3, figsize=(15, 3.2 * len(trials) + 0.6), squeeze=False,
                                layout="constrained")
    for j, (key, name, ylabel) in enumerate(keys):
        curves = _curves(runs, key)
        k = 100.0 if key.endswith("_acc") else 1.0
        for i, t in enumerate(trials):
            ax = axes[i, j]
            sizes = set()
            for c in CASES:
                if (t, c) not in curves:
                    continue
                v = k * curves[(t, c)]
                sizes.add(len(v))
                e = np.arange(1, v.shape[1] + 1)
                ax.plot(e, v.mean(0), color=colors[c], lw=1, label=str(c))
                if len(v) > 1:
                    ax.fill_between(e, v.min(0), v.max(0), color=colors[c], alpha=0.15, lw=0)
            spread = ("one run" if sizes == {1} else f"mean, min-max band over {max(sizes)} runs" if len(sizes) == 1
                      else "mean, min-max band over the runs")
            ax.set_title(f"trial {t}: {name} ({spread})")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            integer_ticks(ax, "x")
            if key == "train_loss":
                ax.set_yscale("log")
    axes[0, -1].legend(ncol=2, fontsize=6, title="case", loc="lower right")
    fig.suptitle(title or "optimizers: curves of every case, per trial")
    save(fig, path, writer, "optimizers/curves")


def final_tables(runs: list[dict], trials) -> list[str]:
    """Each case's final cost, training and test accuracy per trial: mean ± 95% Student-t half-width."""
    lines = []
    for key, title, scale, fmt in (("train_loss", "training cost", 1, ".4g"), ("train_acc", "training accuracy (%)",
                                   100, ".2f"), ("test_acc", "test accuracy (%)", 100, ".2f")):
        finals: dict = {}
        for r in runs:
            finals.setdefault((r["trial"], r["case"]), []).append(scale * r["metrics"][-1][key])
        counts = [len(v) for v in finals.values()]
        usual = max(set(counts), key=lambda k: (counts.count(k), k))   # the n of most cells, named in the title
        lines += ["", f"### Final {title}, mean ± 95% Student-t half-width over runs (n = {usual} "
                  f"run{'s' if usual != 1 else ''} per cell" + (", other n marked)" if len(set(counts)) > 1 else ")"),
                  ""]
        rows = []
        for c in CASES:
            cells = []
            for t in trials:
                m, _, h, n = mean_ci(finals.get((t, c), []))
                cells.append("" if not n else f"{m:{fmt}} (one run, no interval)" if n == 1 else
                             f"{m:{fmt}} ± {h:{fmt}}" + ("" if n == usual else f" (n={n})"))
            rows.append([f"{c}: {CASES[c][0]}"] + cells)
        lines.append(markdown_table(["case"] + [f"trial {t}" for t in trials], rows))
    return lines


def report(sweep_dir: Path, specs) -> list[str]:
    """results.md (frequency tables next to the article's, final accuracies with t-intervals), the bar
    charts and the curves, also as TensorBoard images in ``<sweep>/tb_report``."""
    runs = _load(specs)
    if not runs:
        return ["optimizers: no finished runs to report"]
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(sweep_dir / "tb_report"))
    status_figures([r["dir"] for r in runs], writer)   # one status figure per run
    styles = {r["style"] for r in runs}
    ties = "first" if styles == {"article"} else "all"
    w = winners(runs, ties)
    cfg = specs[0].config
    div = _SETTINGS[cfg["preset"]][4] if cfg["preset"] in _SETTINGS else 1
    n = sorted(set(w["n"].values()))
    scale = (("" if div == 1 else f"widths / {div}, ")
             + (f"{'one run' if n == [1] else f'{n[0]} runs'} per trial" if len(n) == 1
                else f"{n[0]}-{n[-1]} runs per trial"))
    title = sweep_title(cfg, scale, len(runs[0]["metrics"]))
    bar_figure(w, sweep_dir / "frequency.png", writer, title)
    curve_figure(runs, sweep_dir / "curves.png", writer, title)
    writer.close()
    trials = sorted(t for t in w if t not in ("n", "width"))
    tie_rule = ("Ties go to the lowest case number (the article's code took the first index)." if ties == "first"
                else "Ties credit every tied case, so a column can add up to more than 100%.")
    lines = [f"## optimizers ({' and '.join(sorted(styles))} configuration): which case ends best, per trial", "",
             "Runs per trial: " + ", ".join(f"trial {t}: {w['n'][t]}" for t in trials) + f". {tie_rule}"
             " A case whose run failed (non-finite loss) cannot win. The article's trial-1 cost column adds up"
             " to 120% (a typo in the article)."]
    lines += frequency_tables(w)
    lines += final_tables(runs, trials)
    updates = update_ratio_findings(runs)
    if updates:
        lines += ["", "### Update size per layer (log.optimizer_state)", ""] + updates
    text = "\n".join(lines) + "\n"
    (sweep_dir / "results.md").write_text(text)
    return [text, f"figures: {sweep_dir / 'frequency.png'}, {sweep_dir / 'curves.png'}"]


# ---------------------------------------------------------------- instruments (update size)

REFERENCE_CASE = 12   # tf1.Adam: Adam without dilation


def _update_ratios(run_dir: Path, key: str = "update_ratio") -> dict:
    """{layer: mean of ``key`` (the update-to-weight ratio, or the layer's gradient norm) over the run's
    probes} (empty without log.optimizer_state)."""
    import json
    path = Path(run_dir) / "instruments.jsonl"
    if not path.is_file():
        return {}
    out: dict = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("instrument") == "optimizer" and np.isfinite(r.get(key, float("nan"))):
            out.setdefault(r["layer"], []).append(r[key])
    return {k: float(np.mean(v)) for k, v in out.items()}


def update_ratio_findings(runs) -> list[str]:
    """Per layer, the update-to-weight ratio ||dw|| / ||w|| of each case (mean over the run's probes)
    divided by the same run's reference case (tf1.Adam, no dilation), paired by seed (the sound
    configuration's cases of a run share initial weights and batches): mean ± 95% t half-width; the
    same for the layers' gradient norms."""
    out = []
    for key, what, scale in (("update_ratio", "update-to-weight ratio ||dw|| / ||w||", 1e3),
                             ("grad_norm", "gradient norm ||g|| (the gradient the optimizer receives)", 1.0)):
        by: dict = {}
        for r in runs:
            ratios = _update_ratios(r["dir"], key)
            if ratios:
                by.setdefault((r["trial"], r["case"]), {})[r["run"]] = ratios
        for trial in sorted({t for t, _ in by}):
            ref = by.get((trial, REFERENCE_CASE))
            if not ref:
                continue
            layers = sorted(next(iter(ref.values())))
            rows = [[f"{REFERENCE_CASE} {CASES[REFERENCE_CASE][0]} (value)", len(ref)]
                    + [_fmt_ci([ref[s][la] for s in ref], scale) for la in layers]]
            for case in sorted(c for t, c in by if t == trial and c != REFERENCE_CASE):
                vals = {s: v for s, v in by[(trial, case)].items() if s in ref}   # paired: seeds run by both
                if vals:
                    rows.append([f"{case} {CASES[case][0]} / reference", len(vals)]
                                + [_fmt_ci([vals[s][la] / ref[s][la] for s in vals], 1.0) for la in layers])
            unit = " x 1000" if scale != 1 else ""
            out += [f"Trial {trial}: {what} per layer (the reference row{unit}; the others as multiples of the "
                    "reference, paired by seed; mean over the run's probes, mean ± 95% t half-width over the n "
                    "seeds):", "", markdown_table(["case", "n"] + layers, rows), ""]
    return out


def _fmt_ci(values, k) -> str:
    m, sd, half, n = mean_ci(values)
    return f"{k * m:.3g} (one run, no interval)" if n < 2 else f"{k * m:.3g} ± {k * half:.2g}"
