#!/usr/bin/env python
"""Tables of the curvature instrument's rows (``log.curvature``) over the runs of one or two sweeps: per
group of runs (a label of the run names), the top eigenvalue and the trace of the chosen term at the chosen
epoch, as mean, sd, n and the Student-t 95% interval; and against a baseline group, the differences paired
by seed, with the verdict "higher" / "lower" only where the interval excludes 0, uncorrected and again after
Holm's correction over the table's comparisons. A group whose regularizer is the same function as another
group's (``SAME_FUNCTION``, the same weight, the config otherwise equal) repeats that group's numbers:
its row says so and it is left out
of the correction's family, so each function is counted once.

    python scripts/curvature_report.py SWEEP_DIR --axes bn,case --group case --by bn --baseline Z
    python scripts/curvature_report.py SWEEP_A SWEEP_B --names dilated,control --epochs 1,5,10,20
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from manualbp.experiments.report import family, markdown_table, mean_ci
from manualbp.functional.regularizers import SAME_FUNCTION


def _runs(sweep: Path, name: str, axes: list) -> list[dict]:
    """[{labels, rows}] of the finished runs of a sweep: a run folder's name is its labels joined by '-'
    (``seed<k>`` the seed, the other parts named by ``axes`` in order); label ``sweep`` is ``name``."""
    out = []
    for d in sorted(p for p in sweep.iterdir() if (p / "DONE.json").is_file() and (p / "instruments.jsonl").is_file()):
        rows = [json.loads(line) for line in (d / "instruments.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("instrument") == "curvature"]
        parts = d.name.split("-")
        rest = [p for p in parts if not p.startswith("seed")]
        labels = {"sweep": name, "run": "-".join(rest),
                  "seed": next((int(p[4:]) for p in parts if p.startswith("seed") and p[4:].isdigit()), 0)}
        labels.update(zip(axes, rest))
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else None
        out.append({"dir": d, "labels": labels, "rows": rows, "config": cfg})
    return out


def _one_function(cfg: dict | None) -> str | None:
    """A run's config as text with a ``SAME_FUNCTION`` second name replaced by its first name (None without a
    config or a named regularizer): two runs whose texts are equal train the same function the same way."""
    reg = (cfg or {}).get("regularizer")
    if not isinstance(reg, dict) or "name" not in reg:
        return None
    return json.dumps({**cfg, "regularizer": {**reg, "name": SAME_FUNCTION.get(reg["name"], reg["name"])}},
                      sort_keys=True)


def _twins(sel, group: str) -> dict:
    """{group value: the group value it repeats} among the runs ``sel``: every run of the group names a
    ``SAME_FUNCTION`` second name, the other group has a run for each of its pairings (the seed), and each such
    pair of configs is equal once the second name is replaced by the first (same weight, same everything else)."""
    by_group: dict = {}
    for r in sel:
        by_group.setdefault(r["labels"][group], {})[_pair_key(r, group)] = r
    out = {}
    for g, runs in by_group.items():
        if not all(isinstance((r.get("config") or {}).get("regularizer"), dict)
                   and r["config"]["regularizer"].get("name") in SAME_FUNCTION for r in runs.values()):
            continue
        for h, other in by_group.items():
            if h != g and set(runs) <= set(other) and all(
                    _one_function(runs[k].get("config")) == _one_function(other[k].get("config"))
                    and other[k].get("config") != runs[k].get("config") for k in runs):
                out[g] = h
    return out


def _value(run, key, term, epoch):
    """The run's value at ``epoch`` (None: its last row; a pair (first, last): the mean over those epochs)."""
    if isinstance(epoch, tuple):
        vals = [r[key] for r in run["rows"] if r["term"] == term and epoch[0] <= r["epoch"] <= epoch[1]]
        return sum(vals) / len(vals) if vals else None
    rows = [r for r in run["rows"] if r["term"] == term and (epoch is None or r["epoch"] == epoch)]
    return rows[-1][key] if rows else None


def _fmt(m, sd, hw, n, digits=4):
    if n < 2:
        return f"{m:.{digits}g} (one run)", ""
    return f"{m:.{digits}g} ± {sd:.2g}", f"[{m - hw:.{digits}g}, {m + hw:.{digits}g}]"


def _pair_key(run, group: str):
    """What pairs a run with its baseline: every label but the group's and the run name."""
    return tuple(sorted((k, str(v)) for k, v in run["labels"].items() if k not in (group, "run", "sweep")
                        or (k == "sweep" and group != "sweep")))


