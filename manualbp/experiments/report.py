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
