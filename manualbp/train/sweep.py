"""Sweeps: expand an experiment's grid into independent runs and execute them with a pool of
worker processes (a number per device, the default) or as Ray tasks (``run_sweep_ray``: a local Ray
instance, a multi-GPU box or a cluster), skipping finished runs and resuming unfinished ones.

The expanded run list is plain data (``RunSpec``: a name, a run folder and its resolved config),
so that a cluster engine (a SLURM array, submitit, ...) can take the same list: see
``scripts/sweep.py --list``, whose every line is a command that trains one run
(``scripts/sweep.py EXPERIMENT --run NAME``).
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .config import BASE, ConfigError, merge, resolve


@dataclass
class RunSpec:
    name: str
    run_dir: str
    config: dict
    labels: dict = field(default_factory=dict)   # axis -> label, for summaries and figures
    hparams: list = field(default_factory=list)  # dotted config keys that vary across the sweep (TensorBoard)


def _axis_items(axis: str, values):
    """A named axis {label: overrides} or a key axis [v1, v2] (overrides of the config key ``axis``)."""
    if isinstance(values, dict):
        return [(str(label), ov) for label, ov in values.items()]
    out = []
    for v in values:
        d: dict = {}
        cur = d
        parts = axis.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
        out.append((f"{parts[-1]}{v}", d))
    return out


def expand(base: dict, grid: dict | list, root: Path, overrides: dict | None = None, only: str | None = None) -> list:
    """Cartesian product of the grid's axes; each run's config = base <- axis overrides <- overrides.
    A list of grids is their union, in order (e.g. more seeds for some settings than for others)."""
    parts = grid if isinstance(grid, list) else [grid]
    specs, names = [], []
    for part in parts:
        s, n = _expand_part(base, part, root, overrides, only)
        specs += s
        names += n
    if len(set(names)) != len(names):
        raise ConfigError(f"the sweep's grids name a run twice: {sorted({n for n in names if names.count(n) > 1})}")
    if only and not specs:
        labels = "; ".join(f"{a}: {', '.join(label for label, _ in _axis_items(a, g[a]))}" for g in parts for a in g)
        raise ConfigError(f"--only {only!r} matches no run of this sweep; its {len(names)} run names join one label "
                          f"per axis with '-' (e.g. {names[0]!r}); the labels are {labels}")
    keys = varying_keys([s.config for s in specs]) or ["seed"]
    for s in specs:
        s.hparams = keys
    return specs


def _expand_part(base: dict, grid: dict, root: Path, overrides: dict | None, only: str | None):
    axes = list(grid)
    specs, names = [], []
    for combo in itertools.product(*(_axis_items(a, grid[a]) for a in axes)):
        cfg = merge(BASE, base)
        for _, ov in combo:
            cfg = merge(cfg, ov)
        cfg = resolve(cfg, overrides)
        name = "-".join(label for label, _ in combo)
        names.append(name)
        if only and only not in name:
            continue
        specs.append(RunSpec(name, str(root / name), cfg, {a: label for a, (label, _) in zip(axes, combo)}))
    return specs, names


def prepare_data(specs: list, log=print) -> None:
    """Load each dataset the runs use once, before any run starts: a missing dataset fails at this
    point, once, with its ``DataError`` (instead of once per run), and with ``data.download`` it is
    fetched by this one process (instead of by every worker into the same folder at once). The loaders' caches are
    then warm for the runs."""
    import json

    from manualbp.data import load_dataset
    seen = set()
    for s in specs:
        d = s.config["data"]
        for split, limit in (("train", d["train_limit"]), ("test", d["test_limit"])):
            key = json.dumps([d["name"], split, d["root"], limit, d["size"], d["options"]], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            if d["download"]:
                log(f"fetching {d['name']} ({split}) if missing")
            load_dataset(d["name"], split, d["root"], d["download"], limit, d["size"], **d["options"])


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{"model.norm": ..., ...}: every leaf of a nested config under its dotted key."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def varying_keys(configs: list) -> list[str]:
    """The dotted keys whose values differ between the configs (a sweep's hparams)."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


_DEVICE = None
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker(slots, threads):
    global _DEVICE
    _DEVICE = slots.get()
    import torch
    torch.set_num_threads(threads)


def _run_one(spec: RunSpec):
    from .loop import train
    from .rundir import RunDir
    rd = RunDir(spec.run_dir)
    status = "skipped (finished)" if rd.finished() else ("resumed" if rd.checkpoint.is_file() else "ran")
    cfg = dict(spec.config)
    if _DEVICE is not None and cfg["device"] == "auto":
        cfg["device"] = _DEVICE
    try:
        summary = train(cfg, spec.run_dir, log=lambda m: print(m, flush=True), hparams=spec.hparams or None)
        return spec.name, status, summary, None
    except Exception as e:  # one failed run must not stop the sweep
        msg = "".join(traceback.format_exception_only(e)).strip()
        print(f"{spec.name}: FAILED: {msg}", flush=True)
        return spec.name, "FAILED", None, msg


def run_sweep(specs: list, devices: list[str], workers_per_device: int = 1, threads: int | None = None) -> list:
    """Execute the runs; returns (name, status, summary, error) per run, in the order of ``specs``.
    Each run's config must keep device "auto" for the pool to place it on a device. ``threads``: torch
    threads per worker (default: the cores shared out between the workers)."""
    n = max(1, len(devices) * workers_per_device)
    if n == 1:
        global _DEVICE
        _DEVICE = devices[0] if devices else None
        return [_run_one(s) for s in specs]
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()   # inherited by the workers at start (no Manager process to outlive a killed sweep)
    for d in devices:
        for _ in range(workers_per_device):
            slots.put(d)
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    # the spawned workers inherit the environment: cap OpenMP / MKL threads too, not only torch's intra-op
    # pool (without this, 2 workers on 2 cores ran no faster than 1: oversubscribed thread pools)
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    for k in _THREAD_VARS:
        os.environ.setdefault(k, str(threads))
    try:
        with ctx.Pool(n, initializer=_init_worker, initargs=(slots, threads)) as pool:
            return pool.map(_run_one, specs, chunksize=1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ray_task(spec: RunSpec, threads: int):
    """One run inside a Ray worker. Ray exposes the GPUs it granted through CUDA_VISIBLE_DEVICES (none
    when --gpus-per-run is 0), so device "auto" lands on the granted GPU or on the CPU."""
    global _DEVICE
    _DEVICE = None
    import torch
    torch.set_num_threads(threads)
    return _run_one(spec)


def run_sweep_ray(specs: list, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                  max_retries: int = 3, num_cpus: int | None = None, log=print) -> list:
    """Execute the runs as Ray tasks; returns (name, status, summary, error) per run, like ``run_sweep``.

    Each run is one task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (fractions pack several
    runs onto one GPU). ``address``: an existing Ray cluster ("auto", "ray://host:port"); without it a
    local Ray instance is started (``num_cpus``: its CPUs, default all) and shut down at the end. A
    run that raises is reported as FAILED with its message and the others go on; a task whose worker
    process dies is retried by Ray up to ``max_retries`` times and resumes from the run's checkpoint.
    Run folders are written by the workers: on a cluster they must be on a shared filesystem."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs the ray package: pip install 'manualbp[ray]' (or pip install ray)") \
            from None
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ValueError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus_per_run}, {gpus_per_run}")
    root = str(Path(__file__).resolve().parents[2])   # so workers import this checkout's manualbp
    env = {k: v for k, v in os.environ.items() if k.startswith("MANUALBP_")}
    env["PYTHONPATH"] = os.pathsep.join([root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": env})
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, **kw)
    try:
        task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries,
                                             retry_exceptions=False)
        threads = max(1, int(cpus_per_run))
        refs = [task.remote(s, threads) for s in specs]
        results = []
        for s, ref in zip(specs, refs):
            try:
                results.append(ray.get(ref))
            except Exception as e:   # the task died more than max_retries times (or Ray lost it)
                msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log(f"{s.name}: FAILED: {msg}")
                results.append((s.name, "FAILED", None, msg))
        return results
    finally:
        if started:
            ray.shutdown()


def summary_table(results, metrics=("test_acc", "train_acc", "test_loss")) -> str:
    head = ["run", "status", *metrics, "time_s"]
    rows = []
    for name, status, summary, err in results:
        if summary:
            f = summary["final"]
            rows.append([name, status, *(f"{f[m]:.4f}" for m in metrics), f"{summary['wall_time_s']:.1f}"])
        else:
            rows.append([name, status, *(["-"] * len(metrics)), (err or "")[:80]])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])
