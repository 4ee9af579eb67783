#!/usr/bin/env python
"""Train one run of an experiment: a preset plus overrides.

    python scripts/train.py zca                        # the quick preset
    python scripts/train.py zca --preset sound --seed 1 --device cuda model.norm=iter_norm

Re-running the same command on a finished run does nothing; on an interrupted run it resumes.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from manualbp.data import DataError  # noqa: E402
from manualbp.experiments import EXPERIMENTS, preset  # noqa: E402
from manualbp.train import ConfigError, NonFiniteLoss, RunDir, RunDirError, parse_overrides, resolve, train  # noqa: E402


def common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("experiment", choices=sorted(EXPERIMENTS))
    ap.add_argument("--preset", default="quick", help="quick (default, minutes on a CPU) or another of the "
                    "experiment's presets (sound, article, full, ...: docs/experiments/)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    ap.add_argument("--data-root", help="folder holding the datasets (default $MANUALBP_DATA, else ./data)")
    ap.add_argument("--download", action="store_true", help="download missing data (torchvision's download)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. model.norm=center")


def cli_overrides(args) -> dict:
    ov = parse_overrides(args.overrides)
    for key, val in (("epochs", args.epochs), ("device", args.device), ("seed", getattr(args, "seed", None))):
        if val is not None:
            ov[key] = val
    if args.data_root is not None:
        ov.setdefault("data", {})["root"] = args.data_root
    if args.download:
        ov.setdefault("data", {})["download"] = True
    return ov


def run_name(args) -> str:
    parts = [args.preset] + [re.sub(r"[^A-Za-z0-9_.=-]+", "_", o) for o in args.overrides]
    if args.epochs is not None:
        parts.append(f"epochs{args.epochs}")
    return "-".join(parts + [f"seed{args.seed}"])


def _episodes(args) -> int:
    import json

    from manualbp.train.episodes import train_episodes
    run_dir = Path(args.run_dir or ROOT / "runs" / args.experiment / f"{run_name(args)}-episodes{args.episodes}")
    try:
        cfg = resolve(preset(args.experiment, args.preset), cli_overrides(args))
        seeds = list(range(args.seed, args.seed + args.episodes))
        with RunDir(run_dir).hold():   # one process per folder, as for a single run
            rows = train_episodes(cfg, seeds)
            tmp = run_dir / "episodes.json.tmp"
            tmp.write_text(json.dumps({"config": cfg, "seeds": seeds, "metrics": rows}, indent=1))
            tmp.replace(run_dir / "episodes.json")
    except (ConfigError, DataError, FloatingPointError, RunDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s, r in zip(seeds, rows):
        print(f"seed {s}: test acc {r[-1]['test_acc']:.4f}, train acc {r[-1]['train_acc']:.4f}")
    print(f"done: {run_dir / 'episodes.json'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="run folder (default runs/<experiment>/<preset>-<overrides>-seed<seed>)")
    ap.add_argument("--episodes", type=int, default=1,
                    help="K > 1: train K episodes (seeds seed .. seed+K-1) stacked in one process with torch.func "
                         "(manualbp.train.episodes; no checkpoints); writes episodes.json in the run folder")
    args = ap.parse_intermixed_args(argv)
    if args.episodes < 1:
        ap.error("--episodes must be at least 1")
    if args.episodes > 1:
        return _episodes(args)
    try:
        cfg = resolve(preset(args.experiment, args.preset), cli_overrides(args))
        run_dir = args.run_dir or ROOT / "runs" / args.experiment / run_name(args)
        from manualbp.train.sweep import flatten
        keys = ["seed"] + sorted(k for k in flatten(cli_overrides(args)) if k not in ("seed", "device"))
        summary = train(cfg, run_dir, hparams=keys)
    except (ConfigError, DataError, RunDirError, NonFiniteLoss, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    f = summary["final"]
    print(f"done: {run_dir}: test acc {f['test_acc']:.4f}, train acc {f['train_acc']:.4f} after {f['epoch']} epochs "
          f"({summary['wall_time_s']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
