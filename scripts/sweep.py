#!/usr/bin/env python
"""Run an experiment's sweep: its grid expanded into independent runs, executed by a pool of
worker processes; finished runs are skipped, interrupted ones resume. Prints a summary table and
writes the experiment's report (figures, tables) into the sweep folder.

    python scripts/sweep.py zca                              # quick preset, one worker
    python scripts/sweep.py zca --preset sound --workers 2    # two worker processes
    python scripts/sweep.py zca --devices cuda:0,cuda:1 --workers 2   # two per GPU
    python scripts/sweep.py zca --list > runs.txt            # one command per run, for a cluster engine
    python scripts/sweep.py zca --engine ray                 # Ray tasks on a local Ray instance
    python scripts/sweep.py zca --engine ray --address auto --gpus-per-run 0.25   # on a running Ray cluster

Exit status: 0 when every run finished, else the number of failed runs (at most 100); 2 for a bad
command line or configuration, before any run starts.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.train import cli_overrides, common_args  # noqa: E402

from manualbp.data import DataError  # noqa: E402
from manualbp.experiments import get_experiment, preset  # noqa: E402
from manualbp.train import ConfigError  # noqa: E402
from manualbp.train.sweep import expand, prepare_data, run_sweep, run_sweep_ray, summary_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("--sweep-dir", help="default runs/<experiment>/<preset>")
    ap.add_argument("--workers", type=int, default=1, help="worker processes per device (default 1)")
    ap.add_argument("--devices", default=None, help="comma-separated devices for the pool (default: cuda if "
                                                    "present, else cpu)")
    ap.add_argument("--only", help="only runs whose name contains this")
    ap.add_argument("--run", help="exactly one run, by name (what each --list line calls)")
    ap.add_argument("--seeds", help="comma-separated seeds replacing the grid's seed axis")
    ap.add_argument("--list", action="store_true", help="print one command per run (JSON lines) and exit")
    ap.add_argument("--no-report", action="store_true", help="skip the experiment's figures and tables")
    ap.add_argument("--engine", choices=("pool", "ray"), default="pool",
                    help="pool: local worker processes (default); ray: one Ray task per run")
    ap.add_argument("--address", help="--engine ray: a running Ray cluster (auto, ray://host:port); default: start a "
                                      "local Ray instance")
    ap.add_argument("--cpus-per-run", type=float, default=1.0, help="--engine ray: CPUs per run (default 1)")
    ap.add_argument("--gpus-per-run", type=float, default=None,
                    help="--engine ray: GPUs per run; fractions pack runs onto one GPU (default: 1 when a CUDA "
                         "device is present, else 0)")
    ap.add_argument("--max-retries", type=int, default=3,
                    help="--engine ray: retries of a run whose worker process died (it resumes from its checkpoint)")
    args = ap.parse_intermixed_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.engine == "pool" and (args.address or args.gpus_per_run is not None):
        ap.error("--address and --gpus-per-run are for --engine ray")
    if args.cpus_per_run <= 0 or (args.gpus_per_run is not None and args.gpus_per_run < 0) or args.max_retries < 0:
        ap.error("--cpus-per-run must be > 0, --gpus-per-run and --max-retries >= 0")
    exp = get_experiment(args.experiment)
    try:   # an experiment's grid may depend on the preset (its grid(preset) function), else GRID
        grid = exp.grid(args.preset) if hasattr(exp, "grid") else exp.GRID
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    grid = [dict(g) for g in grid] if isinstance(grid, list) else dict(grid)   # a list of grids: their union
    if args.seeds:
        for g in grid if isinstance(grid, list) else [grid]:
            g["seed"] = [int(s) for s in args.seeds.split(",")]
    sweep_dir = Path(args.sweep_dir or ROOT / "runs" / args.experiment / args.preset)
    try:
        specs = expand(preset(args.experiment, args.preset), grid, sweep_dir, cli_overrides(args), args.only)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.run:
        specs = [s for s in specs if s.name == args.run]
        if not specs:
            print(f"error: no run named {args.run!r} in this sweep (see --list)", file=sys.stderr)
            return 2
    if args.list:
        base = [sys.executable, str(ROOT / "scripts" / "sweep.py"), *(argv if argv is not None else sys.argv[1:])]
        base = [a for a in base if a != "--list"]
        for s in specs:
            print(json.dumps({"name": s.name, "run_dir": s.run_dir,
                              "command": " ".join(shlex.quote(a) for a in base + ["--run", s.name, "--no-report"])}))
        return 0
    import torch
    try:
        if not args.run:   # one run (a SLURM array task) loads its data itself
            prepare_data([s for s in specs if not Path(s.run_dir, "DONE.json").is_file()])
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.engine == "ray":
            gpus = args.gpus_per_run if args.gpus_per_run is not None else float(torch.cuda.is_available())
            where = args.address or "a local Ray instance"
            print(f"{len(specs)} runs in {sweep_dir} as Ray tasks on {where} ({args.cpus_per_run:g} CPU, {gpus:g} GPU "
                  "per run)", flush=True)
            results = run_sweep_ray(specs, args.address, args.cpus_per_run, gpus, args.max_retries)
        else:
            devices = args.devices.split(",") if args.devices else ["cuda" if torch.cuda.is_available() else "cpu"]
            print(f"{len(specs)} runs in {sweep_dir} on {devices} x {args.workers} worker(s)", flush=True)
            results = run_sweep(specs, devices, args.workers)
    except (DataError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + summary_table(results))
    failed = [r for r in results if r[1] == "FAILED"]
    if failed:
        print(f"{len(failed)} of {len(results)} runs failed", file=sys.stderr)
    if hasattr(exp, "report") and not args.no_report and not args.run:
        done = [s for s, r in zip(specs, results) if r[2] is not None]
        try:
            for line in exp.report(sweep_dir, done):
                print(line)
        except (DataError, ValueError, OSError) as e:   # e.g. the data the report reads is gone
            print(f"error: the report failed: {e}", file=sys.stderr)
            return max(2, min(len(failed), 100))
    return min(len(failed), 100)


if __name__ == "__main__":
    sys.exit(main())
