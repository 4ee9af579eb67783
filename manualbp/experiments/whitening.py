"""Experiment ``whitening``: whitening of convolutional feature maps against batch norm (beyond the
articles).

The zca article builds on Decorrelated Batch Normalization (DBN; Huang et al., CVPR 2018) and the project's
``iter_norm`` on Iterative Normalization (IterNorm; Huang et al., CVPR 2019). Both papers whiten the feature
maps of convolutional networks one group of channels at a time, with running estimates and a per-channel
affine transform, and report convolutional networks on CIFAR-10 that train faster or generalise better than
with batch norm. This experiment puts the three layers in the same place of one network: CNN6 (3x3
convolutions of 32 channels, strides 2, 2, 2, 2, 1, 1, ReLU, global average pooling; ``manualbp.models.CNN6``)
with batch norm, DBN or IterNorm (T = 5) after the ReLU of layers 1-5, each with the affine transform, at two
group sizes for the whitening layers: 16 channels (DBN's CIFAR setting) and 32 (the whole layer, as
IterNorm-pytorch's CIFAR scripts, whose ``num_channels`` exceeds every layer's width). Paired by seed: a seed
fixes the initial convolution weights and the data order for every arm.

``report`` writes the training-loss curves per epoch and per second, test accuracy with paired intervals
against batch norm, the cost per epoch, and the papers' claims with whether they hold at the run's scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import (group, holm, interval, load_runs, markdown_table, mean_ci, n_needed, p_value, plt,
                     save, status_figures, t_quantile, verdict)

CHANNELS = [32, 32, 32, 32, 32, 10]
GROUP_SIZES = (16, 32)
_MODEL = {"name": "cnn6", "channels": CHANNELS, "init_std": 0.05, "norm": "batch_norm", "norm_kwargs": {"affine": True}}


def _arm(norm: str, **kw) -> dict:
    return {"model": {"norm": norm, "norm_kwargs": {"affine": True, **kw}}}


ARMS = {"bn": _arm("batch_norm")}
for _g in GROUP_SIZES:
    ARMS[f"dbn{_g}"] = _arm("dbn", group_size=_g)
for _g in GROUP_SIZES:
    ARMS[f"itn{_g}"] = _arm("iter_norm", group_size=_g, iterations=5)
BASELINE = "bn"


def _preset(epochs: int, train_limit=None, test_limit=None) -> dict:
    # SGD with momentum 0.9 and a cosine decay from 0.05 over the run, batch 128, no weight decay
    return {"model": _MODEL, "epochs": epochs, "batch_size": 128, "eval_batch_size": 1000,
            "data": {"name": "cifar10", "train_limit": train_limit, "test_limit": test_limit},
            "optim": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "CosineAnnealingLR", "T_max": epochs},
            "log": {"probe_every": 0}}


PRESETS = {
    # minutes on a 2-core CPU: a CIFAR-10 subset (2,000 / 1,000 images), 2 epochs, 2 seeds
    "quick": _preset(2, 2000, 1000),
    # the CPU scale: all 50,000 training and 10,000 test images, 10 epochs, 5 seeds
    "cpu": _preset(10),
    # the scale the papers' claims need (docs/experiments/whitening.md): 60 epochs, 30 seeds
    "full": _preset(60),
}
SEEDS = {"quick": [0, 1], "cpu": [0, 1, 2, 3, 4], "full": list(range(30))}


def grid(preset: str) -> dict:
    """Seeds outermost: a sweep cut short holds whole seeds, every arm of each (the pairs the report needs)."""
    return {"seed": SEEDS.get(preset, [0, 1]), "variant": ARMS}


GRID = grid("quick")


# ---------------------------------------------------------------- the papers' claims, by number

def _vs(arm: str) -> list:
    return [(f"{arm}{g}", BASELINE) for g in GROUP_SIZES]


_SAME_GROUPS = [(f"itn{g}", f"dbn{g}") for g in GROUP_SIZES]
_G0, _G1 = GROUP_SIZES
# (key, paper, claim, pairs (a, b), measure, the direction of a against b that supports the claim, kind):
# kind "diff": a - b paired by seed; "ratio": a / b - 1; "diffdiff": (a1 - a0) - (b1 - b0) of the pairs' arms at the
# two group sizes. DBN: Huang et al., CVPR 2018; IterNorm: Huang et al., CVPR 2019 (both papers' abstracts and
# introductions).
CLAIMS = [
    ("dbn_speed", "DBN", "trains faster per epoch than batch norm (lower training loss, averaged over the epochs)",
     _vs("dbn"), "mean_train_loss", "lower", "diff"),
    ("dbn_test", "DBN", "generalises better than batch norm (higher final test accuracy)", _vs("dbn"), "test_acc",
     "higher", "diff"),
    ("dbn_groups", "IterNorm", "explains why DBN whitening in groups generalises better than whitening the whole "
     f"layer: DBN with groups of {_G0} against {_G1} (higher final test accuracy)", [(f"dbn{_G0}", f"dbn{_G1}")],
     "test_acc", "higher", "diff"),
    ("itn_speed", "IterNorm", "trains faster per epoch than batch norm (lower training loss, averaged over the "
     "epochs)", _vs("itn"), "mean_train_loss", "lower", "diff"),
    ("itn_test", "IterNorm", "generalises better than batch norm (higher final test accuracy)", _vs("itn"),
     "test_acc", "higher", "diff"),
    ("itn_vs_dbn", "IterNorm", "generalises better than DBN at the same group size (higher final test accuracy)",
     _SAME_GROUPS, "test_acc", "higher", "diff"),
    ("itn_cost", "IterNorm", "costs less time per epoch than DBN at the same group size (Newton-Schulz against an "
     "eigendecomposition; the papers' argument is about GPUs)", _SAME_GROUPS, "s_per_epoch", "lower", "ratio"),
    ("groups", "IterNorm", "its smaller stochastic normalization disturbance: going from groups of "
     f"{_G0} to the whole layer ({_G1}) changes test accuracy for the better by more (or for the worse by less) with "
     "IterNorm than with DBN (a difference of the two changes; it does not say whether either change is a loss)",
     [("itn", "dbn")], "test_acc", "higher", "diffdiff"),
]


def measures(run: dict) -> dict:
    """The per-run numbers the report compares: final test accuracy (%), final and mean-over-epochs training loss,
    seconds per epoch (the run's wall time over its epochs) and the per-epoch curves."""
    rows = run["metrics"]
    loss = np.array([r["train_loss"] for r in rows], dtype=float)
    t = np.array([r["time_s"] for r in rows], dtype=float)
    return {"test_acc": 100 * rows[-1]["test_acc"], "train_loss": float(loss[-1]),
            "mean_train_loss": float(loss.mean()), "s_per_epoch": float(t[-1] / len(rows)), "loss_curve": loss,
            "time_curve": t,
            "test_curve": 100 * np.array([r["test_acc"] for r in rows], dtype=float)}


def loss_at_time(m: dict, seconds: float) -> float:
    """The run's training loss at a wall time, interpolated linearly between its epoch ends (NaN before its first
    epoch ended, its last value after its last)."""
    t, loss = m["time_curve"], m["loss_curve"]
    if seconds < t[0]:
        return float("nan")
    return float(np.interp(seconds, t, loss))


def by_seed(groups: dict) -> dict:
    """{arm: {seed: measures}} from the grouped runs."""
    return {arm: {r["config"]["seed"]: measures(r) for r in rs} for arm, rs in groups.items()}


def paired(values: dict, arm: str, base: str, key: str, combine=lambda x, y: x - y) -> list:
    """combine(arm, base) of a measure (default arm - base), one value per seed both arms finished."""
    a, b = values.get(arm, {}), values.get(base, {})
    return [combine(a[s][key], b[s][key]) for s in sorted(set(a) & set(b))]


def _fmt(diffs, digits=2) -> str:
    m, lo, hi, n = interval(diffs)
    if n == 0:
        return "-"
    if n == 1:
        return f"{m:+.{digits}f} (n=1)"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] (n={n})"


