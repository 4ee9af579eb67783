"""Shared helpers for experiment reports: one figure style, run loading, mean/spread tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from manualbp.plotting import plt, save  # noqa: F401  (the experiments' figures use them from here)


def load_runs(specs) -> list[dict]:
    """[{name, labels, config, dir, metrics (list of rows), done}] for the finished runs; experiments add
    what else they read from ``dir``."""
    out = []
    for s in specs:
        d = Path(s.run_dir)
        if not (d / "DONE.json").is_file():
            continue
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        out.append({"name": s.name, "labels": s.labels, "config": s.config, "dir": d, "metrics": rows,
                    "done": json.loads((d / "DONE.json").read_text())})
    return out


def group(runs, axis="variant") -> dict:
    g: dict = {}
    for r in runs:
        g.setdefault(r["labels"][axis], []).append(r)
    return g


def t_quantile(n: int, level: float = 0.95) -> float:
    """Student's t quantile t_{n-1, (1 + level) / 2} for a two-sided interval from n values."""
    from scipy.stats import t
    return float(t.ppf((1 + level) / 2, n - 1))


def mean_ci(values, level: float = 0.95):
    """(mean, sample sd, half-width of the Student-t interval t_{n-1, 0.975} sd / sqrt(n), n)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return (float(v.mean()) if n else float("nan")), float("nan"), float("nan"), n
    sd = float(v.std(ddof=1))
    return float(v.mean()), sd, t_quantile(n, level) * sd / math.sqrt(n), n


def markdown_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def status_figures(dirs, writer=None) -> int:
    """The status figure (``manualbp.train.status``) of every finished run: ``status.png`` in its folder
    and, with a writer, a TensorBoard image ``status/<run>``. Returns how many were written."""
    from manualbp.train.status import status_figure
    n = 0
    for d in dirs:
        status_figure(d, writer=writer)
        n += 1
    return n


# ---------------------------------------------------------------- verdicts on paired differences

def interval(diffs) -> tuple:
    """(mean, lower, upper, n) of the Student-t 95% interval of paired differences (NaN bounds for n < 2)."""
    m, _, ci, n = mean_ci(diffs)
    return m, m - ci, m + ci, n


def verdict(diffs, direction: str) -> str:
    """"holds" when the 95% t-interval of the paired differences lies on the claim's side of 0 ("lower": below,
    "higher": above), "the opposite holds" when it lies on the other side, else "undecided" (the interval
    includes 0); "one pair, no interval" for n = 1, "no pairs" for none, and undecided for identical
    differences (an interval of width 0 says nothing about the spread)."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"verdict: direction must be 'lower' or 'higher', got {direction!r}")
    m, lo, hi, n = interval(diffs)
    if n == 0:
        return "no pairs"
    if n == 1:
        return "one pair, no interval"
    if np.std(np.asarray(diffs, dtype=float)) == 0:
        return "undecided (no spread: the pairs are identical)"
    if (hi < 0) if direction == "lower" else (lo > 0):
        return "holds"
    if (lo > 0) if direction == "lower" else (hi < 0):
        return "the opposite holds"
    return "undecided"


def p_value(diffs) -> float:
    """Two-sided p-value of the one-sample t-test of the paired differences against 0 (NaN for n < 2 or no
    spread)."""
    from scipy.stats import t
    m, sd, _, n = mean_ci(diffs)
    if n < 2 or not sd > 0:
        return float("nan")
    return float(2 * t.sf(abs(m) / (sd / n ** 0.5), n - 1))


