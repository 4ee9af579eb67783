#!/usr/bin/env python
"""A sweep's finished runs by seed: one run name prefix's final metric per seed with its mean, sd
and 95% Student-t interval; or, with two prefixes, their difference paired by seed.

    python scripts/paired.py runs/zca/full zca_example                   # per seed, mean [t-interval]
    python scripts/paired.py runs/zca/full zca_dim_running zca_dim       # A - B paired by seed
    python scripts/paired.py runs/zca/full dbn none --metric train_acc --scale 100

Runs are the folders ``<prefix>-seed<S>`` of the sweep folder that hold ``DONE.json``; the metric
is a key of its ``final`` row (default ``test_acc``), multiplied by ``--scale`` (default 100:
percent).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manualbp.experiments.report import mean_ci  # noqa: E402


def by_seed(sweep: Path, prefix: str, metric: str, scale: float) -> dict[int, float]:
    out = {}
    for d in sweep.glob(f"{prefix}-seed*"):
        m = re.fullmatch(rf"{re.escape(prefix)}-seed(\d+)", d.name)
        done = d / "DONE.json"
        if m and done.is_file():
            final = json.loads(done.read_text())["final"]
            if metric not in final:
                raise SystemExit(f"error: {done} has no metric {metric!r}; it has {sorted(final)}")
            out[int(m.group(1))] = scale * final[metric]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir")
    ap.add_argument("a", help="run name prefix (the part before -seedS)")
    ap.add_argument("b", nargs="?", help="a second prefix: report A - B paired by seed")
    ap.add_argument("--metric", default="test_acc")
    ap.add_argument("--scale", type=float, default=100.0)
    args = ap.parse_args(argv)
    sweep = Path(args.sweep_dir)
    a = by_seed(sweep, args.a, args.metric, args.scale)
    if not a:
        print(f"error: no finished runs {args.a}-seed* in {sweep}", file=sys.stderr)
        return 2
    if args.b:
        b = by_seed(sweep, args.b, args.metric, args.scale)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            print(f"error: no seed with finished runs of both {args.a} and {args.b} in {sweep}", file=sys.stderr)
            return 2
        values = [a[s] - b[s] for s in seeds]
        what = f"{args.a} - {args.b}, {args.metric}"
    else:
        seeds = sorted(a)
        values = [a[s] for s in seeds]
        what = f"{args.a}, {args.metric}"
    for s, v in zip(seeds, values):
        print(f"seed {s}: {v:.2f}")
    m, sd, ci, n = mean_ci(values)
    interval = f"[{m - ci:.2f}, {m + ci:.2f}]" if n > 1 else "-"
    print(f"{what}: n {n}, mean {m:.2f}, sd {sd:.2f}, 95% t-interval {interval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