def _pair_diffs(values: dict, a: str, b: str, measure: str, kind: str) -> tuple[str, list]:
    """(label, one value per seed both sides finished) of a claim's pair."""
    if kind == "diff":
        return f"{a} - {b}", paired(values, a, b, measure)
    if kind == "ratio":
        return f"{a} / {b} - 1", paired(values, a, b, measure, lambda x, y: x / y - 1)
    arms = [values.get(f"{name}{g}", {}) for name in (a, b) for g in GROUP_SIZES]   # a0, a1, b0, b1
    seeds = sorted(set.intersection(*(set(arm) for arm in arms)))
    g0, g1 = GROUP_SIZES
    return (f"({a}{g1} - {a}{g0}) - ({b}{g1} - {b}{g0})",
            [(arms[1][s][measure] - arms[0][s][measure]) - (arms[3][s][measure] - arms[2][s][measure]) for s in seeds])


def claim_rows(values: dict) -> list:
    """One row per claim and compared pair of arms: the paired difference, its interval, the verdict of that
    interval alone, the verdict with Holm's correction over all the rows (family-wise 5%: a row's difference from 0
    counts only if it survives the step-down) and the seeds the measured mean would need to exclude 0 at 5% and at
    Holm's strictest step (5% / rows; ``n_needed``, optimistic planning figures)."""
    rows, tests = [], []
    for _key, paper, text, pairs, measure, direction, kind in CLAIMS:
        for a, b in pairs:
            label, diffs = _pair_diffs(values, a, b, measure, kind)
            rows.append([paper, text, label, measure, _fmt(diffs, 2 if measure == "test_acc" else 3),
                         verdict(diffs, direction), None, None])
            tests.append((diffs, direction))
    for row, (diffs, direction), rejected in zip(rows, tests, holm([p_value(d) for d, _ in tests])):
        need = [n_needed(diffs, alpha) for alpha in (0.05, 0.05 / len(rows))]
        row[7] = " / ".join("-" if k is None else str(k) for k in need)
        if not rejected:
            row[6] = "undecided" if len(diffs) > 1 else row[5]
        else:
            supports = (np.mean(diffs) < 0) == (direction == "lower")
            row[6] = "holds" if supports else "the opposite holds"
    return rows


