"""Experiment whitening: the runs its presets build, the report's paired intervals and verdicts recomputed here
from their definitions, and a tiny sweep with its report on data written in CIFAR-10's format."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import manualbp.nn as mnn
from manualbp.experiments import preset
from manualbp.experiments import whitening as W
from manualbp.models import build_model
from manualbp.train import resolve
from manualbp.train.sweep import expand

from .fakedata import write_cifar_batches

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_preset_builds_the_arms():
    """The runs the cpu sweep builds: 5 seeds x (batch norm, DBN and IterNorm at groups of 16 and 32), every layer
    affine, CNN6 of 32 channels, all of CIFAR-10, SGD with momentum and a cosine decay over the 10 epochs."""
    specs = expand(preset("whitening", "cpu"), W.grid("cpu"), Path("/tmp/x"))
    assert len(specs) == 25
    seen = set()
    for s in specs:
        cfg = resolve(s.config)
        assert cfg["epochs"] == 10 and cfg["data"]["name"] == "cifar10" and cfg["data"]["train_limit"] is None
        assert cfg["optim"] == {"name": "SGD", "lr": 0.05, "momentum": 0.9}
        assert cfg["schedule"] == {"name": "CosineAnnealingLR", "T_max": 10}
        model = build_model(cfg["model"])
        kinds = {(type(b).__name__, getattr(b, "group_size", None), b.affine) for b in model.bns}
        assert len(kinds) == 1 and len(model.bns) == 5
        assert [c.weight.shape[0] for c in model.convs] == [32] * 5 + [10]
        seen.add((cfg["seed"], *kinds.pop()))
    want = {(s, k, g, True) for s in range(5) for k, g in [("BatchNorm", None), ("DecorrelatedBatchNorm", 16),
                                                           ("DecorrelatedBatchNorm", 32), ("IterNorm", 16),
                                                           ("IterNorm", 32)]}
    assert seen == want
    itn = build_model(resolve(preset("whitening", "cpu"), {"model": W.ARMS["itn16"]["model"]})["model"])
    assert isinstance(itn.bns[0], mnn.IterNorm) and itn.bns[0].iterations == 5


@pytest.mark.parametrize("diffs, direction, want", [
    ([-1.0, -1.2, -0.8, -1.1], "lower", "holds"),
    ([-1.0, -1.2, -0.8, -1.1], "higher", "the opposite holds"),
    ([1.0, -1.2, 0.8, -0.5], "higher", "undecided"),
    ([1.0, -1.2, 0.8, -0.5], "lower", "undecided"),
    ([0.1, 0.2, 0.15], "lower", "the opposite holds"),
    ([0.3], "higher", "one pair, no interval"),
    ([], "lower", "no pairs"),
    ([0.5, 0.5, 0.5], "higher", "undecided (no spread: the pairs are identical)"),
])
def test_verdict_follows_the_interval(diffs, direction, want):
    assert W.verdict(diffs, direction) == want


def test_verdict_is_undecided_when_the_interval_just_includes_zero():
    """Differences whose 95% t-interval's lower end lies just below 0: undecided, not holds; shifted just above
    it: holds (the quantile is t_{n-1, 0.975}, recomputed from scipy)."""
    base = np.array([-1.0, 0.0, 1.0, 2.0])
    half = stats.t.ppf(0.975, 3) * base.std(ddof=1) / 2
    lower = base.mean() - half
    assert W.verdict(list(base - lower - 1e-9), "higher") == "undecided"
    assert W.verdict(list(base - lower + 1e-9), "higher") == "holds"
    assert W.verdict(list(lower - base + 1e-9), "lower") == "undecided"   # the mirror image: upper end just above 0
    assert W.verdict(list(lower - base - 1e-9), "lower") == "holds"
    with pytest.raises(ValueError, match="direction must be"):
        W.verdict([1.0, 2.0], "up")


def _fake_values():
    """{arm: {seed: measures}} with known numbers: test accuracy 60 + arm offset + seed noise."""
    rng = np.random.default_rng(0)
    offset = {"bn": 0.0, "dbn16": 1.0, "dbn32": -2.0, "itn16": 0.5, "itn32": 0.2}
    sec = {"bn": 10.0, "dbn16": 20.0, "dbn32": 18.0, "itn16": 15.0, "itn32": 16.0}
    values = {}
    for arm in W.ARMS:
        values[arm] = {}
        for s in range(5):
            loss = np.array([2.0, 1.5, 1.2]) - 0.1 * offset[arm] + 0.01 * rng.standard_normal(3)
            t = sec[arm] * (1 + 0.05 * rng.standard_normal()) * np.arange(1, 4)
            values[arm][s] = {"test_acc": 60 + offset[arm] + rng.standard_normal(), "train_loss": loss[-1],
                              "mean_train_loss": loss.mean(), "s_per_epoch": t[-1] / 3, "loss_curve": loss,
                              "time_curve": t, "test_curve": np.array([50.0, 55.0, 60.0])}
    return values


def _t_interval(d):
    d = np.asarray(d)
    h = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - h, d.mean() + h


def test_claim_rows_are_the_paired_intervals_recomputed():
    """Each claim row's numbers are the paired differences' mean and t-interval recomputed here: arm - bn by seed,
    IterNorm / DBN - 1 for the cost, the difference of the group-size effects for the last claim."""
    values = _fake_values()
    d = [values["dbn16"][s]["test_acc"] - values["bn"][s]["test_acc"] for s in range(5)]
    m, lo, hi = _t_interval(d)
    test_row = [r for r in W.claim_rows(values) if r[2] == "dbn16 - bn" and r[3] == "test_acc"][0]
    assert test_row[4] == f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}] (n=5)"
    assert test_row[5] == W.verdict(d, "higher")
    r = [values["itn32"][s]["s_per_epoch"] / values["dbn32"][s]["s_per_epoch"] - 1 for s in range(5)]
    m, lo, hi = _t_interval(r)
    cost = [x for x in W.claim_rows(values) if x[2] == "itn32 / dbn32 - 1"][0]
    assert cost[4] == f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n=5)" and cost[5] == "holds"   # 16 s against 18 s
    acc = lambda a, s: values[a][s]["test_acc"]  # noqa: E731
    g = [(acc("itn32", s) - acc("itn16", s)) - (acc("dbn32", s) - acc("dbn16", s)) for s in range(5)]
    m, lo, hi = _t_interval(g)
    grp = [x for x in W.claim_rows(values) if x[0] == "IterNorm" and x[2].startswith("(itn32")][0]
    assert grp[4] == f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}] (n=5)"
    # a seed missing from one arm drops that pair only
    del values["dbn16"][4]
    test_row = [r for r in W.claim_rows(values) if r[2] == "dbn16 - bn" and r[3] == "test_acc"][0]
    assert test_row[4].endswith("(n=4)")


def test_claim_verdicts_follow_the_constructed_effects():
    """Effects built into the fake runs give each claim's verdict its direction: DBN16 trains to a lower loss than
    batch norm in every seed (speed holds), DBN32 to a higher one (the opposite holds), IterNorm16 is cheaper than
    DBN16 (20 s against 15 s per epoch: holds); whole-layer groups cost DBN 3 points and IterNorm 0.3."""
    values = _fake_values()
    verdicts = {(r[2], r[3]): r[5] for r in W.claim_rows(values)}
    assert verdicts[("dbn16 - bn", "mean_train_loss")] == "holds"
    assert verdicts[("dbn32 - bn", "mean_train_loss")] == "the opposite holds"
    assert verdicts[("itn16 - bn", "mean_train_loss")] == "holds"
    assert verdicts[("itn16 / dbn16 - 1", "s_per_epoch")] == "holds"
    assert verdicts[("dbn16 - dbn32", "test_acc")] == "holds"   # built in: +3 points
    assert verdicts[("(itn32 - itn16) - (dbn32 - dbn16)", "test_acc")] == "holds"   # built in: -0.3 - (-3)
    for s in range(5):   # a wide spread of the accuracy: no accuracy claim can be decided
        for arm in W.ARMS:
            values[arm][s]["test_acc"] += 10 * (-1) ** (s + len(arm))
    verdicts = {(r[2], r[3]): r[5] for r in W.claim_rows(values)}
    assert verdicts[("dbn16 - bn", "test_acc")] == "undecided"


def test_arm_table_holds_the_paired_differences():
    """The arms' table: each whitening arm's paired differences against batch norm (test accuracy, mean training
    loss, training loss at batch norm's wall time) as recomputed here, batch norm's own row without them."""
    values = _fake_values()
    table = W.arm_table(values)
    row = next(line for line in table.splitlines() if line.startswith("| dbn16 |")).split(" | ")
    d_acc = [values["dbn16"][s]["test_acc"] - values["bn"][s]["test_acc"] for s in range(5)]
    d_loss = [values["dbn16"][s]["mean_train_loss"] - values["bn"][s]["mean_train_loss"] for s in range(5)]
    at = [float(np.interp(values["bn"][s]["time_curve"][-1], values["dbn16"][s]["time_curve"],
                          values["dbn16"][s]["loss_curve"])) - values["bn"][s]["train_loss"]
          for s in range(5) if values["bn"][s]["time_curve"][-1] >= values["dbn16"][s]["time_curve"][0]]
    m, lo, hi = _t_interval(d_acc)
    assert row[4] == f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}] (n=5)"
    m, lo, hi = _t_interval(d_loss)
    assert row[6] == f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n=5)"
    m, lo, hi = _t_interval(at)
    assert row[7] == f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={len(at)})"
    bn = next(line for line in table.splitlines() if line.startswith("| bn |")).split(" | ")
    assert bn[4] == "-" and bn[6] == "-"


def test_holm_steps_down_and_stops_at_the_first_failure():
    # m = 4: 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2 stops (0.04 is not tested)
    assert W.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert W.holm([0.001, float("nan"), 0.03]) == [True, False, False]   # NaN counts in m: 0.03 > 0.05 / 2
    assert W.holm([0.001, 0.04]) == [True, True]   # Bonferroni would keep 0.04 > 0.05 / 2


def test_holm_verdicts_of_the_claims_are_the_t_tests_recomputed():
    """The Holm column: two-sided one-sample t-tests (scipy's ttest_1samp) of every row's paired differences,
    Holm's procedure over all rows; a rejected row's sign gives holds / the opposite holds."""
    values = _fake_values()
    rows = W.claim_rows(values)
    diffs = [W._pair_diffs(values, a, b, m, k)[1] for _, _, _, pairs, m, _, k in W.CLAIMS for a, b in pairs]
    directions = [d for _, _, _, pairs, _, d, _ in W.CLAIMS for _ in pairs]
    p = [stats.ttest_1samp(d, 0.0).pvalue for d in diffs]
    for i, pi in enumerate(p):
        assert W.p_value(diffs[i]) == pytest.approx(pi, rel=1e-9)
    order = np.argsort(p)
    rejected = set()
    for rank, i in enumerate(order):
        if p[i] > 0.05 / (len(p) - rank):
            break
        rejected.add(i)
    for i, row in enumerate(rows):
        want = "undecided" if i not in rejected else (
            "holds" if (np.mean(diffs[i]) < 0) == (directions[i] == "lower") else "the opposite holds")
        assert row[6] == want, (row[2], row[3])
    assert {row[6] for row in rows} >= {"holds", "the opposite holds", "undecided"}


def test_n_needed_is_the_first_n_whose_interval_excludes_zero():
    d = [1.0, 2.0, 0.0, 1.5, 0.5]    # mean 1, sd 0.79
    n = W.n_needed(d)
    sd = np.std(d, ddof=1)
    assert stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < 1.0 <= stats.t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1)
    assert W.n_needed([0.1, -0.1, 0.1, -0.1]) is None and W.n_needed([1.0]) is None
    k = W.n_needed(d, alpha=0.05 / 14)   # Holm's strictest step over 14 rows: a larger n
    q = stats.t.ppf(1 - 0.05 / 28, [k - 1, k - 2])
    assert k > n and q[0] * sd / math.sqrt(k) < 1.0 <= q[1] * sd / math.sqrt(k - 1)


def test_loss_at_time_interpolates_between_epoch_ends():
    m = {"time_curve": np.array([10.0, 20.0, 30.0]), "loss_curve": np.array([2.0, 1.0, 0.5])}
    assert W.loss_at_time(m, 15.0) == pytest.approx(1.5)
    assert W.loss_at_time(m, 30.0) == pytest.approx(0.5) and W.loss_at_time(m, 99.0) == pytest.approx(0.5)
    assert math.isnan(W.loss_at_time(m, 5.0))


def test_tiny_sweep_and_report(tmp_path):
    """The quick preset's sweep on CIFAR-10-format data: every arm x 2 seeds trains, results.md holds each arm's
    numbers as the runs' metrics give them, and curves.png is written."""
    write_cifar_batches(tmp_path / "data", n_per_batch=40)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "whitening", "--device", "cpu",
                          "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"), "--epochs", "1",
                          "batch_size=20", "log.progress=false"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "s" / "curves.png").stat().st_size > 1000
    text = (tmp_path / "s" / "results.md").read_text()
    for arm in W.ARMS:
        accs = [100 * json.loads((tmp_path / "s" / f"seed{s}-{arm}" / "metrics.jsonl").read_text()
                                 .splitlines()[-1])["test_acc"] for s in (0, 1)]
        m, sd = np.mean(accs), np.std(accs, ddof=1)
        assert f"| {arm} | 2 | {m:.2f} ± {sd:.2f} |" in text, arm
    assert text.count("| DBN |") == 4 and text.count("| IterNorm |") == 10
    assert "Runs not finished (failed, stopped or not run; their seeds drop out of every pair with them): none." in text


def test_report_names_the_runs_that_did_not_finish(tmp_path):
    """A sweep with a run that never finished: the report names it and pairs only the seeds both arms finished."""
    from manualbp.train.sweep import expand
    cfg = preset("whitening", "quick")
    specs = expand(cfg, {"seed": [0, 1], "variant": {k: W.ARMS[k] for k in ("bn", "dbn16")}}, tmp_path)
    for s in specs:
        if s.name == "seed1-dbn16":
            continue   # not run
        d = Path(s.run_dir)
        d.mkdir(parents=True)
        acc = 0.5 + 0.1 * s.config["seed"] + (0.05 if "dbn" in s.name else 0)
        rows = [{"epoch": e, "train_loss": 2.0 / e, "test_acc": acc, "time_s": 10.0 * e} for e in (1, 2)]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (d / "DONE.json").write_text("{}")
    W.report(tmp_path, specs)
    text = (tmp_path / "results.md").read_text()
    assert "drop out of every pair with them): seed1-dbn16." in text
    assert "| dbn16 - bn | test_acc | +5.00 (n=1) | one pair, no interval | one pair, no interval | - / - |" in text
