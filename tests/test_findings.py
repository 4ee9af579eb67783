"""Report code by value: gradient-pov's per-example findings, weights-pov's spectra findings, the verdict
tables of scripts/verdicts.py (gradient-pov, weights-pov, sparse-filtering) and scripts/paired.py's other
branches, each from small synthetic run folders whose answers are worked out by hand."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch

from manualbp.experiments import gradient_pov, report, sparse_filtering, weights_pov
from scripts import paired, verdicts

LAYERS = [f"conv{i}" for i in range(1, 7)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _half(values):
    """Half-width of the 95% Student-t interval, t_{n-1, 0.975} sd / sqrt(n)."""
    v = np.asarray(values, dtype=float)
    return scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


def _pm(values, k=1.0, digits=3):
    return f"{k * np.mean(values):.{digits}f} ± {k * _half(values):.{digits}f}"


def _interval(values, k=100.0):
    m, h = np.mean(values), _half(values)
    return f"{k * m:.2f} [{k * (m - h):.2f}, {k * (m + h):.2f}]"


def _est(values, k=100.0, digits=2):
    """The report's estimate cell: mean [95% t-interval], n; one value labelled as one run."""
    if len(values) == 1:
        return f"{k * values[0]:.{digits}f} (one run, no interval)"
    m, h = np.mean(values), _half(values)
    return f"{k * m:.{digits}f} [{k * (m - h):.{digits}f}, {k * (m + h):.{digits}f}], n = {len(values)}"


def _holm(diff_lists):
    """Holm's step-down at 5% over scipy's one-sample t-tests, written out: which nulls are rejected."""
    p = [scipy.stats.ttest_1samp(d, 0).pvalue for d in diff_lists]
    out, m = [False] * len(p), len(p)
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        if p[i] > 0.05 / (m - rank):
            break
        out[i] = True
    return out


def _claim(values, direction, after_holm, k=100.0, digits=2):
    """The report's claim cell, its verdict decided here from the interval and Holm's flag."""
    text = _est(values, k, digits)
    if len(values) == 1:
        return text
    m, h = np.mean(values), _half(values)
    lo, hi = m - h, m + h
    if (hi < 0) if direction == "lower" else (lo > 0):
        return text + (": holds, also after Holm's correction" if after_holm else
                       ": holds alone, not after Holm's correction")
    if (lo > 0) if direction == "lower" else (hi < 0):
        return text + ": the opposite holds"
    return text + ": undecided"


