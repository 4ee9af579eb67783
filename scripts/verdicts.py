#!/usr/bin/env python
"""The verdict table of an experiment: each of its article's claims under the ``article`` preset's runs,
under the ``sound`` preset's runs, and what the article said, from two finished (or partly finished)
sweep folders.

    python scripts/verdicts.py weights-pov --article runs/weights-pov/article-cpu --sound runs/weights-pov/sound-cpu

The presets are read from the runs' config.json; the table is printed and written to --out
(default: verdicts.md in the sound sweep's folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from manualbp.experiments import get_experiment, preset  # noqa: E402
from manualbp.train.sweep import expand  # noqa: E402


def sweep_specs(experiment: str, folder: Path) -> list:
    """The specs of the sweep in ``folder`` (its preset read from a run's config.json)."""
    configs = sorted(folder.glob("*/config.json"))
    if not configs:
        raise ValueError(f"{folder}: no run folders with a config.json; give the folder a sweep wrote (--sweep-dir)")
    name = json.loads(configs[0].read_text())["preset"]
    exp = get_experiment(experiment)
    grid = exp.grid(name) if hasattr(exp, "grid") else exp.GRID
    return expand(preset(experiment, name), grid, folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment")
    ap.add_argument("--article", required=True, type=Path, help="the article preset's sweep folder")
    ap.add_argument("--sound", required=True, type=Path, help="the sound preset's sweep folder")
    ap.add_argument("--out", type=Path, help="default: <sound folder>/verdicts.md")
    args = ap.parse_args(argv)
    exp = get_experiment(args.experiment)
    if not hasattr(exp, "verdicts"):
        print(f"error: experiment {args.experiment!r} has no verdict table", file=sys.stderr)
        return 2
    try:
        lines = exp.verdicts(sweep_specs(args.experiment, args.article), sweep_specs(args.experiment, args.sound))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.sound / "verdicts.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
