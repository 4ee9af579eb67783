"""Run configurations: nested dicts built from a base, an experiment preset and ``key=value``
overrides, validated before anything runs."""
from __future__ import annotations

import ast
import copy
import json

BASE: dict = {
    "experiment": "custom",
    "preset": "custom",
    "task": "classification",         # classification | segmentation (manualbp.train.tasks.TASKS)
    "seed": 0,                        # data order, gradient noise and everything else random
    "init_seed": None,                # weight initialisation (None: seed); equal init_seeds give equal initial weights
    "init_seed_offset": 0,            # added to that seed (the optimizers article's cases draw their own weights)
    "epochs": 1,                      # with phases: their sum (set automatically)
    "batch_size": 100,
    "eval_batch_size": None,          # None: batch_size
    "device": "auto",                 # auto (CUDA when present), cpu, cuda, cuda:N
    "dtype": "float32",               # float32 or float64: parameters, buffers and data
    "data": {"name": "fashion_mnist", "root": None, "download": False, "train_limit": None, "test_limit": None,
             "size": 96,              # side length for penn_fudan / mall
             "shuffle": True,         # false: every epoch in the file's order (the articles' code)
             "options": {}},          # a loader's own settings (penn_fudan: split_seed, n_train; mnist: validation)
    "train_metrics": "running",       # running: the epoch's batches as they trained; full_pass: a pass after the epoch;
                                      # full_pass_accuracy: the running loss, the accuracy from a pass after the epoch
    "model": {"name": "mlp"},         # name + constructor keyword arguments
    "optim": {"name": "Adam", "lr": 1e-3},  # torch.optim class name (or "module:Class") + its arguments
    "schedule": {"name": None},       # a torch.optim.lr_scheduler class name + arguments, stepped per epoch
    "loss": "softmax_cross_entropy",  # classification: softmax_cross_entropy, sum_squared_error or
                                      # softmax_binary_cross_entropy (manualbp.train.tasks.CLASSIFICATION_LOSSES)
    "metric_loss": None,              # classification: the loss reported as train/test loss (None: ``loss``)
    "regularizer": {"name": "none", "lam": 0.0,   # lam * sum R(w) over every weight (params with >1 dim)
                    "article_grad": False},       # the articles' coded R' (log_sq, ratio), not R's derivative
    "objective": None,                # terms of the task's objective (None: the task's default, data + regularizer)
    "phases": None,                   # None: one phase; or a list of PHASE_KEYS dicts, run in order
    "grad_transforms": [],            # per-step gradient transforms (manualbp.optim.transforms), e.g. gradient noise
    "check_finite_every": 20,         # steps between the (host-syncing) checks for a NaN/Inf loss
    "compile": False,                 # torch.compile(fullgraph=True) of each training step's forward and loss
    "log": {"probe_every": "epoch",   # 0: off; "epoch": last batch of each epoch; N: every N steps; "after_epoch": an
            #                             extra forward and backward on the epoch's last batch after its last update
            "probe_moment_step": False,   # after_epoch: that gradient also enters the optimizer's first moment
            #                               (m <- b1 m + (1 - b1) g, kept in its state: the gradient-pov article's code)
            "input_grad_scale": 1.0,    # the probes' passed gradients (input_grad) multiplied by this (the gradient-pov
            #                             article's script passed B times the gradient of its mean cost: 20)
            "first_input_grad": False,  # on probe steps the batch requires grad: layer 1's passed gradient recorded
            "per_example": False,       # on probe steps: per-example gradient statistics (manualbp.train.instruments)
            "optimizer_state": False,   # on probe steps: second moment, update-to-weight ratio, gradient norms
            "spectra": "off",           # weight spectra: "off", "end" (after the last epoch) or "epoch"
            "curvature": False,         # true: on probe steps, "end": after the last epoch: the Hessian's top
            #                             eigenvalue and trace (data term, objective; manualbp.train.instruments)
            "curvature_lanczos_steps": 20,      # Lanczos iterations (Hessian-vector products) for the top eigenvalue
            "curvature_hutchinson_samples": 20,  # Rademacher vectors for Hutchinson's trace estimate
            "curvature_hvp": "auto",    # "double_backward" (= "auto") or "finite_difference" (smooth models only)
            "curvature_params": "all",  # "all" or a list of parameter-name prefixes: the Hessian's block in those
            "histograms": True, "progress": True, "progress_every": 50},
}
# model.norm layers that normalise over the batch (beyond batch norm): no per-example gradients
BATCH_COUPLING_NORMS = ("center", "standardize", "zca_dim", "zca_example", "decorrelated_batch_norm", "dbn",
                        "iter_norm")
