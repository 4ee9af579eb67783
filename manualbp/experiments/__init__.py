"""Experiments as data: each module defines PRESETS (configs, a fast "quick" default and the
paper's "full" configuration), GRID (the sweep's axes) and optionally ``report(sweep_dir, runs)``
which writes the experiment's figures and tables from finished runs."""
from __future__ import annotations

import importlib

EXPERIMENTS = {"zca": "manualbp.experiments.zca"}


def get_experiment(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


def preset(name: str, preset_name: str) -> dict:
    exp = get_experiment(name)
    if preset_name not in exp.PRESETS:
        raise ValueError(f"experiment {name!r} has no preset {preset_name!r}; choose one of {sorted(exp.PRESETS)}")
    cfg = dict(exp.PRESETS[preset_name])
    cfg["experiment"], cfg["preset"] = name, preset_name
    return cfg
