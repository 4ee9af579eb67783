"""Shared helpers for experiment reports: one figure style, run loading, mean/spread tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    pyplot.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                            "axes.titlesize": 9})
    return pyplot


def load_runs(specs) -> list[dict]:
    """[{name, labels, metrics (list of rows), done}] for finished runs."""
    out = []
    for s in specs:
        d = Path(s.run_dir)
        if not (d / "DONE.json").is_file():
            continue
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        out.append({"name": s.name, "labels": s.labels, "metrics": rows,
                    "done": json.loads((d / "DONE.json").read_text())})
    return out


def group(runs, axis="variant") -> dict:
    g: dict = {}
    for r in runs:
        g.setdefault(r["labels"][axis], []).append(r)
    return g


def mean_ci(values, z=1.96):
    """(mean, sample std, half-width of the normal-approximation 95% interval, n)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    return float(v.mean()), sd, (z * sd / math.sqrt(n) if n > 1 else float("nan")), n


def markdown_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def save(fig, path: Path, writer=None, tag=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    if writer is not None:
        writer.add_figure(tag or path.stem, fig)
    import matplotlib.pyplot as pyplot
    pyplot.close(fig)
