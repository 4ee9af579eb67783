"""Run configurations: nested dicts built from a base, an experiment preset and ``key=value``
overrides, validated before anything runs."""
from __future__ import annotations

import ast
import copy
import json

BASE: dict = {
    "experiment": "custom",
    "preset": "custom",
    "task": "classification",
    "seed": 0,
    "epochs": 1,
    "batch_size": 100,
    "eval_batch_size": None,          # None: batch_size
    "device": "auto",                 # auto (CUDA when present), cpu, cuda, cuda:N
    "data": {"name": "fashion_mnist", "root": None, "download": False, "train_limit": None, "test_limit": None},
    "model": {"name": "mlp"},         # name + constructor keyword arguments
    "optim": {"name": "Adam", "lr": 1e-3},  # torch.optim class name (or "module:Class") + its arguments
    "schedule": {"name": None},       # a torch.optim.lr_scheduler class name + arguments, stepped per epoch
    "regularizer": {"name": "none", "lam": 0.0},  # lam * sum R(w) over every weight (params with >1 dim)
    "log": {"probe_every": 0,         # 0: off; "epoch": last batch of each epoch; N: every N steps
            "histograms": True, "progress": True, "progress_every": 50},
}
FREE_FORM = {"model", "optim", "schedule"}   # sub-dicts whose keys are passed on to a constructor


class ConfigError(ValueError):
    pass


def merge(base: dict, update: dict, path: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are errors except in free-form sections."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{path}{k}"
        if k not in out and path.split(".")[0] not in FREE_FORM:
            known = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {key!r}; known keys here: {known}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if path == "" and k in FREE_FORM and "name" in v and v["name"] != out[k].get("name"):
                out[k] = {}  # a different model / optimizer: drop the other one's arguments
            out[k] = merge(out[k], v, key + ".")
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str):
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'None'/'null' -> None, '[1,2]' -> [1, 2], else the string
    (so 'none', a name used by several settings, stays a string)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if text.strip() in ("None", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items) -> dict:
    """['model.norm=zca_dim', 'epochs=3'] -> {'model': {'norm': 'zca_dim'}, 'epochs': 3}."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. model.norm=zca_dim)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p!r}")
        d[parts[-1]] = parse_value(value)
    return out


def validate(cfg: dict) -> dict:
    def positive_int(key, v, allow_none=False):
        if v is None and allow_none:
            return
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{key} must be a positive integer, got {v!r}")
    positive_int("epochs", cfg["epochs"])
    positive_int("batch_size", cfg["batch_size"])
    positive_int("eval_batch_size", cfg["eval_batch_size"], allow_none=True)
    positive_int("data.train_limit", cfg["data"]["train_limit"], allow_none=True)
    positive_int("data.test_limit", cfg["data"]["test_limit"], allow_none=True)
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool) or cfg["seed"] < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
    dev = cfg["device"]
    if not isinstance(dev, str) or not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    pe = cfg["log"]["probe_every"]
    if not (pe == "epoch" or (isinstance(pe, int) and not isinstance(pe, bool) and pe >= 0)):
        raise ConfigError(f"log.probe_every must be 0 (off), 'epoch' or a positive step count, got {pe!r}")
    lam = cfg["regularizer"]["lam"]
    if not isinstance(lam, (int, float)) or lam < 0:
        raise ConfigError(f"regularizer.lam must be a number >= 0, got {lam!r}")
    lr = cfg["optim"].get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or not lr > 0):
        raise ConfigError(f"optim.lr must be a number > 0, got {lr!r}")
    return cfg


def resolve(preset: dict, overrides: dict | None = None) -> dict:
    """BASE <- preset <- overrides, validated."""
    return validate(merge(merge(BASE, preset), overrides or {}))


def canonical(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def differences(a: dict, b: dict, path: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{path}{k}.")
        elif va != vb:
            out.append(f"{path}{k}: {va!r} -> {vb!r}")
    return out