def _row(*cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _finished(d, preset, metrics, done=True):
    """A run folder of a sweep: config.json (its preset), metrics.jsonl and, when finished, DONE.json."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"preset": preset}))
    _jsonl(d / "metrics.jsonl", metrics)
    if done:
        (d / "DONE.json").write_text(json.dumps({"final": metrics[-1]}))


# ---------------------------------------------------------------- gradient-pov: per-example findings

def _per_example_run(root, case, seed, gsnr, spread, dead_epochs=()):
    """12 epochs of per-example rows; over the last 10, layer k (1-6) averages gsnr * k and spread * k
    (offsets -1 x 9 and +9 in units of 0.05: mean 0, median -1); epochs 1-2 hold 1000 (outside the
    window). norm_mean alternates 1 and 2, so the mean of sd / mean differs from the ratio of the means.
    A dead epoch has norm_mean 0."""
    d = root / f"{case}-seed{seed}"
    d.mkdir()
    rows = []
    for epoch in range(1, 13):
        off = 0.05 * (9.0 if epoch == 12 else -1.0)
        nm = 0.0 if epoch in dead_epochs else (2.0 if epoch % 2 else 1.0)
        for k, layer in enumerate(LAYERS, 1):
            g, sp = (1000.0, 1000.0) if epoch <= 2 else (k * gsnr + off, k * spread + off)
            rows.append({"epoch": epoch, "step": 10 * epoch, "layer": layer, "instrument": "per_example",
                         "gsnr": g, "norm_mean": nm, "norm_sd": sp * nm, "grad_variance": 0.5})
        rows.append({"epoch": epoch, "step": 10 * epoch, "layer": "conv1", "instrument": "optimizer",
                     "update_ratio": 7.0, "gsnr": 99.0})
    _jsonl(d / "instruments.jsonl", rows)
    return {"labels": {"case": case, "seed": f"seed{seed}"}, "dir": d}


def test_instrument_findings_paired_differences_against_z(tmp_path):
    """Per layer k, each run's value is gsnr * k (spread * k), the mean over its last 10 probes. Z's
    GSNR over seeds (0.1, 0.2, 0.6) k: conv1 0.300 ± t_{2,0.975} sqrt(0.07) / sqrt(3) = 0.300 ± 0.657.
    H - Z pairs seeds 0-2 (H's seed 3 has no Z): (0.1, 0, -0.3) k; J has one seed: 0.3 k, no interval.
    A's seed 1 dies in its last epoch: its spread is left out and counted ("(1 dead)"); both of B's seeds
    die: "n/a (2 dead)"; C dies only in epoch 1, outside the window. Rows follow the letters Z, A, B, C, H, J."""
    zg, zs = [0.1, 0.2, 0.6], [0.5, 0.7, 0.6]
    runs = [_per_example_run(tmp_path, "Z", s, zg[s], zs[s]) for s in range(3)]
    # listed before Z and out of letter order: the rows still follow the letters
    runs = [_per_example_run(tmp_path, "J", 1, 0.5, 0.6)] + runs
    hg, hs = [0.2, 0.2, 0.3, 5.0], [0.3, 0.4, 0.2, 5.0]
    runs += [_per_example_run(tmp_path, "H", s, hg[s], hs[s]) for s in range(4)]
    ag, asp = [0.3, 0.1, 0.2], [0.4, 0.9, 0.45]
    runs += [_per_example_run(tmp_path, "A", s, ag[s], asp[s], dead_epochs=(12,) if s == 1 else ())
             for s in range(3)]
    runs += [_per_example_run(tmp_path, "B", s, 0.1 * s + 0.1, 0.5, dead_epochs=(12,)) for s in range(2)]
    runs += [_per_example_run(tmp_path, "C", 0, 0.4, 0.8, dead_epochs=(1,))]
    out = gradient_pov.instrument_findings(runs)

    assert len(out) == 8 and out[1] == out[3] == out[5] == out[7] == ""
    assert out[0] == ("GSNR (mean over parameters of mean^2 / variance of the per-example gradients), last 10 "
                      "probes, paired by seed (mean ± 95% t half-width, unscaled):")
    assert out[4] == ("spread of the per-example gradient norms (sd / mean), last 10 probes, paired by seed "
                      "(mean ± 95% t half-width, unscaled):")
    ks = range(1, 7)
    head = [_row("case", *LAYERS), "|" + "|".join("---" for _ in range(7)) + "|"]
    gsnr = head + [
        _row("Z (value)", *[_pm([k * v for v in zg]) for k in ks]),
        _row("A - Z", *[_pm([k * (a - z) for a, z in zip(ag, zg)]) for k in ks]),
        _row("B - Z", *[_pm([k * (0.1 - 0.1), k * (0.2 - 0.2)]) for k in ks]),
        _row("C - Z", *[f"{k * (0.4 - 0.1):.3f}" for k in ks]),
        _row("H - Z", *[_pm([k * (h - z) for h, z in zip(hg, zg)]) for k in ks]),
        _row("J - Z", *[f"{k * (0.5 - 0.2):.3f}" for k in ks])]
    assert out[2].splitlines() == gsnr
    assert out[2].splitlines()[2].split(" | ")[1] == "0.300 ± 0.657"
    spread = head + [
        _row("Z (value)", *[_pm([k * v for v in zs]) for k in ks]),
        _row("A - Z", *[_pm([k * (0.4 - 0.5), k * (0.45 - 0.6)]) + " (1 dead)" for k in ks]),
        _row("B - Z", *["n/a (2 dead)"] * 6),
        _row("C - Z", *[f"{k * (0.8 - 0.5):.3f}" for k in ks]),
        _row("H - Z", *[_pm([k * (h - z) for h, z in zip(hs, zs)]) for k in ks]),
        _row("J - Z", *[f"{k * (0.6 - 0.7):.3f}" for k in ks])]
    assert out[6].splitlines() == spread


def test_instrument_findings_need_the_baselines_per_example_rows(tmp_path):
    """No Z run, or a Z run that recorded no per-example rows (only the optimizer's): no findings."""
    h = _per_example_run(tmp_path, "H", 0, 0.2, 0.3)
    assert gradient_pov.instrument_findings([h]) == []
    z = tmp_path / "Z-seed0"
    z.mkdir()
    _jsonl(z / "instruments.jsonl", [{"epoch": 1, "step": 1, "layer": "conv1", "instrument": "optimizer",
                                      "update_ratio": 1.0, "gsnr": 1.0}])
    assert gradient_pov.instrument_findings([{"labels": {"case": "Z", "seed": "seed0"}, "dir": z}, h]) == []


# ---------------------------------------------------------------- weights-pov: spectra findings

SIZES = (2, 2, 2, 2, 2, 10)   # the six layers' weight counts: 20 weights


def _spectra_run(root, name, norms, ranks, small, train, test, spectra=True):
    """The last spectra rows (step 100) hold ``norms`` and ``ranks`` per layer; an earlier record (step 50)
    holds 100 times as much and a later per-example row (step 200) none. The first ``small`` of the 20
    weights are +-5e-4 (below 1e-3), the rest 0.5 or -2e-3; the last metrics row holds the accuracies."""
    d = root / name
    d.mkdir()
    if spectra:
        rows = [{"epoch": 1, "step": step, "layer": f"conv{li + 1}", "instrument": "spectra",
                 "spectral_norm": scale * norms[li], "stable_rank": scale * ranks[li]}
                for step, scale in ((50, 100.0), (100, 1.0)) for li in (3, 5, 0, 2, 4, 1)]
        rows.append({"epoch": 2, "step": 200, "layer": "conv1", "instrument": "per_example", "gsnr": 1.0})
        _jsonl(d / "instruments.jsonl", rows)
    flat = np.array([5e-4 * (-1) ** i for i in range(small)] + [0.5, -2e-3] * 10)[:20]
    weights = np.split(flat, np.cumsum(SIZES)[:-1])
    metrics = [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.1}, {"epoch": 2, "train_acc": train, "test_acc": test}]
    return {"dir": d, "weights": weights, "metrics": metrics, "labels": {"seed": "seed0"}}


def _two_level_bootstrap(cases, n_boot=5000, seed=0):
    """The two-level bootstrap written out: draw the cases, then (for a case with several runs) its runs."""
    rng = np.random.default_rng(seed)
    mx = [np.mean(x) for x, _ in cases]
    my = [np.mean(y) for _, y in cases]
    rs = []
    for _ in range(n_boot):
        bx, by = [], []
        for i in rng.integers(0, len(cases), len(cases)):
            x, y = np.asarray(cases[i][0], float), np.asarray(cases[i][1], float)
            if len(x) > 1:
                j = rng.integers(0, len(x), len(x))
                x, y = x[j], y[j]
            bx.append(x.mean())
            by.append(y.mean())
        if np.ptp(bx) > 0 and np.ptp(by) > 0:
            rs.append(np.corrcoef(bx, by)[0, 1])
    return float(np.corrcoef(mx, my)[0, 1]), *np.percentile(rs, [2.5, 97.5])


def test_bootstrap_over_runs_widens_with_the_noise_within_cases():
    """One run per case: the pairs bootstrap, the same numbers as resampling the pairs. Several runs per case
    with the same case means: the same r, and a wider interval the noisier the runs within a case are."""
    from manualbp.experiments.report import bootstrap_correlation_runs
    rng = np.random.default_rng(1)
    mx = np.linspace(0, 1, 8)
    my = -mx + rng.normal(scale=0.2, size=8)
    one = bootstrap_correlation_runs([([a], [b]) for a, b in zip(mx, my)])
    assert one == pytest.approx(_two_level_bootstrap([([a], [b]) for a, b in zip(mx, my)]), abs=1e-12)
    assert one == pytest.approx(weights_pov.bootstrap_correlation(mx, my), abs=1e-12)
    widths = []
    for noise in (0.0, 0.3, 1.0):
        e = rng.normal(size=(8, 3))
        e -= e.mean(1, keepdims=True)                 # the case means stay mx, my
        cases = [(mx[i] + noise * e[i], my[i] + noise * e[i][::-1]) for i in range(8)]
        r, lo, hi = bootstrap_correlation_runs(cases)
        assert r == pytest.approx(np.corrcoef(mx, my)[0, 1], abs=1e-12)
        assert (r, lo, hi) == pytest.approx(_two_level_bootstrap(cases), abs=1e-12)
        widths.append(hi - lo)
    assert widths[0] < widths[1] < widths[2]
    with pytest.raises(ValueError, match="one or more runs"):
        bootstrap_correlation_runs([([1.0], [])])


def test_spectra_findings_table_and_correlations(tmp_path):
    """Case means (BN on): norm Z 2, A (2.5 + 3.5) / 2 = 3, B 4, D 5; stable rank 3, 2.5, 2, 1.5; near-zero
    share (of all 20 weights) 2/20, (4 + 6) / 40, 3/20, 10/20; gap 0.1, 0.2, 0.3, 0.4. The gap is
    0.1 (norm - 1) and 0.7 - 0.2 rank: r = 1 and -1 with every bootstrap resample; with the share
    (0.10, 0.25, 0.15, 0.50) r = 0.055 / sqrt(0.095 x 0.05) = 0.80. BN off: Z, A, B (C has no spectra,
    D one run without them: both left out), norm 1, 2, 3 against gap 0.05, 0.03, 0.01: r = -1; stable
    rank (0.2 in each case) and share (16/20 in each case; np.std of three 0.8 is 1e-16, not 0)
    constant: n/a. Z20 is not a regularizer."""
    def run(*a, **k):
        return _spectra_run(tmp_path, f"r{len(list(tmp_path.iterdir()))}", *a, **k)

    groups = {("bn", "Z"): [run([1, 1, 1, 1, 1, 7], [2, 4, 3, 3, 3, 3], 2, 0.9, 0.8)],
              ("bn", "Z20"): [run([100] * 6, [100] * 6, 20, 1.0, 0.0)],
              ("bn", "A"): [run([2.5] * 6, [2.5] * 6, 4, 0.85, 0.7), run([3, 3, 3, 4, 4, 4], [2.5] * 6, 6, 0.95, 0.7)],
              ("bn", "B"): [run([4] * 6, [1, 3, 2, 2, 2, 2], 3, 0.9, 0.6)],
              ("bn", "D"): [run([5] * 6, [1.5] * 6, 10, 0.9, 0.5)],
              ("nobn", "Z"): [run([1] * 6, [0.2] * 6, 16, 0.75, 0.7)],
              ("nobn", "A"): [run([2] * 6, [0.2] * 6, 16, 0.73, 0.7)],
              ("nobn", "B"): [run([3] * 6, [0.2] * 6, 16, 0.71, 0.7)],
              ("nobn", "C"): [run([9] * 6, [9] * 6, 9, 0.9, 0.1, spectra=False)],
              ("nobn", "D"): [run([9] * 6, [9] * 6, 9, 0.9, 0.1), run([9] * 6, [9] * 6, 9, 0.9, 0.1, spectra=False)]}
    out = weights_pov.spectra_findings(groups, ["Z", "A", "B", "C", "D", "Z20"])

    assert out[0].startswith("Spectra of the final weights (log.spectra=end;") and out[1] == out[3] == ""
    assert out[2].splitlines() == [
        _row("case", "BN", "n", "spectral norm", "stable rank", "near-zero %", "gap"), "|---|---|---|---|---|---|---|",
        _row("Z", "on", 1, "2.000", "3.00", "10.00", "10.00"),
        _row("A", "on", 2, "3.000", "2.50", "25.00", "20.00"),
        _row("B", "on", 1, "4.000", "2.00", "15.00", "30.00"),
        _row("D", "on", 1, "5.000", "1.50", "50.00", "40.00"),
        _row("Z", "off", 1, "1.000", "0.20", "80.00", "5.00"),
        _row("A", "off", 1, "2.000", "0.20", "80.00", "3.00"),
        _row("B", "off", 1, "3.000", "0.20", "80.00", "1.00")]
    share, gaps = [0.10, 0.25, 0.15, 0.50], [0.1, 0.2, 0.3, 0.4]
    r = np.corrcoef(share, gaps)[0, 1]
    assert f"{r:.2f}" == "0.80"
    # A's two runs enter the bootstrap as runs (shares 4/20 and 6/20, gaps 0.15 and 0.25), not as their mean
    _, lo, hi = _two_level_bootstrap([([0.10], [0.1]), ([0.2, 0.3], [0.15, 0.25]), ([0.15], [0.3]),
                                      ([0.5], [0.4])])
    # stable rank: A's two runs share 2.5 but not their gaps, so the draws within A break the perfect r = -1
    _, rlo, rhi = _two_level_bootstrap([([3], [0.1]), ([2.5, 2.5], [0.15, 0.25]), ([2], [0.3]), ([1.5], [0.4])])
    assert rlo == pytest.approx(-1) and rhi > -0.99
    assert out[4:] == [
        "- BN on, across 4 distinct regularizers (each function once), Pearson r with the gap: spectral norm (mean "
        "of layers): r = 1.00 [1.00, 1.00]; stable rank (mean of layers): r = -1.00 "
        f"[{rlo:.2f}, {rhi:.2f}]; share of abs(w) < 0.001: r = {r:.2f} [{lo:.2f}, {hi:.2f}]",
        "- BN off, across 3 distinct regularizers (each function once), Pearson r with the gap: spectral norm "
        "(mean of layers): r = -1.00 "
        "[-1.00, -1.00]; stable rank (mean of layers): n/a (no spread of stable rank); share of abs(w) < 0.001: "
        "n/a (no spread of sparsity)"]


def test_spectra_findings_without_spectra_is_empty(tmp_path):
    """Runs that recorded no spectra (log.spectra=off): no section at all."""
    r = _spectra_run(tmp_path, "x", [1] * 6, [1] * 6, 0, 0.9, 0.8, spectra=False)
    assert weights_pov.spectra_findings({("bn", "Z"): [r], ("nobn", "Z"): [r]}, ["Z"]) == []


# ---------------------------------------------------------------- scripts/verdicts.py

def _acc_rows(n, train, test, **extra):
    """n metric rows; the earlier ones hold accuracies the verdicts must not read."""
    return [{"epoch": e, "train_acc": 0.01, "test_acc": 0.99, **extra} for e in range(1, n)] + \
           [{"epoch": n, "train_acc": train, "test_acc": test, **extra}]


def _gradient_run(d, preset, epochs, train, test, share, done=True):
    """post_activation's non-zero count / numel at the last probe, per layer, is ``share`` (six values);
    every other statistic and the first probe hold 7 of 200."""
    _finished(d, preset, _acc_rows(epochs, train, test), done)
    qi, si = gradient_pov.QUANTITIES.index("post_activation"), gradient_pov.STATS.index("nonzero")
    stats, numel = np.full((2, 6, 6, 5), 7.0), np.full((2, 6, 6), 200)
    stats[-1, :, qi, si] = 200 * np.asarray(share)
    np.savez(d / "stats.npz", stats=stats, numel=numel, epochs=np.array([1, 2]))


def test_gradient_pov_verdict_table(tmp_path):
    """Sound (2 epochs, seeds 0-2; H's seed 2 unfinished): mean test accuracy Z 0.52, C 0.42 (lowest),
    G 0.46, H 0.58 (highest); mean training accuracy G 0.85 (highest; C's median 0.86 is higher, its mean
    0.68 is not). Paired by seed: H - Z test
    (0.06, 0.08) = 7.00 ± 12.706 x 1.414 / 1.414 = 7.00 ± 12.71; G - Z training (0.30, 0.18, 0.21) =
    23.00 ± 15.51; post-activation share (mean of layers 1-5, not 6) H - Z (0.2 - 0.5, 0.3 - 0.45) =
    -22.50 ± 95.30. Article (3 epochs, one run per letter, no H): highest test C 35.00, lowest G 20.00,
    highest training G 70.00, G - Z training 30.00; the H rows "not run". Written to the sound folder."""
    a, s = tmp_path / "a", tmp_path / "s"
    for case, train, test in (("Z", 0.40, 0.30), ("B", 0.50, 0.25), ("C", 0.45, 0.35), ("G", 0.70, 0.20)):
        _gradient_run(a / f"{case}-seed0", "article-quick", 3, train, test, [0.6] * 6)
    sound = {"Z": ([0.60, 0.62, 0.64], [0.50, 0.52, 0.54], [[0.5] * 5 + [0.1], [0.45] * 5 + [0.9], [0.4] * 6]),
             "C": ([0.30, 0.86, 0.87], [0.40, 0.41, 0.45], [[0.5] * 6] * 3),
             "G": ([0.90, 0.80, 0.85], [0.45, 0.47, 0.46], [[0.5] * 6] * 3),
             "H": ([0.70, 0.71, 0.99], [0.56, 0.60, 0.99], [[0.1, 0.2, 0.2, 0.2, 0.3, 0.9], [0.3] * 5 + [0.0],
                                                           [0.0] * 6])}
    for case, (train, test, share) in sound.items():
        for seed in range(3):
            _gradient_run(s / f"{case}-seed{seed}", "quick", 2, train[seed], test[seed], share[seed],
                          done=not (case == "H" and seed == 2))
    assert verdicts.main(["gradient-pov", "--article", str(a), "--sound", str(s)]) == 0
    # sound: highest test H, runner-up Z (seeds 0-1); lowest C, runner-up G; highest training G, runner-up H
    fam = [[0.06, 0.08], [-0.05, -0.06, -0.01], [0.20, 0.09], [0.06, 0.08], [0.30, 0.18, 0.21], [-0.30, -0.15]]
    dirs = ["higher", "lower", "higher", "higher", "higher", "lower"]
    h = _holm(fam)
    c = [_claim(d, dr, f) for d, dr, f in zip(fam, dirs, h)]
    assert c[4].endswith(": holds alone, not after Holm's correction") and c[3].endswith(": undecided")
    one = "(one run, no interval)"
    assert (s / "verdicts.md").read_text().splitlines() == [
        _row("claim", "article (3 epochs, one run per letter)", "sound (2 epochs, over seeds)", "the article said"),
        "|---|---|---|---|",
        _row("highest test accuracy", f"C (linear): 35.00 {one}; margin over Z: 5.00 {one}",
             f"H (neg_tanh): {_est([0.56, 0.60])}; margin over Z: {c[0]}", "H (neg_tanh)"),
        _row("lowest test accuracy", f"G (ratio): 20.00 {one}; margin over B: -5.00 {one}",
             f"C (linear): {_est([0.40, 0.41, 0.45])}; margin over G: {c[1]}", "C (linear)"),
        _row("highest training accuracy", f"G (ratio): 70.00 {one}; margin over B: 20.00 {one}",
             f"G (ratio): {_est([0.90, 0.80, 0.85])}; margin over H: {c[2]}", "G (ratio)"),
        _row("test accuracy of H - Z", "not run", c[3], "H above the baseline (positive)"),
        _row("training accuracy of G - Z", f"30.00 {one}", c[4], "G highest (positive)"),
        _row("post-activation non-zero share of H - Z (layers 1-5, last probe)", "not run", c[5],
             "H sparser (negative)"),
        "", report.VERDICT_RULES + " A highest or lowest letter's margin is taken over the runner-up chosen after "
        "seeing the means, a selection that Holm's correction does not account for.",
        "Article column: No paired claims with two or more pairs: no verdicts, no correction.",
        f"Sound column: Holm's correction over the 6 paired claims with two or more pairs in this column: "
        f"{sum(h)} of 6 hold at family-wise 5%."]
    # the hand-worked half-widths against scipy's t
    assert f"{100 * _half([0.56, 0.60]):.2f}" == "25.41" and f"{100 * _half([0.30, 0.18, 0.21]):.2f}" == "15.51"
    assert f"{100 * _half([-0.30, -0.15]):.2f}" == "95.30" and f"{100 * _half([0.40, 0.41, 0.45]):.2f}" == "6.57"


def test_claim_cells_family_and_holm_by_value():
    """Three claims: a large effect (p = 1.6e-4), a moderate one (p = 0.046) and one on the wrong side (p =
    2.3e-4). Holm over 3: 1.6e-4 <= 0.05 / 3, 2.3e-4 <= 0.05 / 2, 0.046 <= 0.05: all rejected, but the wrong-side
    one holds against the claim, so its flag is "opposite"; a one-run claim is not tested and not counted."""
    big, mid, wrong = [1.0, 1.1, 0.9, 1.05], [0.2, 0.5, 0.1, 0.4], [-0.3, -0.31, -0.28, -0.35]
    p = [scipy.stats.ttest_1samp(d, 0).pvalue for d in (big, mid, wrong)]
    assert [report.p_value(d) for d in (big, mid, wrong)] == pytest.approx(p, rel=1e-9)
    assert p[0] < 0.05 / 3 and p[2] < 0.05 / 2 and 0.05 / 2 < p[1] < 0.05
    flags = report.family([(big, "higher"), (mid, "higher"), (wrong, "higher"), ([0.4], "higher")])
    assert flags == [True, True, "opposite", None]
    assert report.claim_cell(big, "higher", corrected=True) == _claim(big, "higher", True, k=1)
    assert report.claim_cell(big, "higher", corrected=True).endswith("n = 4: holds, also after Holm's correction")
    assert report.claim_cell(mid, "higher", corrected=False).endswith(": holds alone, not after Holm's correction")
    assert report.claim_cell(wrong, "higher", corrected="opposite").endswith(
        ": the opposite holds, also after Holm's correction")
    assert report.claim_cell(wrong, "higher", corrected=False).endswith(
        ": the opposite holds alone, not after Holm's correction")
    assert report.claim_cell([0.4], "higher") == "0.40 (one run, no interval)"
    assert report.estimate([]) == "not run"
    assert report.family_note(flags, "claims") == ("Holm's correction over the 3 claims with two or more pairs in "
                                                   "this column: 2 of 3 hold at family-wise 5%.")
    # a correlation's sign: holds only when the bootstrap interval excludes 0 on the claimed side
    assert report.correlation_cell((-0.6, -0.9, -0.2), "lower", 12) == \
        "r = -0.60 [-0.90, -0.20], n = 12 regularizers: holds"
    assert report.correlation_cell((-0.6, -0.9, 0.1)).endswith(": undecided")
    assert report.correlation_cell((0.5, 0.2, 0.8)).endswith(": the opposite holds")
    assert report.correlation_cell((-1.0, -1.0, -1.0), "lower", 3).endswith(": too few cases for a verdict")


def test_distinct_cases_count_each_function_once():
    """weights-pov's H (-tanh(|w|^2)) is F (-tanh(w^2)) and gradient-pov's F (sqrt(|t|^2 + eps)) is D: the twin
    letter is dropped when the other is present, kept when it is alone."""
    from manualbp.functional import ARTICLE_LETTERS, regularize
    w = torch.randn(50, dtype=torch.float64)
    for exp, twin, kept in (("weights-pov", "H", "F"), ("gradient-pov", "F", "D")):
        letters = ARTICLE_LETTERS[exp]
        assert torch.equal(regularize(w, letters[twin], 1.0), regularize(w, letters[kept], 1.0))
        once = report.distinct_cases(letters)
        assert once == [c for c in letters if c != twin]
        assert report.distinct_cases({twin: letters[twin]}) == [twin]


def _weights_run(d, preset, epochs, n, train, test, done=True):
    """Six layers of [1, -1, 0, ...] with n - 2, n + 2, n, n, n, n weights: a layer of m weights has excess
    kurtosis m / 2 - 3, so the run's mean is n / 2 - 3, and its share of abs(w) < 1e-3 is (n - 2) / n."""
    _finished(d, preset, _acc_rows(epochs, train, test), done)
    state = {f"convs.{i}.weight": torch.tensor([1.0, -1.0] + [0.0] * (m - 2)).reshape(1, m, 1, 1)
             for i, m in enumerate([n - 2, n + 2, n, n, n, n])}
    torch.save({"model": state}, d / "checkpoint.pt")


def test_weights_pov_verdict_table(tmp_path):
    """Sound (2 epochs, seeds 0-1): BN on, kurtosis Z (1, 2), A (0, 1), B (-1, 3): per episode 0 and 2,
    1.00 [1 - 12.71, 1 + 12.71]; BN off n = 10 everywhere: kurtosis 2, sparsity 0.8 in every case (no
    spread: n/a, although np.std of three 0.8 is 1e-16); gaps per episode (0.20 + 0.15 + 0.09) / 3 and
    (0.22 + 0.16 + 0.11) / 3 on, (0.10 + 0.08 + 0.05) / 3 and (0.11 + 0.09 + 0.07) / 3 off; Z20 - Z gap
    (0.05, 0.06) on and (0.05) off (nobn-Z20-seed1 unfinished). Sparsity against gap over Z, A, B on:
    ((0.75 + 0.8) / 2, (4/6 + 0.75) / 2, (0.5 + 10/12) / 2) against (0.21, 0.155, 0.10), both rising (r =
    0.99), but drawing each case's two runs as well spreads the interval across 0: undecided.
    Article (3 epochs, one episode: over the 3 regularizers Z, A, B that both arms ran; bn-C is left out):
    kurtosis (-1, 0, 2) on, gaps (0.3, 0.2, 0.1) on and (0.10, 0.05, 0.03) off; sparsity (0.5, 4/6, 0.8)
    falls with the gap: r = -0.998, every resample -1 or -0.998: r = -1.00 [-1.00, -1.00]; no Z20."""
    a, s = tmp_path / "a", tmp_path / "s"
    art = {("bn", "Z"): (4, 0.80, 0.50), ("bn", "A"): (6, 0.75, 0.55), ("bn", "B"): (10, 0.70, 0.60),
           ("bn", "C"): (20, 0.99, 0.49), ("nobn", "Z"): (10, 0.60, 0.50), ("nobn", "A"): (10, 0.60, 0.55),
           ("nobn", "B"): (10, 0.63, 0.60)}
    for (bn, case), (n, train, test) in art.items():
        _weights_run(a / f"{bn}-{case}-seed0", "article-quick", 3, n, train, test)
    _weights_run(a / "nobn-C-seed0", "article-quick", 1, 10, 0.5, 0.5, done=False)
    snd = {("bn", "Z"): [(8, 0.90, 0.70), (10, 0.92, 0.70)], ("bn", "A"): [(6, 0.85, 0.70), (8, 0.86, 0.70)],
           ("bn", "B"): [(4, 0.80, 0.71), (12, 0.81, 0.70)], ("bn", "Z20"): [(8, 0.95, 0.70), (8, 0.97, 0.69)],
           ("nobn", "Z"): [(10, 0.80, 0.70), (10, 0.81, 0.70)], ("nobn", "A"): [(10, 0.78, 0.70), (10, 0.79, 0.70)],
           ("nobn", "B"): [(10, 0.75, 0.70), (10, 0.76, 0.69)], ("nobn", "Z20"): [(10, 0.85, 0.70), (10, 0.3, 0.3)]}
    for (bn, case), seeds in snd.items():
        for seed, (n, train, test) in enumerate(seeds):
            _weights_run(s / f"{bn}-{case}-seed{seed}", "quick", 2, n, train, test,
                         done=not (bn == "nobn" and case == "Z20" and seed == 1))
    out = tmp_path / "v.md"
    assert verdicts.main(["weights-pov", "--article", str(a), "--sound", str(s), "--out", str(out)]) == 0

    s_gap_on, s_gap_off = [(0.20 + 0.15 + 0.09) / 3, (0.22 + 0.16 + 0.11) / 3], [0.23 / 3, 0.27 / 3]
    a_gap_on, a_gap_off = [0.3, 0.2, 0.1], [0.10, 0.05, 0.03]
    r_s = np.corrcoef([(0.75 + 0.8) / 2, (4 / 6 + 0.75) / 2, (0.5 + 10 / 12) / 2], [0.21, 0.155, 0.10])[0, 1]
    r_a = np.corrcoef([0.5, 4 / 6, 0.8], a_gap_on)[0, 1]
    assert f"{r_s:.2f} {r_a:.3f}" == "0.99 -0.998"
    kurt = "abs(excess kurtosis) of the final weights (mean of layers and cases)"
    # |kurtosis| per run, the mean over its layers of |m / 2 - 3|: n = 4 -> (2 + 0 + 4) / 6 = 1, n = 6 -> 1/3,
    # n = 8 -> 1, n = 10 -> 2, n = 12 -> 3 (every layer above 0 from n = 10 on)
    ak = {4: 1.0, 6: 1 / 3, 8: 1.0, 10: 2.0, 12: 3.0}
    a_k_on, s_k_on = [ak[4], ak[6], ak[10]], [(ak[8] + ak[6] + ak[4]) / 3, (ak[10] + ak[8] + ak[12]) / 3]
    a_k_diff, s_k_diff = [k - 2.0 for k in a_k_on], [k - 2.0 for k in s_k_on]
    gap = "train - test gap, points"
    sparse = "sparsity (abs(w) < 0.001) against gap across the distinct regularizers"
    s_gap_diff = [a - b for a, b in zip(s_gap_on, s_gap_off)]
    a_fam, s_fam = _holm([a_k_diff, [0.20, 0.15, 0.07]]), _holm([s_k_diff, s_gap_diff, [0.05, 0.06]])
    # sound: each case's two runs enter the bootstrap (shares (n - 2) / n, gaps train - test)
    _, lo_s, hi_s = _two_level_bootstrap([([0.75, 0.8], [0.20, 0.22]), ([4 / 6, 0.75], [0.15, 0.16]),
                                          ([0.5, 10 / 12], [0.09, 0.11])])
    v_s = "the opposite holds" if lo_s > 0 else "holds" if hi_s < 0 else "undecided"
    assert v_s == "undecided"   # both rising in the case means, but the runs within the cases are noisy
    said = weights_pov.ARTICLE_SAID
    assert out.read_text().splitlines() == [
        _row("observation", "article (3 epochs; over 3 regularizers)", "sound (2 epochs; over 2 episodes)",
             "the article said"), "|---|---|---|---|",
        _row(f"{kurt}: BN on", _est(a_k_on, 1), _est(s_k_on, 1), ""),
        _row(f"{kurt}: BN off", "2.00 [2.00, 2.00], n = 3", "2.00 [2.00, 2.00], n = 2", ""),
        _row(f"{kurt}: on - off (paired)", _claim(a_k_diff, "lower", a_fam[0], 1),
             _claim(s_k_diff, "lower", s_fam[0], 1), said["gaussian"] + " (closer to 0 with BN: negative)"),
        _row(f"{gap}: BN on", _est(a_gap_on), _est(s_gap_on), ""),
        _row(f"{gap}: BN off", _est(a_gap_off), _est(s_gap_off), ""),
        _row(f"{gap}: on - off (paired)", _claim([0.20, 0.15, 0.07], "higher", a_fam[1]),
             _claim(s_gap_diff, "higher", s_fam[1]), "BN overfits more (positive)"),
        _row("train accuracy %, BN on", _est([0.80, 0.75, 0.70]), _est([0.85, (0.92 + 0.86 + 0.81) / 3]), ""),
        _row("train accuracy %, BN off", _est([0.60, 0.60, 0.63]),
             _est([(0.80 + 0.78 + 0.75) / 3, (0.81 + 0.79 + 0.76) / 3]), ""),
        _row("batch 20 - batch 100 gap of Z, BN on", "not in the article's code",
             _claim([0.05, 0.06], "higher", s_fam[2]),
             "smaller batches overfit more (STL-10 at batch 20 against CIFAR-10 at batch 100) (positive)"),
        _row("batch 20 - batch 100 gap of Z, BN off", "not in the article's code", "5.00 (one run, no interval)", ""),
        _row(f"{sparse}, BN on", "r = -1.00 [-1.00, -1.00], n = 3 regularizers: too few cases for a verdict",
             f"r = {r_s:.2f} [{lo_s:.2f}, {hi_s:.2f}], n = 3 regularizers: too few cases for a verdict",
             "sparser weights go with less overfitting (negative r)"),
        _row(f"{sparse}, BN off", "n/a (no spread)", "n/a (no spread)", ""),
        "", report.VERDICT_RULES,
        f"Article column: Holm's correction over the 2 paired claims with two or more pairs in this column: "
        f"{sum(a_fam)} of 2 hold at family-wise 5%.",
        f"Sound column: Holm's correction over the 3 paired claims with two or more pairs in this column: "
        f"{sum(s_fam)} of 3 hold at family-wise 5%.",
        "The correlations' bootstrap intervals (over the distinct regularizers and the runs within each) are not "
        "corrected for the other comparisons."]
    # hand-worked: kurtosis on over the episodes 0 and 2 is 1 ± t_{1,0.975} sqrt(2) / sqrt(2) = 1 ± 12.71
    assert _interval([0, 2], 1) == "1.00 [-11.71, 13.71]" and _interval(a_gap_on) == "20.00 [-4.84, 44.84]"


def test_bootstrap_correlation_leaves_out_resamples_without_spread():
    """Three pairs falling together: a resample of two distinct pairs has r = -1 and one of all three the
    full r = -0.998, so the 95% interval lies in [-1, -0.998]. A resample of one pair drawn three times
    has no spread (np.std of three 0.8 is 1e-16, not 0) and must be left out, not counted as r = 1."""
    r, lo, hi = weights_pov.bootstrap_correlation([0.5, 4 / 6, 0.8], [0.3, 0.2, 0.1])
    assert r == pytest.approx(np.corrcoef([0.5, 4 / 6, 0.8], [0.3, 0.2, 0.1])[0, 1])
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(r)


def test_sparse_filtering_verdict_table(tmp_path, monkeypatch):
    """IoU from the last metrics row; the Mall mean probability of each run's (stubbed) predictions is its
    mall.txt. Sound (seeds 0-2; sf's seed 2 unfinished; no ae_l2): IoU ae (0.70, 0.72, 0.74) = 72.0 ±
    5.0, sf (0.76, 0.79); sf - ae paired over seeds 0-1 (0.06, 0.07) = 6.5 ± 6.4. Article (one run per
    model, no sf_no_term): sf - ae 0.65 - 0.60 = 5.0, sf - ae_l2 7.0. sf_elu ran nowhere: no row."""
    a, s = tmp_path / "a", tmp_path / "s"
    art = {"ae": (0.60, 0.90), "ae_l1": (0.62, 0.50), "ae_l2": (0.58, 0.40), "sf": (0.65, 0.30)}
    for name, (iou, mall) in art.items():
        _finished(a / f"{name}-seed0", "article-quick", [{"epoch": 1, "test_iou": 0.99}, {"epoch": 2, "test_iou": iou}])
        (a / f"{name}-seed0" / "mall.txt").write_text(str(mall))
    snd = {"ae": ([0.70, 0.72, 0.74], [0.80, 0.82, 0.84]), "ae_l1": ([0.71, 0.70, 0.75], [0.5, 0.5, 0.6]),
           "sf": ([0.76, 0.79, 0.99], [0.30, 0.35, 0.99]), "sf_no_term": ([0.74, 0.73, 0.77], [0.4, 0.4, 0.4])}
    for name, (iou, mall) in snd.items():
        for seed in range(3):
            d = s / f"seed{seed}-{name}"
            _finished(d, "quick", [{"epoch": 1, "test_iou": 0.99}, {"epoch": 2, "test_iou": iou[seed]}],
                      done=not (name == "sf" and seed == 2))
            (d / "mall.txt").write_text(str(mall[seed]))
    monkeypatch.setattr("manualbp.data.load_dataset", lambda *a, **k: SimpleNamespace(x=torch.zeros(3, 3, 4, 4)))
    monkeypatch.setattr(sparse_filtering, "_load_model", lambda d, cfg: float((d / "mall.txt").read_text()))
    monkeypatch.setattr(sparse_filtering, "predict", lambda p, x: (torch.full((len(x), 1, 2, 2), p), None))
    assert verdicts.main(["sparse-filtering", "--article", str(a), "--sound", str(s)]) == 0

    def cell(v):
        return _est(v, 100, 1)
    said = sparse_filtering.ARTICLE_SAID
    # sound: sf - ae, sf - ae_l1, sf - sf_no_term (seeds 0-1), ae - sf on the Mall; ae_l2 not run
    fam = [[0.06, 0.07], [0.05, 0.09], [0.02, 0.06], [0.50, 0.47]]
    h = _holm(fam)
    c = [_claim(d, "higher", f, 100, 1) for d, f in zip(fam, h)]
    one = "(one run, no interval)"
    assert (s / "verdicts.md").read_text().splitlines() == [
        _row("model", "article: test IoU %", "sound: test IoU %", "article: Mall mean probability %",
             "sound: Mall mean probability %", "the article said"), "|---|---|---|---|---|---|",
        _row("ae", f"60.0 {one}", cell([0.70, 0.72, 0.74]), f"90.0 {one}", cell([0.80, 0.82, 0.84]), said["ae"]),
        _row("ae_l1", f"62.0 {one}", cell([0.71, 0.70, 0.75]), f"50.0 {one}", cell([0.5, 0.5, 0.6]), said["ae_l1"]),
        _row("ae_l2", f"58.0 {one}", "not run", f"40.0 {one}", "", said["ae_l2"]),
        _row("sf", f"65.0 {one}", cell([0.76, 0.79]), f"30.0 {one}", cell([0.30, 0.35]), said["sf"]),
        _row("sf_no_term", "not in the article's code", cell([0.74, 0.73, 0.77]), "", "40.0 [40.0, 40.0], n = 3", ""),
        _row("IoU of sf - ae (paired by seed)", f"5.0 {one}", c[0], "", "",
             "sparse filtering segments better (positive)"),
        _row("IoU of sf - ae_l1 (paired by seed)", f"3.0 {one}", c[1], "", "", ""),
        _row("IoU of sf - ae_l2 (paired by seed)", f"7.0 {one}", "not run", "", "", ""),
        _row("IoU of sf - sf_no_term (paired by seed)", "not run", c[2], "", "", ""),
        _row("Mall mean probability of ae - sf (paired by seed)", "", "", f"60.0 {one}", c[3],
             "the plain AE marks more of the frame (positive)"),
        "", report.VERDICT_RULES,
        "Article: No paired claims with two or more pairs: no verdicts, no correction.",
        f"Sound: Holm's correction over the 4 paired claims with two or more pairs in this column: {sum(h)} of 4 "
        "hold at family-wise 5%."]
    assert cell([0.70, 0.72, 0.74]) == "72.0 [67.0, 77.0], n = 3" and c[0] == "6.5 [0.1, 12.9], n = 2: " + (
        "holds, also after Holm's correction" if h[0] else "holds alone, not after Holm's correction")


def test_verdicts_script_refusals_and_empty_sweeps(tmp_path, monkeypatch, capsys):
    """An experiment without a verdict table and a folder without run folders exit 2 with a message;
    sweeps without finished runs give the one-line notice; without the Mall data the Mall cells are nan."""
    a, s = tmp_path / "a", tmp_path / "s"
    a.mkdir()
    assert verdicts.main(["zca", "--article", str(a), "--sound", str(a)]) == 2
    assert "experiment 'zca' has no verdict table" in capsys.readouterr().err
    assert verdicts.main(["gradient-pov", "--article", str(a), "--sound", str(a)]) == 2
    assert "no run folders with a config.json" in capsys.readouterr().err
    _finished(a / "Z-seed0", "article-quick", _acc_rows(2, 0.5, 0.5), done=False)
    _finished(s / "Z-seed0", "quick", _acc_rows(2, 0.5, 0.5), done=False)
    assert verdicts.main(["gradient-pov", "--article", str(a), "--sound", str(s)]) == 0
    assert (s / "verdicts.md").read_text() == ("gradient-pov verdicts: an article and a sound sweep with finished "
                                               "runs are needed\n")
    monkeypatch.setenv("MANUALBP_DATA", str(tmp_path / "no-data"))
    for d, preset in ((tmp_path / "fa" / "ae-seed0", "article-quick"), (tmp_path / "fs" / "seed0-ae", "quick")):
        _finished(d, preset, [{"epoch": 1, "test_iou": 0.5}])
    assert verdicts.main(["sparse-filtering", "--article", str(tmp_path / "fa"), "--sound", str(tmp_path / "fs")]) == 0
    one = "50.0 (one run, no interval)"
    assert _row("ae", one, one, "no Mall data", "no Mall data", sparse_filtering.ARTICLE_SAID["ae"]) in \
        capsys.readouterr().out


# ---------------------------------------------------------------- scripts/paired.py

def _done(sweep, name, **final):
    d = sweep / name
    d.mkdir(parents=True)
    (d / "DONE.json").write_text(json.dumps({"final": final}))


def test_paired_seeds_of_one_side_metric_and_scale(tmp_path, capsys):
    """x has seeds 0-2, y seeds 1, 2, 5: the pairs are seeds 1 and 2 only. --metric train_acc --scale 1:
    (0.7 - 0.4, 0.9 - 0.5) = (0.3, 0.4), mean 0.35, sd 0.0707, 95% t 0.35 ± 12.706 x 0.0707 / 1.414
    = [-0.29, 0.99]. One run: no interval. A metric the runs lack and prefixes without a common seed
    are refused."""
    for s, (tr, te) in enumerate([(0.2, 0.9), (0.7, 0.8), (0.9, 0.7)]):
        _done(tmp_path, f"x-seed{s}", train_acc=tr, test_acc=te)
    for s, tr in ((1, 0.4), (2, 0.5), (5, 0.0)):
        _done(tmp_path, f"y-seed{s}", train_acc=tr, test_acc=0.1)
    assert paired.main([str(tmp_path), "x", "y", "--metric", "train_acc", "--scale", "1"]) == 0
    half = scipy.stats.t.ppf(0.975, 1) * np.std([0.3, 0.4], ddof=1) / math.sqrt(2)
    assert capsys.readouterr().out.splitlines() == [
        "seed 1: 0.30", "seed 2: 0.40",
        f"x - y, train_acc: n 2, mean 0.35, sd 0.07, 95% t-interval [{0.35 - half:.2f}, {0.35 + half:.2f}]"]
    assert f"[{0.35 - half:.2f}, {0.35 + half:.2f}]" == "[-0.29, 0.99]"
    _done(tmp_path, "one-seed4", test_acc=0.625)
    assert paired.main([str(tmp_path), "one"]) == 0
    assert capsys.readouterr().out.splitlines() == ["seed 4: 62.50",
                                                    "one, test_acc: n 1, mean 62.50, sd nan, 95% t-interval -"]
    with pytest.raises(SystemExit, match="has no metric 'iou'; it has \\['test_acc', 'train_acc'\\]"):
        paired.main([str(tmp_path), "x", "--metric", "iou"])
    _done(tmp_path, "z-seed9", test_acc=0.5)
    assert paired.main([str(tmp_path), "x", "z"]) == 2
    assert "no seed with finished runs of both x and z" in capsys.readouterr().err


def test_sparse_filtering_mall_rows_without_the_mall_data_are_not_tested():
    """Without the Mall frames every Mall score is NaN: the paired Mall row says so and stays out of Holm's
    family, which then holds the IoU claims only (here the one with two or more pairs)."""
    nan = float("nan")
    sound = {"ae": {"iou": [0.50, 0.60, 0.70], "mall": [nan] * 3, "seed": [0, 1, 2]},
             "sf": {"iou": [0.60, 0.69, 0.81], "mall": [nan] * 3, "seed": [0, 1, 2]}}
    lines = sparse_filtering.verdict_table({}, sound)
    mall_row = [r for r in lines[0].splitlines() if r.startswith("| Mall mean probability of ae - sf")][0]
    assert mall_row.split(" | ")[4] == "no Mall data" and "nan" not in lines[0]
    iou = [0.10, 0.09, 0.11]
    assert _row("IoU of sf - ae (paired by seed)", "not run", _claim(iou, "higher", _holm([iou])[0], 100, 1), "", "",
                "sparse filtering segments better (positive)") in lines[0].splitlines()
    assert lines[-1] == ("Sound: Holm's correction over the 1 paired claims with two or more pairs in this column: "
                         f"{int(_holm([iou])[0])} of 1 hold at family-wise 5%.")


def test_twin_regularizers_count_once_in_the_tables():
    """weights-pov: H repeats F; the per-case units are Z, A, F (3, not 4), the correlation's cases the same three.
    gradient-pov: F repeats D, so the runner-up of D is the next distinct letter, not its twin."""
    def run(bn, case, n_zero, train, test):
        w = np.array([1.0, -1.0, 2.0, -2.0] + [0.0] * n_zero)
        return {"labels": {"bn": bn, "case": case, "seed": 0}, "weights": [w] * 6,
                "metrics": [{"train_acc": train, "test_acc": test}]}
    runs = [run(bn, c, k, tr, te) for bn in ("bn", "nobn")
            for c, k, tr, te in (("Z", 1, 0.9, 0.5), ("A", 3, 0.8, 0.6), ("F", 6, 0.7, 0.65), ("H", 6, 0.7, 0.65))]
    out = weights_pov.claim_numbers(runs)
    assert out["n"] == 3 and out["corr_n_bn"] == 3
    assert out["gap_bn"] == pytest.approx([0.4, 0.2, 0.05])
    values = {c: {"test": [t, t + 0.01], "train": [0.5, 0.5], "post_nonzero": [0.5, 0.5], "seed": [0, 1]}
              for c, t in (("Z", 0.30), ("D", 0.50), ("F", 0.50), ("G", 0.40))}
    assert gradient_pov._ranked(values, "test") == ["D", "G", "Z"]