def arm_table(values: dict) -> str:
    """Per arm: final test accuracy (mean ± sd, its interval) and the paired differences against batch norm."""
    rows = []
    for arm, per_seed in values.items():
        acc = [m["test_acc"] for m in per_seed.values()]
        mean, sd, ci, n = mean_ci(acc)
        sec = [m["s_per_epoch"] for m in per_seed.values()]
        base = arm == BASELINE
        rows.append([arm, n, f"{mean:.2f} ± {sd:.2f}" if n > 1 else f"{mean:.2f}",
                     f"[{mean - ci:.2f}, {mean + ci:.2f}]" if n > 1 else "-",
                     "-" if base else _fmt(paired(values, arm, BASELINE, "test_acc")),
                     f"{np.mean([m['train_loss'] for m in per_seed.values()]):.3f}",
                     "-" if base else _fmt(paired(values, arm, BASELINE, "mean_train_loss"), 3),
                     "-" if base else _fmt(_loss_at_base_time(values, arm), 3),
                     f"{np.mean(sec):.1f}"])
    return markdown_table(["arm", "n", "test acc % mean ± sd", "95% t-interval", f"test acc - {BASELINE}, paired",
                           "final train loss", f"mean train loss - {BASELINE}, paired",
                           f"train loss at {BASELINE}'s wall time - {BASELINE}'s, paired", "s/epoch"], rows)


def _loss_at_base_time(values: dict, arm: str) -> list:
    """Per seed: the arm's training loss at the wall time batch norm's run took, minus batch norm's final loss
    (the speed of training per second; NaN pairs, an arm whose first epoch ended later, are left out)."""
    a, b = values.get(arm, {}), values.get(BASELINE, {})
    out = []
    for s in sorted(set(a) & set(b)):
        v = loss_at_time(a[s], b[s]["time_curve"][-1])
        if np.isfinite(v):
            out.append(v - b[s]["train_loss"])
    return out


