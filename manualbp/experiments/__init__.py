"""Experiments as data: each module of this package is one experiment (``weights_pov.py`` is
``weights-pov``) and defines PRESETS (configs: a fast "quick" default, "article" (the article's code,
errors included) beside "sound" (the errors fixed), and their CPU-sized fractions), GRID (the
sweep's axes) and optionally ``report(sweep_dir, runs)``, which writes the experiment's figures and
tables from finished runs. Adding an experiment is adding a module (plus its Makefile target and
page in docs/experiments/); nothing else lists them."""
from __future__ import annotations

import importlib
import pkgutil

HELPERS = {"report"}   # shared helper modules, not experiments


def _discover() -> dict[str, str]:
    return {m.name.replace("_", "-"): f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_") and m.name not in HELPERS}


EXPERIMENTS = _discover()


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