def holm(p_values, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure over a family of tests: which nulls are rejected at family-wise level alpha
    (sorted ascending, the i-th smallest p (from 0) is compared with alpha / (m - i); the first failure stops).
    NaN p-values are never rejected and count in m."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (not np.isfinite(p_values[i]), p_values[i]))
    rejected = [False] * m
    for rank, i in enumerate(order):
        if not (np.isfinite(p_values[i]) and p_values[i] <= alpha / (m - rank)):
            break
        rejected[i] = True
    return rejected


def n_needed(diffs, alpha: float = 0.05, limit: int = 10_000) -> int | None:
    """The smallest number of seeds whose two-sided (1 - alpha) t-interval would exclude 0 if the paired
    differences kept the measured mean and sd (t_{n-1, 1 - alpha/2} sd / sqrt(n) < |mean|); None with fewer than 2
    pairs, no spread or a zero mean, or beyond ``limit``. A planning figure for a larger sweep, not a result, and an
    optimistic one: it treats the measured sd as known and a mean that is as large as measured, so a new sweep of
    that size excludes 0 only about half the time."""
    m, sd, _, n = mean_ci(diffs)
    if n < 2 or not sd > 0 or m == 0:
        return None
    for k in range(2, limit + 1):
        if t_quantile(k, 1 - alpha) * sd / k ** 0.5 < abs(m):
            return k
    return None


# ---------------------------------------------------------------- claim cells: estimate, n, verdict, correction

VERDICT_RULES = ("A claim holds when the 95% Student-t interval of its paired differences (n pairs beside it) lies "
                 "on the claimed side of 0, and the opposite holds when it lies on the other side; otherwise it is "
                 "undecided. A cell of one run has no interval and no verdict.")


def estimate(values, scale: float = 1.0, digits: int = 2) -> str:
    """``"m [lo, hi], n = k"`` (the 95% t-interval, scaled), ``"m (one run, no interval)"`` for one value,
    ``"not run"`` for none."""
    m, _, half, n = mean_ci(values)
    if n == 0:
        return "not run"
    if n == 1:
        return f"{scale * m:.{digits}f} (one run, no interval)"
    return f"{scale * m:.{digits}f} [{scale * (m - half):.{digits}f}, {scale * (m + half):.{digits}f}], n = {n}"


def family(claims) -> list:
    """Holm's step-down over a family of paired claims [(diffs, direction)]: per claim True when its null is
    rejected at family-wise 5% with the mean on the claimed side, "opposite" when rejected with the mean on the
    other side, False when not rejected, None for fewer than 2 pairs (not tested, not counted in the family)."""
    tested = [i for i, (d, _) in enumerate(claims) if len(d) >= 2]
    rejected = holm([p_value(claims[i][0]) for i in tested])
    out: list = [None] * len(claims)
    for i, rej in zip(tested, rejected):
        d, direction = claims[i]
        m = float(np.mean(d))
        out[i] = False if not rej else True if ((m < 0) if direction == "lower" else (m > 0)) else "opposite"
    return out


def claim_cell(diffs, direction: str, scale: float = 1.0, digits: int = 2, corrected=None) -> str:
    """One claim's cell: its estimate with interval and n, its verdict (``verdict``), and with ``corrected``
    (``family``'s entry) whether a verdict that holds alone still holds after Holm's correction."""
    text = estimate(diffs, scale, digits)
    if len(diffs) < 2:
        return text
    v = verdict(diffs, direction)
    if v == "holds" and corrected is not None:
        v = "holds, also after Holm's correction" if corrected is True else "holds alone, not after Holm's correction"
    elif v == "the opposite holds" and corrected is not None:
        v = ("the opposite holds, also after Holm's correction" if corrected == "opposite"
             else "the opposite holds alone, not after Holm's correction")
    return f"{text}: {v}"


def family_note(flags, what: str = "comparisons") -> str:
    """The sentence under a verdict table: how many claims were tested together and how many survive Holm."""
    tested = [f for f in flags if f is not None]
    if not tested:
        return f"No {what} with two or more pairs: no verdicts, no correction."
    held = sum(f is True for f in tested)
    return (f"Holm's correction over the {len(tested)} {what} with two or more pairs in this column: "
            f"{held} of {len(tested)} hold at family-wise 5%.")


MIN_CORRELATION_CASES = 8   # below this a bootstrap of r is near +-1 by construction: no verdict


def correlation_cell(c, direction: str = "lower", n_cases: int | None = None) -> str:
    """A bootstrap correlation ``(r, lo, hi)`` as a cell with its verdict on the sign: holds when the 95%
    interval lies on the claimed side of 0 (uncorrected for other comparisons). With fewer than
    ``MIN_CORRELATION_CASES`` cases no verdict: a resample of two or three distinct points has r near +-1."""
    if c is None:
        return "n/a (no spread)"
    r, lo, hi = c
    n = f", n = {n_cases} regularizers" if n_cases else ""
    if n_cases is not None and n_cases < MIN_CORRELATION_CASES:
        return f"r = {r:.2f} [{lo:.2f}, {hi:.2f}]{n}: too few cases for a verdict"
    side = (hi < 0) if direction == "lower" else (lo > 0)
    other = (lo > 0) if direction == "lower" else (hi < 0)
    v = "holds" if side else "the opposite holds" if other else "undecided"
    return f"r = {r:.2f} [{lo:.2f}, {hi:.2f}]{n}: {v}"


def distinct_cases(letters: dict) -> list:
    """The letters of ``letters`` ({letter: regularizer name}) with each function counted once: a letter whose
    regularizer is ``SAME_FUNCTION``'s second name is dropped when its twin is among the letters."""
    from manualbp.functional.regularizers import SAME_FUNCTION
    names = set(letters.values())
    return [c for c, name in letters.items() if not (name in SAME_FUNCTION and SAME_FUNCTION[name] in names)]


def bootstrap_correlation_runs(cases, n_boot: int = 5000, seed: int = 0):
    """Pearson r between the case means of x and y, [(x values of the case's runs, y values), ...], with a 95%
    percentile interval from a two-level bootstrap: resample the cases, then the runs within each drawn case,
    so the noise between runs of one case widens the interval (with one run per case it is the pairs
    bootstrap). Returns (r, lo, hi); NaN bounds when no resample has spread."""
    cases = [(np.asarray(x, float), np.asarray(y, float)) for x, y in cases]
    if any(len(x) != len(y) or len(x) == 0 for x, y in cases):
        raise ValueError("bootstrap_correlation_runs: every case needs one or more runs with an x and a y each")
    mx = np.array([x.mean() for x, _ in cases])
    my = np.array([y.mean() for _, y in cases])
    r = float(np.corrcoef(mx, my)[0, 1])
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_boot):
        bx, by = [], []
        for i in rng.integers(0, len(cases), len(cases)):
            x, y = cases[i]
            j = rng.integers(0, len(x), len(x)) if len(x) > 1 else slice(None)   # one run: nothing to draw
            bx.append(x[j].mean())
            by.append(y[j].mean())
        bx, by = np.array(bx), np.array(by)
        if np.ptp(bx) > 0 and np.ptp(by) > 0:
            rs.append(np.corrcoef(bx, by)[0, 1])
    lo, hi = np.percentile(rs, [2.5, 97.5]) if rs else (float("nan"), float("nan"))
    return r, float(lo), float(hi)