def curves_figure(values: dict, path: Path, writer=None, title: str = "") -> None:
    """Training loss per epoch and per second, test accuracy per epoch: each arm's mean over seeds (per second:
    each run's own curve, thin); ``title`` names the preset and its scale."""
    fig, ax = plt().subplots(1, 3, figsize=(16, 4.5))
    fig.suptitle(title)
    for i, (arm, per_seed) in enumerate(values.items()):
        colour = f"C{i}"
        curves = np.array([m["loss_curve"] for m in per_seed.values()])
        epochs = np.arange(1, curves.shape[1] + 1)
        ax[0].plot(epochs, curves.mean(0), color=colour, label=f"{arm} (n={len(per_seed)})")
        for m in per_seed.values():
            ax[1].plot(m["time_curve"], m["loss_curve"], color=colour, lw=0.8, alpha=0.7)
        ax[2].plot(epochs, np.array([m["test_curve"] for m in per_seed.values()]).mean(0), color=colour, label=arm)
    ax[0].set(xlabel="epoch", ylabel="training loss (mean over seeds)", title="training loss per epoch")
    ax[1].set(xlabel="wall time (s)", ylabel="training loss",
              title="training loss per second (each run; colours as on the left)")
    ax[2].set(xlabel="epoch", ylabel="test accuracy % (mean over seeds)", title="test accuracy")
    ax[0].legend()
    save(fig, path, writer, "whitening/curves")


def missing_runs(specs, runs) -> list[str]:
    """The names of the sweep's runs that did not finish (no DONE marker), in the sweep's order."""
    done = {r["name"] for r in runs}
    return [s.name for s in specs if s.name not in done]


def report(sweep_dir: Path, specs) -> list[str]:
    """curves.png and results.md (the arms' table and the papers' claims with verdicts) from finished runs."""
    from torch.utils.tensorboard import SummaryWriter
    runs = load_runs(specs)
    if not runs:
        return ["whitening report: no finished runs"]
    sweep_dir = Path(sweep_dir)
    writer = SummaryWriter(str(sweep_dir / "tb_report"))
    try:
        status_figures([r["dir"] for r in runs], writer)
        values = by_seed(group(runs))
        values = {arm: values[arm] for arm in ARMS if arm in values}
        cfg = runs[0]["config"]
        d = cfg["data"]
        images = ("all images" if d["train_limit"] is None and d["test_limit"] is None else
                  f"{d['train_limit'] or 'all'} / {d['test_limit'] or 'all'} images")
        scale = (f"CNN6 ({cfg['model']['channels'][0]} channels) on CIFAR-10 ({images}), {cfg['epochs']} epochs, "
                 f"{max(len(v) for v in values.values())} seeds")
        curves_figure(values, sweep_dir / "curves.png", writer, f"whitening, preset {cfg['preset']}: {scale}")
        missing = missing_runs(specs, runs)
        table = arm_table(values)
        rows = claim_rows(values)
        claims = markdown_table(["paper", "claim", "arms", "measure", "paired difference, 95% t-interval",
                                 "verdict (this interval)", f"verdict, Holm over the {len(rows)} rows",
                                 "seeds for the measured mean to exclude 0: alone / at 5% over the rows "
                                 "(optimistic)"], rows)
        text = (f"# whitening, preset {cfg['preset']}\n\n{len(runs)} finished runs; {cfg['epochs']} epochs, "
                f"batch {cfg['batch_size']}, train_limit {cfg['data']['train_limit']}, test_limit "
                f"{cfg['data']['test_limit']}. Paired by seed; intervals are Student-t 95% (t quantile "
                f"{t_quantile(max(2, min(len(v) for v in values.values()))):.3f} at the smallest n).\n\n"
                f"Runs not finished (failed, stopped or not run; their seeds drop out of every pair with them): "
                f"{', '.join(missing) if missing else 'none'}.\n\n"
                f"## Arms\n\n{table}\n\n## The papers' claims\n\n{claims}\n\n"
                f"The first verdict reads each row's 95% interval alone: with {len(rows)} rows, about one in 20 "
                f"could exclude 0 by chance when no effect exists. The second applies Holm's step-down procedure to "
                f"the rows' two-sided paired t-tests (family-wise error 5%). The last column treats the measured mean "
                f"and sd as the truth: a new sweep of that many seeds would exclude 0 only about half the time.\n")
        (sweep_dir / "results.md").write_text(text)
    finally:
        writer.close()
    return [table, "", claims, "", "runs not finished: " + (", ".join(missing) if missing else "none")]