def table(runs, group: str, by: str | None, baseline: str | None, key: str, term: str, epoch) -> str:
    """One row per (by, group) value: mean ± sd, n, interval; and the difference to ``baseline`` paired by
    every other label (the seed), with a nominal (uncorrected) 95% verdict and the verdict after Holm's
    correction over this table's comparisons (each table its own family). A group that repeats another's
    function (``_twins``) is named and left out of the family; so is one that repeats the baseline's."""
    methods = {(r2.get("hvp"), str(r2.get("params", "all"))) for r in runs for r2 in r["rows"]}
    if len(methods) > 1:
        raise ValueError(f"the runs' curvature rows were measured differently {sorted(methods)} (Hessian-vector "
                         "products, parameter blocks); compare runs measured alike")
    arms = sorted({r["labels"].get(by) for r in runs}) if by else [None]
    out, claims = [], []   # claims: (row index, paired differences) of the comparisons in Holm's family
    for arm in arms:
        sel = [r for r in runs if by is None or r["labels"].get(by) == arm]
        groups = sorted({r["labels"][group] for r in sel}, key=str)
        seen = {}
        for r in sel:
            k = (r["labels"][group], _pair_key(r, group))
            if k in seen:
                raise ValueError(f"runs {seen[k]} and {r['dir']} have the same labels {k}; name the axis that "
                                 "tells them apart (--axes, --by)")
            seen[k] = r["dir"]
        twins = _twins(sel, group)
        base = {_pair_key(r, group): _value(r, key, term, epoch) for r in sel
                if baseline is not None and r["labels"][group] == baseline}
        tested = {}   # group value -> (row index, paired differences), this arm
        for g in groups:
            vals = {_pair_key(r, group): _value(r, key, term, epoch) for r in sel if r["labels"][group] == g}
            vals = {s: v for s, v in vals.items() if v is not None}
            if not vals:
                continue
            m, sd, hw, n = mean_ci(list(vals.values()))
            cell, ci = _fmt(m, sd, hw, n)
            diff, verdict = "", ""
            if baseline is not None and g != baseline:
                paired = [vals[s] - base[s] for s in vals if base.get(s) is not None]
                if paired:
                    dm, dsd, dhw, dn = mean_ci(paired)
                    d_cell, d_ci = _fmt(dm, dsd, dhw, dn)
                    diff = f"{d_cell} {d_ci}".strip()
                    verdict = ("higher" if dm - dhw > 0 else "lower" if dm + dhw < 0 else "not separated") \
                        if dn >= 2 else "one run"
                    if dn >= 2:
                        tested[g] = (len(out), paired)
            out.append([*([arm] if by else []), g, n, cell, ci, *([diff, verdict, ""] if baseline else [])])
        for g, (i, paired) in tested.items():
            same = (baseline if baseline in (twins.get(g), *[h for h, o in twins.items() if o == g]) else
                    twins[g] if twins.get(g) in tested else None)   # a repeat of a counted group or the baseline
            if same is None:
                claims.append((i, paired))
            else:
                out[i][-1] = f"same function as {same}: not counted"
    if claims:
        for (i, _), f in zip(claims, family([(d, "higher") for _, d in claims])):
            out[i][-1] = "higher" if f is True else "lower" if f == "opposite" else "not separated"
    head = [*([by] if by else []), group, "n", f"{key} ({term}) mean ± sd", "95% t-interval",
            *([f"paired difference to {baseline} [95% t-interval]", "verdict (nominal 95%, uncorrected)",
               f"after Holm's correction over this table's {len(claims)}"] if baseline else [])]
    return markdown_table(head, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--names", help="comma-separated names of the sweeps (label 'sweep'); default: folder names")
    ap.add_argument("--axes", default="", help="comma-separated names of the run names' non-seed parts, in order "
                    "(e.g. bn,case for weights-pov's bn-A-seed0)")
    ap.add_argument("--group", default="sweep", help="the label whose values are compared (default: sweep)")
    ap.add_argument("--by", default=None, help="a label to split the table by (e.g. bn)")
    ap.add_argument("--baseline", default=None, help="the group value the others are compared with, paired by seed")
    ap.add_argument("--term", default="data", choices=("data", "objective"))
    ap.add_argument("--epochs", default=None, help="comma-separated epochs, or ranges first-last (each run's mean "
                    "over those epochs' rows); default: the last row of each run")
    args = ap.parse_args(argv)
    names = args.names.split(",") if args.names else [s.name for s in args.sweeps]
    axes = [a for a in args.axes.split(",") if a]
    runs = [r for s, n in zip(args.sweeps, names) for r in _runs(s, n, axes)]
    if not runs:
        print("no finished runs with curvature rows", file=sys.stderr)
        return 1
    epochs = [tuple(int(x) for x in e.split("-")) if "-" in e else int(e) for e in args.epochs.split(",")] \
        if args.epochs else [None]
    for epoch in epochs:
        for key in ("top_eigenvalue", "trace"):
            where = "final row" if epoch is None else (f"mean over epochs {epoch[0]}-{epoch[1]}"
                                                       if isinstance(epoch, tuple) else f"epoch {epoch}")
            print(f"\n{key}, {args.term} term, {where}\n")
            print(table(runs, args.group, args.by, args.baseline, key, args.term, epoch))
    hvps = sorted({r2["hvp"] for r in runs for r2 in r["rows"]})
    print(f"\n{len(runs)} runs; Hessian-vector products by {', '.join(hvps)}")
    if args.baseline is not None and len(epochs) * 2 > 1:
        print(f"Holm's correction is applied within each table; across the {len(epochs) * 2} tables none is applied.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