# sub-dicts whose keys are passed on to a constructor (which refuses unknown ones itself)
FREE_FORM = {"model", "optim", "schedule", "data.options"}
# values that an override replaces whole rather than merges into ({term: weight} objectives)
ATOMIC = {"objective"}
# a phase: its name, epochs, objective terms, the parameters it trains ("all" or name prefixes, e.g.
# ["enc", "proj"]), optimizer settings over the run's (a fresh optimizer per phase), an lr multiplier
# and schedule settings over the run's
PHASE_KEYS = {"name": None, "epochs": 1, "objective": None, "train": "all", "optim": {}, "lr_scale": 1.0,
              "schedule": {}}


class ConfigError(ValueError):
    """A configuration that cannot run: an unknown key or setting, a value of the wrong kind."""


def merge(base: dict, update: dict, path: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are errors except in free-form sections."""
    out = copy.deepcopy(base)
    if path == "model." and "norm" in update and update["norm"] != out.get("norm"):
        out["norm_kwargs"] = {}   # a different normalisation: drop the other one's settings
    free = any(path == f + "." or path.startswith(f + ".") for f in FREE_FORM)
    for k, v in update.items():
        key = f"{path}{k}"
        if isinstance(out.get(k), list) and isinstance(v, dict) and v and all(str(i).isdigit() for i in v):
            out[k] = _merge_list(out[k], v, key)   # phases.1.epochs=3: one element of a list
            continue
        if k not in out and not free:
            known = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {key!r}; known keys in this section: {known}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ATOMIC:
            if path == "" and k in FREE_FORM and "name" in v and v["name"] != out[k].get("name"):
                out[k] = {}  # a different model / optimizer: drop the other one's arguments
            out[k] = merge(out[k], v, key + ".")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge_list(items: list, update: dict, key: str) -> list:
    out = copy.deepcopy(items)
    for i, v in update.items():
        i = int(i)
        if i >= len(out):
            raise ConfigError(f"{key}.{i}: {key} has only {len(out)} entries (0-based)")
        out[i] = merge(out[i], v, f"{key}.{i}.") if isinstance(v, dict) and isinstance(out[i], dict) else v
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
    if not (pe in ("epoch", "after_epoch") or (isinstance(pe, int) and not isinstance(pe, bool) and pe >= 0)):
        raise ConfigError(f"log.probe_every must be 0 (off), 'epoch', 'after_epoch' or a positive step count, "
                          f"got {pe!r}")
    if cfg["log"]["curvature"] not in (False, True, "end"):
        raise ConfigError(f"log.curvature must be false, true (on probe steps) or 'end' (the final weights), got "
                          f"{cfg['log']['curvature']!r}")
    for key in ("per_example", "optimizer_state", "curvature"):
        if key == "curvature" and cfg["log"][key] == "end":
            continue
        if not isinstance(cfg["log"][key], bool):
            raise ConfigError(f"log.{key} must be true or false, got {cfg['log'][key]!r}")
        if cfg["log"][key] and not pe:
            raise ConfigError(f"log.{key}=true is computed on probe steps; set log.probe_every (epoch, after_epoch or "
                              f"a step count) or log.{key}=false")
    norm = cfg["model"].get("norm") if isinstance(cfg["model"], dict) else None
    if cfg["log"]["per_example"] is True and isinstance(norm, str) and norm in BATCH_COUPLING_NORMS:
        raise ConfigError(f"log.per_example=true: model.norm={norm!r} couples the examples of a batch (it normalises "
                          "or whitens over the batch), so per-example gradients are not defined for it (only batch "
                          "norm, with its statistics fixed); set log.per_example=false or another model.norm")
    scale = cfg["log"]["input_grad_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise ConfigError(f"log.input_grad_scale must be a finite number > 0 (1: the gradient of the objective; the "
                          f"gradient-pov article's script: the batch size), got {scale!r}")
    if not isinstance(cfg["log"]["first_input_grad"], bool):
        raise ConfigError(f"log.first_input_grad must be true or false, got {cfg['log']['first_input_grad']!r}")
    if not pe and (scale != 1 or cfg["log"]["first_input_grad"]):
        raise ConfigError("log.input_grad_scale and log.first_input_grad change what the probes record; set "
                          "log.probe_every (epoch, after_epoch or a step count), or leave them at 1 and false")
    for key in ("curvature_lanczos_steps", "curvature_hutchinson_samples"):
        v = cfg["log"][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"log.{key} must be an int >= 1, got {v!r}")
    cp = cfg["log"]["curvature_params"]
    if cp != "all" and not (isinstance(cp, list) and cp and all(isinstance(x, str) and x for x in cp)):
        raise ConfigError(f"log.curvature_params must be 'all' or a non-empty list of parameter-name prefixes (e.g. "
                          f"[\"layers.1\", \"layers.2\"]), got {cp!r}")
    if cfg["log"]["curvature_hvp"] not in ("auto", "double_backward", "finite_difference"):
        raise ConfigError(f"log.curvature_hvp must be 'auto', 'double_backward' or 'finite_difference', got "
                          f"{cfg['log']['curvature_hvp']!r}")
    if cfg["log"]["spectra"] not in ("off", "end", "epoch"):
        raise ConfigError(f"log.spectra must be 'off', 'end' or 'epoch', got {cfg['log']['spectra']!r}")
    if not isinstance(cfg["log"]["probe_moment_step"], bool):
        raise ConfigError(f"log.probe_moment_step must be true or false, got {cfg['log']['probe_moment_step']!r}")
    if cfg["log"]["probe_moment_step"] and pe != "after_epoch":
        raise ConfigError("log.probe_moment_step=true is a step of the after-epoch probe; set "
                          "log.probe_every=after_epoch (or probe_moment_step=false)")
    from manualbp.train.tasks import CLASSIFICATION_LOSSES
    if cfg["loss"] not in CLASSIFICATION_LOSSES:
        raise ConfigError(f"loss {cfg['loss']!r} is not a classification loss; choose one of "
                          f"{sorted(CLASSIFICATION_LOSSES)}")
    if cfg["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {cfg['dtype']!r}")
    if cfg["metric_loss"] is not None and cfg["task"] != "classification":
        raise ConfigError(f"metric_loss is for task=classification; task {cfg['task']!r} reports its own loss "
                          f"(set metric_loss=null)")
    if cfg["metric_loss"] is not None and cfg["metric_loss"] not in CLASSIFICATION_LOSSES:
        raise ConfigError(f"metric_loss {cfg['metric_loss']!r} is not a classification loss; choose None (report "
                          f"the trained loss) or one of {sorted(CLASSIFICATION_LOSSES)}")
    if cfg["train_metrics"] not in ("running", "full_pass", "full_pass_accuracy"):
        raise ConfigError(f"train_metrics must be 'running' (over the epoch's training batches), 'full_pass' (a "
                          f"pass over the training set after the epoch) or 'full_pass_accuracy' (the running loss, "
                          f"the accuracy from a pass after the epoch), got {cfg['train_metrics']!r}")
    for key, v in (("data.download", cfg["data"]["download"]), ("data.shuffle", cfg["data"]["shuffle"]),
                   ("log.histograms", cfg["log"]["histograms"]),
                   ("log.progress", cfg["log"]["progress"])):
        if not isinstance(v, bool):
            raise ConfigError(f"{key} must be true or false, got {v!r}")
    from manualbp.functional.regularizers import REGULARIZERS
    reg = cfg["regularizer"]["name"]
    if reg != "none" and reg not in REGULARIZERS:
        raise ConfigError(f"regularizer.name {reg!r} is not a regularizer; choose 'none' or one of "
                          f"{sorted(REGULARIZERS)}")
    if not isinstance(cfg["regularizer"]["article_grad"], bool):
        raise ConfigError(f"regularizer.article_grad must be true or false, got {cfg['regularizer']['article_grad']!r}")
    if cfg["regularizer"]["article_grad"] and (reg == "none" or REGULARIZERS[reg].article_grad is None):
        from manualbp.functional.regularizers import CODED
        raise ConfigError(f"regularizer.article_grad=true asks for the articles' coded derivative, but regularizer "
                          f"{reg!r} has none; those with one: {sorted(CODED)}. Set regularizer.article_grad=false.")
    lam = cfg["regularizer"]["lam"]
    if not isinstance(lam, (int, float)) or lam < 0:
        raise ConfigError(f"regularizer.lam must be a number >= 0, got {lam!r}")
    lr = cfg["optim"].get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or not lr > 0):
        raise ConfigError(f"optim.lr must be a number > 0, got {lr!r}")
    if cfg["init_seed"] is not None and (not isinstance(cfg["init_seed"], int) or isinstance(cfg["init_seed"], bool)
                                         or cfg["init_seed"] < 0):
        raise ConfigError(f"init_seed must be None (= seed) or a non-negative integer, got {cfg['init_seed']!r}")
    off = cfg["init_seed_offset"]
    if not isinstance(off, int) or isinstance(off, bool) or off < 0:
        raise ConfigError(f"init_seed_offset must be a non-negative integer, got {off!r}")
    positive_int("check_finite_every", cfg["check_finite_every"])
    if not isinstance(cfg["compile"], bool):
        raise ConfigError(f"compile must be true or false, got {cfg['compile']!r}")
    if cfg["compile"] and cfg["model"].get("dilation"):
        raise ConfigError("compile=true cannot trace dilated back-propagation (its taps pass gradients between "
                          "backward nodes through Python state); set compile=false or model.dilation=None")
    positive_int("data.size", cfg["data"]["size"])
    if not isinstance(cfg["grad_transforms"], list):
        raise ConfigError(f"grad_transforms must be a list, got {cfg['grad_transforms']!r}")
    if cfg["phases"] is not None:
        phases = cfg["phases"]
        if not isinstance(phases, list) or not phases:
            raise ConfigError(f"phases must be None or a non-empty list of phase settings, got {phases!r}")
        for i, ph in enumerate(phases):
            if not isinstance(ph, dict):
                raise ConfigError(f"phases[{i}] must be a dict with keys from {sorted(PHASE_KEYS)}, got {ph!r}")
            unknown = sorted(set(ph) - set(PHASE_KEYS))
            if unknown:
                raise ConfigError(f"phases[{i}]: unknown key(s) {unknown}; known keys: {sorted(PHASE_KEYS)}")
            positive_int(f"phases[{i}].epochs", ph.get("epochs", 1))
            scale = ph.get("lr_scale", 1.0)
            if not isinstance(scale, (int, float)) or not scale > 0:
                raise ConfigError(f"phases[{i}].lr_scale must be a number > 0, got {scale!r}")
            tr = ph.get("train", "all")
            if tr != "all" and not (isinstance(tr, list) and tr and all(isinstance(t, str) for t in tr)):
                raise ConfigError(f"phases[{i}].train must be 'all' or a list of parameter-name prefixes, got {tr!r}")
        total = sum(ph.get("epochs", 1) for ph in phases)
        if cfg["epochs"] != total:
            raise ConfigError(f"epochs ({cfg['epochs']}) must equal the sum of the phases' epochs ({total})")
    return cfg


def phase_list(cfg: dict) -> list[dict]:
    """The run's phases with defaults filled in (one phase of ``epochs`` when ``phases`` is None)."""
    if cfg["phases"] is None:
        return [dict(PHASE_KEYS, name="train", epochs=cfg["epochs"], objective=cfg["objective"])]
    out = []
    for i, ph in enumerate(cfg["phases"]):
        full = {**copy.deepcopy(PHASE_KEYS), **ph}
        full["name"] = full["name"] or f"phase{i + 1}"
        if full["objective"] is None:
            full["objective"] = cfg["objective"]
        out.append(full)
    return out


def resolve(preset: dict, overrides: dict | None = None) -> dict:
    """BASE <- preset <- overrides, validated. With phases, ``epochs`` becomes their sum."""
    cfg = merge(merge(BASE, preset), overrides or {})
    if cfg["phases"] is not None and isinstance(cfg["phases"], list):
        total = sum(ph.get("epochs", 1) if isinstance(ph, dict) else 0 for ph in cfg["phases"])
        if overrides and "epochs" in overrides and overrides["epochs"] != total:
            raise ConfigError(f"this run has {len(cfg['phases'])} phases of {total} epochs in all; set the epochs of "
                              "each phase instead (e.g. phases.0.epochs=2 phases.1.epochs=3)")
        cfg["epochs"] = total
    return validate(cfg)


def with_defaults(cfg: dict, base: dict | None = None) -> dict:
    """``cfg`` with every key that ``base`` (default ``BASE``) has and ``cfg`` lacks filled in from
    ``base``: a config saved before a setting existed reads as that setting's default."""
    base = BASE if base is None else base
    out = copy.deepcopy(cfg)
    for k, v in base.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out[k], dict) and k not in FREE_FORM:
            out[k] = with_defaults(out[k], v)
    return out


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
