#!/usr/bin/env python
"""Benchmark manual backward against plain autograd, in one process, interleaved, after warm-up.

    python scripts/bench.py                 # everything, CPU (and CUDA when present)
    python scripts/bench.py --tiny          # tiny sizes: the smoke test
    python scripts/bench.py --only ops --device cpu

Three parts: (1) every op family, forward+backward of the manual op against the same math run
through plain autograd; (2) one training step (forward, backward, Adam) of each model family
against the same model in plain torch, with peak memory (CUDA) or peak RSS (CPU, measured in a
fresh process per model so the numbers do not mix); (3) whitening back ends (eigh, SVD,
Newton-Schulz) at widths 64 to 1024; (4) the multi-output ops with and without materialised zero
gradients for their unused outputs. Medians and ratios manual/autograd; results as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import manualbp.functional as M  # noqa: E402
from manualbp.functional._function import ManualFunction  # noqa: E402
from manualbp.functional.regularizers import REGULARIZERS  # noqa: E402
from manualbp.testing import opinfo as R  # noqa: E402
from manualbp.testing.reference_models import _zca_autograd, reference_forward  # noqa: E402


# ---------------------------------------------------------------- timing

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, device, repeats: int, warmup: int = 2) -> dict:
    """{name: median seconds} of each zero-argument callable, timed in interleaved rounds."""
    return {k: sorted(v)[len(v) // 2] for k, v in interleaved_times(fns, device, repeats, warmup).items()}


def paired_ratio(a: list, b: list) -> tuple:
    """Median and quartiles of a[i] / b[i] over rounds: each round times both back to back, so slow
    drifts of a shared machine (other jobs, CPU steal) cancel in the ratio."""
    r = sorted(x / y for x, y in zip(a, b))
    n = len(r)
    return r[n // 2], r[n // 4], r[(3 * n) // 4]


def ratio_q(value: float, quartiles) -> str:
    """A paired ratio as "median [lower quartile, upper quartile]"."""
    return f"{value:.3f} [{quartiles[0]:.3f}, {quartiles[1]:.3f}]"


def interleaved_times(fns: dict, device, repeats: int, warmup: int = 2, seed: int = 0) -> dict:
    """{name: [seconds per repeat]} of each zero-argument callable: every round runs each callable once,
    in an order shuffled per round (seeded), so that no callable always runs first or right after the
    same neighbour (a fixed order biases small timings by what the previous call left in the caches)."""
    import random
    for _ in range(warmup):
        for f in fns.values():
            f()
    _sync(device)
    times = {k: [] for k in fns}
    order, rng = list(fns), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for k in order:
            _sync(device)
            t0 = time.perf_counter()
            fns[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def fwd_bwd(fn, args, kwargs=None):
    """A callable running fn forward and backward with a fixed upstream gradient."""
    kwargs = kwargs or {}
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out = fn(*args, **kwargs)
    g = torch.randn_like(out)

    def run():
        for a in diff:
            a.grad = None
        fn(*args, **kwargs).backward(g)
    return run


# ---------------------------------------------------------------- op families

class _IdentityMath:
    """The cheapest possible op: y = x (copied), dL/dx = g."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g


class _Identity(_IdentityMath, torch.autograd.Function):
    """The identity as a plain autograd.Function (setup_context style, called with ``apply``): the
    fixed per-call cost of a Python Function."""


class _ManualIdentity(_IdentityMath, ManualFunction):
    """The same identity as a ``ManualFunction`` called with ``call`` (the eager twin): what every op pays."""


def op_cases(s: int, device):
    """(family, op, manual fn, autograd fn, args, kwargs); s = 1 realistic sizes, s = 0 tiny."""
    def t(*shape, grad=True, pos=False):
        x = torch.randn(*shape, device=device)
        return (x.abs() + 0.1 if pos else x).requires_grad_(grad)
    big = (lambda a, b: a if s else b)
    n, d = big(256, 8), big(1024, 16)
    img = big((20, 16, 48, 48), (2, 3, 6, 6))
    c = img[1]
    zn, zd = big(250, 12), big(676, 8)
    cases = [
        ("baseline", "python Function overhead (identity, apply)", _Identity.apply, torch.clone, (t(1),), {}),
        ("baseline", "ManualFunction overhead (identity, call)", _ManualIdentity.call, torch.clone, (t(1),), {}),
        ("dense", "linear", M.linear, lambda x, w, b: x @ w.T + b, (t(n, d), t(d, d), t(d)), {}),
        ("dense", "conv2d", M.conv2d, lambda x, w: F.conv2d(x, w, None, 1, 1), (t(*img), t(c, c, 3, 3)), {}),
        ("dense", "conv_transpose2d", M.conv_transpose2d, F.conv_transpose2d,
         (t(img[0], c, img[2] // 2, img[3] // 2), t(c, c, 3, 3)), dict(stride=2, padding=1, output_padding=1)),
        ("dense", "max_pool2d", M.max_pool2d, F.max_pool2d, (t(*img),), dict(kernel_size=2)),
        ("dense", "interpolate bilinear", M.interpolate, F.interpolate, (t(img[0], c, img[2] // 2, img[3] // 2),),
         dict(scale_factor=2, mode="bilinear")),
        ("dense", "interpolate bicubic", M.interpolate, F.interpolate, (t(img[0], c, img[2] // 2, img[3] // 2),),
         dict(scale_factor=2, mode="bicubic")),
        ("dense", "concat", lambda a, b: M.concat([a, b]), lambda a, b: torch.cat([a, b], 1), (t(*img), t(*img)), {}),
        ("dense", "global_avg_pool2d", M.global_avg_pool2d, lambda x: x.mean((2, 3)), (t(*img),), {}),
        ("activations", "relu", M.relu, torch.relu, (t(n, d),), {}),
        ("activations", "elu", M.elu, F.elu, (t(n, d),), {}),
        ("activations", "tanh", M.tanh, torch.tanh, (t(n, d),), {}),
        ("activations", "arctan", M.arctan, torch.atan, (t(n, d),), {}),
        ("activations", "sigmoid", M.sigmoid, torch.sigmoid, (t(n, d),), {}),
        ("activations", "soft_abs", M.soft_abs, lambda x: torch.sqrt(x * x + 1e-8), (t(n, d),), {}),
        ("losses", "softmax_cross_entropy", M.softmax_cross_entropy, F.cross_entropy,
         (t(big(1000, 8), 10), torch.randint(0, 10, (big(1000, 8),), device=device)), {}),
        ("losses", "mse", M.mse, F.mse_loss, (t(big(1000, 8), 10), t(big(1000, 8), 10, grad=False)), {}),
        ("losses", "binary_cross_entropy", M.binary_cross_entropy, F.binary_cross_entropy,
         (torch.rand(big(1000, 8), 10, device=device).mul(0.9).add(0.05).requires_grad_(),
          torch.rand(big(1000, 8), 10, device=device).round()), {}),
        ("normalisation", "center", M.center, lambda x: x - x.mean(0, keepdim=True), (t(zn, zd),), {}),
        ("normalisation", "standardize", M.standardize, R.ref_standardize, (t(zn, zd),), {}),
        ("normalisation", "batch_norm 4-D", M.batch_norm, _batch_norm_autograd,
         (t(*img), torch.zeros(c, device=device), torch.ones(c, device=device)), {}),
        ("normalisation", "batch_norm 2-D", M.batch_norm, _batch_norm_autograd,
         (t(n, d), torch.zeros(d, device=device), torch.ones(d, device=device)), {}),
        ("whitening", "zca_whiten dim", M.zca_whiten, _zca_autograd, (t(zn, zd),), dict(eps=1e-3, mode="dim")),
        ("whitening", "zca_whiten example", M.zca_whiten, _zca_autograd, (t(zn, zd),),
         dict(eps=1e-3, mode="example")),
        ("whitening", "decorrelated_batch_norm", M.decorrelated_batch_norm, _dbn_autograd, (t(zn, zd),),
         dict(eps=1e-3)),
        ("whitening", "iter_norm", M.iter_norm, R.ref_iter_norm, (t(zn, zd),), dict(eps=1e-3)),
        ("sparse filtering", "sparse_filtering", M.sparse_filtering, R.ref_sparse_filtering,
         (t(big(100, 6), big(396, 5)),), {}),
    ]
    w = t(big(1000, 10), big(1000, 10))
    for name, reg in REGULARIZERS.items():
        cases.append(("regularizers", f"regularize {name}", M.regularize,
                      lambda w, name, lam=1.0, _v=reg.value: lam * _v(w).sum(), (w, name), dict(lam=1e-3)))
    return cases


def _batch_norm_autograd(x, running_mean, running_var):
    """torch's batch norm (training mode, no affine parameters)."""
    return F.batch_norm(x, running_mean, running_var, None, None, True, 0.1, 1e-5)


def _dbn_autograd(x, eps=1e-5, backend="eigh"):
    """Decorrelated batch norm through torch.linalg.eigh, differentiated by autograd."""
    return _zca_autograd(x - x.mean(0, keepdim=True), eps, "dim", backend)


def bench_ops(device, tiny: bool, repeats: int) -> list:
    rows = []
    for family, name, manual, ref, args, kw in op_cases(0 if tiny else 1, device):
        t = interleaved({"manual": fwd_bwd(manual, args, kw), "autograd": fwd_bwd(ref, args, kw)}, device, repeats)
        shapes = "; ".join("x".join(map(str, a.shape)) for a in args if isinstance(a, torch.Tensor) and a.dim())
        rows.append({"part": "ops", "family": family, "name": name, "size": shapes, "device": str(device),
                     "manual_ms": 1e3 * t["manual"], "autograd_ms": 1e3 * t["autograd"],
                     "ratio": t["manual"] / t["autograd"]})
    return rows


# ---------------------------------------------------------------- model steps

def model_cases(tiny: bool):
    from manualbp.experiments.zca import PRESETS
    mlp = dict(PRESETS["sound"]["model"])
    return {
        "mlp (zca experiment)": (dict(mlp), (100, 1, 28, 28), "class"),
        "cnn6": ({"name": "cnn6"}, (20, 3, 96 if not tiny else 32, 96 if not tiny else 32), "class"),
        "cnn6 + batch norm": ({"name": "cnn6", "batch_norm": True},
                              (20, 3, 96 if not tiny else 32, 96 if not tiny else 32), "class"),
        "segmentation AE": ({"name": "segae", "sparse_activation": "soft_abs", "size": 96 if not tiny else 32},
                            (10, 3, 96 if not tiny else 32, 96 if not tiny else 32), "seg"),
    }


def _model_step(spec, shape, kind, impl, device, compiled=False, fuse=True):
    """A closure doing one training step (zero_grad, forward, loss, backward, Adam step); ``compiled``:
    the forward and loss through torch.compile(fullgraph=True), as the loop's compile=true does;
    ``fuse=False``: the manual model without fused layer + activation Functions (one Function per op,
    as when probes watch every layer)."""
    from manualbp.models import build_model
    from manualbp.nn import Activation
    from manualbp.testing.opinfo import ref_sparse_filtering
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    for m in model.modules():
        if isinstance(m, Activation) and not fuse:
            m.fusable = False
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(*shape, device=device)
    if kind == "class":
        y = torch.randint(0, 10, (shape[0],), device=device)
    else:
        y = (torch.rand(shape[0], 1, *shape[2:], device=device) > 0.5).float()

    def loss_of(x, y):
        if impl == "manual":
            out = model(x)
            if kind == "class":
                return M.softmax_cross_entropy(out, y)
            return M.add(M.binary_cross_entropy(out[0], y), model.sparse_cost(out[1]))
        out = reference_forward(model, x)
        if kind == "class":
            return F.cross_entropy(out, y)
        return F.binary_cross_entropy(out[0], y) + ref_sparse_filtering(out[1], model.sparse_eps,
                                                                       model.sparse_activation)
    if compiled:
        loss_of = torch.compile(loss_of, fullgraph=True)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of(x, y)
        loss.backward()
        opt.step()
    return step


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def peak_memory_child(argv) -> None:
    """Run in a fresh process: a few steps of one model/impl; print peak memory of the steps in MB."""
    name, impl, device, tiny = argv[0], argv[1], torch.device(argv[2]), argv[3] == "1"
    spec, shape, kind = model_cases(tiny)[name]
    step = _model_step(spec, shape, kind, impl, device)
    if device.type == "cuda":
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        print(json.dumps({"peak_mb": (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20}))
    else:
        # one warm-up step pays the lazy one-time allocations (kernels, thread pools, optimizer state);
        # then a thread samples the resident set every 0.2 ms while three steps run (torch releases the GIL)
        import threading
        step()
        before = _rss_kb()
        peak, done = [before], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_kb())
                time.sleep(0.0002)
        th = threading.Thread(target=sample)
        th.start()
        for _ in range(3):
            step()
        done.set()
        th.join()
        print(json.dumps({"peak_mb": (peak[0] - before) / 1024}))


def bench_models(device, tiny: bool, repeats: int, memory: bool = True) -> list:
    rows = []
    for name, (spec, shape, kind) in model_cases(tiny).items():
        fns = {impl: _model_step(spec, shape, kind, impl, device) for impl in ("manual", "autograd")}
        fns["manual unfused"] = _model_step(spec, shape, kind, "manual", device, fuse=False)
        times = interleaved_times(fns, device, repeats)
        t = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        pr, pr_lo, pr_hi = paired_ratio(times["manual"], times["autograd"])
        unfused = paired_ratio(times["manual unfused"], times["autograd"])
        mem = {"manual": None, "autograd": None}
        for impl in ("manual", "autograd") if memory else ():
            env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}   # glibc's defaults
            out = subprocess.run([sys.executable, __file__, "--peak-memory-child", name, impl, str(device),
                                  "1" if tiny else "0"], capture_output=True, text=True, timeout=600, env=env)
            mem[impl] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"] if out.returncode == 0 else None
        rows.append({"part": "models", "family": "model step", "name": name, "size": "x".join(map(str, shape)),
                     "device": str(device), "manual_ms": 1e3 * t["manual"], "autograd_ms": 1e3 * t["autograd"],
                     "ratio": t["manual"] / t["autograd"], "paired_ratio": pr, "paired_ratio_iqr": [pr_lo, pr_hi],
                     "unfused_paired_ratio": unfused[0], "unfused_paired_ratio_iqr": list(unfused[1:]),
                     "repeats": repeats, "manual_peak_mb": mem["manual"],
                     "autograd_peak_mb": mem["autograd"],
                     "memory": "peak CUDA allocation above the step's start" if device.type == "cuda" else
                     "peak RSS above the step's start (sampled every 0.2 ms)"})
    return rows


RUN_VARIANTS = {"paired_ratio": "as trained (fused pairs)", "unfused_paired_ratio": "unfused"}


def bench_model_runs(device, tiny: bool, repeats: int, runs: int) -> list:
    """The model-step part in ``runs`` fresh processes (each its own allocation history, the largest
    source of run-to-run spread on a shared CPU): per model and build, the per-process paired ratios
    with their mean, sd and 95% Student-t interval."""
    import tempfile

    from manualbp.experiments.report import mean_ci
    per_run = []
    with tempfile.TemporaryDirectory(prefix="manualbp-bench-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, __file__, "--only", "models", "--device", str(device), "--model-repeats",
                   str(repeats), "--no-memory", "--out", str(out)] + (["--tiny"] if tiny else [])
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if res.returncode != 0:
                raise RuntimeError(f"bench run {i + 1} of {runs} failed: {res.stderr[-2000:]}")
            per_run.append({r["name"]: r for r in json.loads(out.read_text())["rows"]})
    rows = []
    for name in per_run[0]:
        for key, variant in RUN_VARIANTS.items():
            values = [run[name][key] for run in per_run]
            mean, sd, hw, n = mean_ci(values)
            rows.append({"part": "model runs", "name": name, "variant": variant, "device": str(device),
                         "repeats": repeats, "runs": n, "values": values, "mean": mean, "sd": sd, "ci95": hw})
    return rows


def bench_compile(device, tiny: bool, repeats: int) -> list:
    """Per model family: one training step of the manual model and of plain torch, each with its
    forward and loss compiled (torch.compile, fullgraph=True), against eager plain torch; the compile
    time is the first step's wall time (tracing, AOTAutograd, Inductor) less an eager step's."""
    import tempfile
    # a fresh Inductor cache: with a warm one (an earlier run's kernels on disk) "compile time" is a cache read
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="manualbp-inductor-")
    rows = []
    for name, (spec, shape, kind) in model_cases(tiny).items():
        torch._dynamo.reset()
        fns, compile_s = {}, {}
        fns["eager plain"] = _model_step(spec, shape, kind, "autograd", device)
        for impl, label in (("manual", "compiled manual"), ("autograd", "compiled plain")):
            fns[label] = _model_step(spec, shape, kind, impl, device, compiled=True)
            _sync(device)
            t0 = time.perf_counter()
            fns[label]()
            _sync(device)
            compile_s[label] = time.perf_counter() - t0
        times = interleaved_times(fns, device, repeats)
        t = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        pr = paired_ratio(times["compiled manual"], times["compiled plain"])
        rows.append({"part": "compile", "name": name, "size": "x".join(map(str, shape)), "device": str(device),
                     **{f"{k} ms": 1e3 * v for k, v in t.items()}, "repeats": repeats,
                     "compiled_paired_ratio": pr[0], "compiled_paired_ratio_iqr": list(pr[1:]),
                     "manual_compile_s": compile_s["compiled manual"] - t["eager plain"],
                     "plain_compile_s": compile_s["compiled plain"] - t["eager plain"],
                     "compiled_ratio": t["compiled manual"] / t["compiled plain"],
                     "manual_vs_eager_plain": t["compiled manual"] / t["eager plain"]})
    return rows


def bench_episodes(device, tiny: bool) -> list:
    """Episodes per hour of the weights-pov quick case (CNN6 on a CIFAR-10 subset, Adam) trained one
    at a time (K = 1) and K = 8 at once, stacked with torch.func (manualbp.train.episodes)."""
    from manualbp.data import DataError
    from manualbp.experiments import preset
    from manualbp.train import resolve
    from manualbp.train.episodes import train_episodes
    over = {"device": str(device), "log": {"progress": False, "probe_every": 0}}
    if tiny:
        over.update(epochs=1, data={"train_limit": 400, "test_limit": 200})
    cfg = resolve(preset("weights-pov", "quick"), over)
    rows = []
    for k in (1, 8):
        t0 = time.perf_counter()
        try:
            train_episodes(cfg, list(range(k)), log=lambda *_: None)
        except DataError as e:
            print(f"episodes: skipped, no CIFAR-10 under the data root ({str(e).splitlines()[0]})")
            return []
        wall = time.perf_counter() - t0
        rows.append({"part": "episodes", "name": "weights-pov quick (CNN6, CIFAR-10 2k/1k, 3 epochs)"
                     if not tiny else "weights-pov quick, tiny", "device": str(device), "K": k, "wall_s": wall,
                     "episodes_per_hour": 3600 * k / wall})
    return rows


# ---------------------------------------------------------------- whitening back ends

def _instrument_families(tiny: bool) -> list:
    """(name, model, input shape, segmentation?) of the four model families the instrument parts time."""
    from manualbp.models import CNN6, MLP, SegmentationAE
    n = 4 if tiny else 32
    side = 32 if tiny else 96
    return [("mlp", MLP([784, 64, 64, 10] if tiny else [784, 1024, 1024, 10]), (n, 784), False),
            ("cnn6", CNN6(), (n, 3, 32, 32), False),
            ("cnn6 + batch norm", CNN6(batch_norm=True), (n, 3, 32, 32), False),
            ("segmentation AE", SegmentationAE(size=side), (max(2, n // 4), 3, side, side), True)]


def bench_instruments(device, tiny: bool, repeats: int) -> list:
    """The instruments' cost per model family: a probe step (forward, backward, Adam step, the articles'
    probes) alone and with the per-example statistics, the optimizer state, or the spectra added;
    paired ratios against the probe step alone, timed in the same interleaved rounds."""
    import manualbp.functional as MF
    from manualbp.train.instruments import UpdateSize, per_example_rows, spectra_rows
    from manualbp.train.probes import Probes

    class _Task:   # the data terms of the two task kinds, for per_example_rows
        def __init__(self, seg):
            self.seg = seg

        def example_loss(self, out, y):
            return MF.binary_cross_entropy(out[0], y) if self.seg else MF.softmax_cross_entropy(out, y)

    g = torch.Generator().manual_seed(0)
    fams = _instrument_families(tiny)
    rows = []
    for name, model, shape, seg in fams:
        model = model.to(device)
        x = torch.randn(*shape, generator=g).to(device)
        y = ((torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.5).float() if seg
             else torch.randint(0, 10, (shape[0],), generator=g)).to(device)
        task = _Task(seg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        probes = Probes(model, None, histograms=False)
        size = UpdateSize(model)

        def step(per_example=False, optimizer_state=False, spectra=False):
            def run():
                probes.arm()
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = task.example_loss(out, y)
                loss.backward()
                if per_example:
                    probes.disarm()
                    per_example_rows(model, task, x, y, 1, 1, None, False)
                if optimizer_state:
                    size.snapshot()
                opt.step()
                if optimizer_state:
                    size.rows(opt, 1, 1)
                probes.collect(opt, 1, 1)
                if spectra:
                    spectra_rows(model, 1, 1)
                _sync(device)
            return run
        fns = {"probe step": step(), "+ per-example": step(per_example=True),
               "+ optimizer state": step(optimizer_state=True), "+ spectra": step(spectra=True)}
        times = interleaved_times(fns, device, repeats)
        base = times["probe step"]
        for k in ("+ per-example", "+ optimizer state", "+ spectra"):
            med, lo, hi = paired_ratio(times[k], base)
            rows.append({"part": "instruments", "name": name, "instrument": k, "size": "x".join(map(str, shape)),
                         "device": str(device), "probe_ms": 1e3 * sorted(base)[len(base) // 2],
                         "ms": 1e3 * sorted(times[k])[len(times[k]) // 2], "paired_ratio": med,
                         "paired_ratio_iqr": [lo, hi]})
    return rows


def bench_curvature(device, tiny: bool, repeats: int) -> list:
    """The curvature instrument's unit of work per model family: one Hessian-vector product through the manual
    Functions (double backward) against one gradient (forward and backward) of the same loss, paired ratios
    from interleaved rounds; goal <= 3x."""
    import torch.nn.functional as F

    import manualbp.functional as MF
    from manualbp.testing.reference_models import reference_forward
    from manualbp.train.instruments import hvp

    g = torch.Generator().manual_seed(0)
    fams = _instrument_families(tiny)
    rows = []
    for name, model, shape, seg in fams:
        model = model.to(device).train()
        x = torch.randn(*shape, generator=g).to(device)
        y = ((torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.5).float() if seg
             else torch.randint(0, 10, (shape[0],), generator=g)).to(device)
        params = list(model.parameters())
        vecs = [torch.randn_like(p) for p in params]

        def loss():
            out = model(x)
            return MF.binary_cross_entropy(out[0], y) if seg else MF.softmax_cross_entropy(out, y)

        def plain_loss():   # the same model in plain torch: what autograd's own double backward costs
            out = reference_forward(model, x)
            return F.binary_cross_entropy(out[0], y) if seg else F.cross_entropy(out, y)
        fns = {"gradient": lambda: torch.autograd.grad(loss(), params), "hvp": lambda: hvp(loss, params, vecs),
               "plain gradient": lambda: torch.autograd.grad(plain_loss(), params),
               "plain hvp": lambda: hvp(plain_loss, params, vecs)}
        times = interleaved_times(fns, device, repeats)
        med, lo, hi = paired_ratio(times["hvp"], times["gradient"])
        pmed, plo, phi = paired_ratio(times["plain hvp"], times["plain gradient"])
        hmed, hlo, hhi = paired_ratio(times["hvp"], times["plain hvp"])
        rows.append({"part": "curvature", "name": name, "size": "x".join(map(str, shape)), "device": str(device),
                     "gradient_ms": 1e3 * sorted(times["gradient"])[len(times["gradient"]) // 2],
                     "hvp_ms": 1e3 * sorted(times["hvp"])[len(times["hvp"]) // 2], "paired_ratio": med,
                     "paired_ratio_iqr": [lo, hi], "plain_ratio": pmed, "plain_ratio_iqr": [plo, phi],
                     "hvp_vs_plain": hmed, "hvp_vs_plain_iqr": [hlo, hhi]})
    return rows


def bench_whitening(device, tiny: bool, repeats: int) -> list:
    rows = []
    for d in ((8, 16) if tiny else (64, 128, 256, 512, 1024)):
        n = 2 * d if tiny else max(256, 2 * d)
        x = torch.randn(n, d, device=device).requires_grad_()
        fns = {"eigh": fwd_bwd(M.decorrelated_batch_norm, (x,), dict(eps=1e-3, backend="eigh")),
               "svd": fwd_bwd(M.decorrelated_batch_norm, (x,), dict(eps=1e-3, backend="svd")),
               "newton-schulz (iter_norm, T=5)": fwd_bwd(M.iter_norm, (x,), dict(eps=1e-3))}
        t = interleaved(fns, device, max(3, repeats // 3) if d >= 512 else repeats)
        for k, v in t.items():
            rows.append({"part": "whitening", "name": k, "width": d, "batch": n, "device": str(device),
                         "ms": 1e3 * v, "vs_eigh": v / t["eigh"]})
    return rows


# CNN6's feature maps on CIFAR-10 at batch 128 after the ReLU of layers 1-5 (strides 2, 2, 2, 2, 1), at 64
# channels so that groups of 16, 32 and 64 all divide them
MAP_SHAPES = [(128, 64, 16, 16), (128, 64, 8, 8), (128, 64, 4, 4), (128, 64, 2, 2)]
MAP_GROUPS = (16, 32, 64)
MAP_BACKENDS = {"eigh": (M.decorrelated_batch_norm, dict(backend="eigh")),
                "svd": (M.decorrelated_batch_norm, dict(backend="svd")),
                "newton-schulz (T=5)": (M.iter_norm, dict(iterations=5))}


def bench_whitening_maps(device, tiny: bool, repeats: int) -> list:
    """Whitening of CNN6's feature maps in groups, forward + backward of the op alone: eigh against SVD (DBN)
    against Newton-Schulz (IterNorm) per group size and map shape, the eigh time of the same case as the base."""
    rows = []
    shapes = [(4, 8, 4, 4), (4, 8, 2, 2)] if tiny else MAP_SHAPES
    for shape in shapes:
        x = torch.randn(*shape, device=device).requires_grad_()
        for g in ((4, 8) if tiny else MAP_GROUPS):
            fns = {k: fwd_bwd(op, (x,), dict(kw, eps=1e-5, group_size=g)) for k, (op, kw) in MAP_BACKENDS.items()}
            times = interleaved_times(fns, device, repeats)
            for k, v in times.items():
                med = sorted(v)[len(v) // 2]
                pr = paired_ratio(v, times["eigh"])
                rows.append({"part": "whitening-maps", "name": k, "size": "x".join(map(str, shape)),
                             "group_size": g, "device": str(device), "ms": 1e3 * med, "vs_eigh": pr[0],
                             "vs_eigh_iqr": list(pr[1:]), "repeats": repeats})
    return rows


def whitening_model_cases(tiny: bool) -> dict:
    """The whitening experiment's CNN6 (32 channels, affine layers) with each of its arms' normalisations."""
    from manualbp.experiments.whitening import ARMS, CHANNELS
    arms = ("bn", "dbn16", "itn16") if tiny else tuple(ARMS)
    return {arm: {"name": "cnn6", "channels": CHANNELS, **ARMS[arm]["model"]} for arm in arms}


def bench_whitening_models(device, tiny: bool, repeats: int, compiled: bool = True) -> list:
    """One training step (forward, loss, backward, Adam) of CNN6 with batch norm, DBN and IterNorm, eager and with
    the forward and loss compiled (fullgraph), timed in interleaved rounds: each against batch norm's step of the
    same mode (paired ratios) and compiled against eager."""
    import tempfile
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="manualbp-inductor-"))
    shape = (8, 3, 16, 16) if tiny else (128, 3, 32, 32)
    fns, compile_s = {}, {}
    for arm, spec in whitening_model_cases(tiny).items():
        fns[(arm, "eager")] = _model_step(spec, shape, "class", "manual", device)
        if compiled:
            torch._dynamo.reset()
            step = _model_step(spec, shape, "class", "manual", device, compiled=True)
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            compile_s[arm] = time.perf_counter() - t0
            fns[(arm, "compiled")] = step
    times = interleaved_times(fns, device, repeats)
    rows = []
    for (arm, mode), v in times.items():
        vs_bn = paired_ratio(v, times[("bn", mode)])
        row = {"part": "whitening-models", "name": arm, "mode": mode, "size": "x".join(map(str, shape)),
               "device": str(device), "ms": 1e3 * sorted(v)[len(v) // 2], "vs_bn": vs_bn[0],
               "vs_bn_iqr": list(vs_bn[1:]), "repeats": repeats}
        if mode == "compiled":
            ce = paired_ratio(v, times[(arm, "eager")])
            row.update(vs_eager=ce[0], vs_eager_iqr=list(ce[1:]), compile_s=compile_s[arm])
        rows.append(row)
    return rows


def bench_profile(device, tiny: bool, steps: int = 50) -> list:
    """Where a model step's time goes: torch.profiler's self CPU time per step, summed over aten's
    kernels and over everything else (the Python of the Functions, autograd's engine, the
    optimizer's loop), for the manual model and plain torch, after 10 warm-up steps."""
    from torch.profiler import ProfilerActivity, profile
    rows = []
    for name, (spec, shape, kind) in model_cases(tiny).items():
        row = {"part": "profile", "name": name, "size": "x".join(map(str, shape)), "device": str(device),
               "steps": steps}
        for impl in ("manual", "autograd"):
            step = _model_step(spec, shape, kind, impl, device)
            for _ in range(10):
                step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    step()
            ev = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in ev) / steps / 1e3
            aten = sum(e.self_cpu_time_total for e in ev if e.key.startswith("aten::")) / steps / 1e3
            row[f"{impl}_total_ms"], row[f"{impl}_aten_ms"], row[f"{impl}_other_ms"] = total, aten, total - aten
            if impl == "manual":
                row["functions_per_step"] = sum(e.count for e in ev if e.key.endswith("FunctionBackward")
                                                and not e.key.startswith("autograd::")) / steps
        rows.append(row)
    return rows


def bench_materialize(device, tiny: bool, repeats: int) -> list:
    """Multi-output Functions call ``ctx.set_materialize_grads(False)``: autograd hands their backward
    None for the outputs nobody used instead of zero tensors of their shape. Each such op, forward and
    backward, as it is and with that call made a no-op (the zero tensors back), in paired rounds."""
    from torch.autograd.function import FunctionCtx
    orig = FunctionCtx.set_materialize_grads

    def materialized(fn):
        def run():
            FunctionCtx.set_materialize_grads = lambda self, value: orig(self, True)
            try:
                fn()
            finally:
                FunctionCtx.set_materialize_grads = orig
        return run

    def t(*shape):
        return torch.randn(*shape, device=device).requires_grad_()
    n, d = (16, 8) if tiny else (250, 676)
    img = (2, 3, 8, 8) if tiny else (20, 16, 48, 48)
    c = img[1]
    cases = [("zca_whiten dim", M.zca_whiten, (t(n, d),), dict(eps=1e-3)),
             ("decorrelated_batch_norm", M.decorrelated_batch_norm, (t(n, d),), dict(eps=1e-3)),
             ("iter_norm", M.iter_norm, (t(n, d),), dict(eps=1e-3)),
             ("batch_norm 4-D", M.batch_norm, (t(*img), torch.zeros(c, device=device),
                                               torch.ones(c, device=device)), {}),
             ("max_pool2d", M.max_pool2d, (t(*img),), dict(kernel_size=2))]
    rows = []
    for name, fn, args, kw in cases:
        now = fwd_bwd(fn, args, kw)
        times = interleaved_times({"now": now, "materialized": materialized(now)}, device, repeats)
        med, lo, hi = paired_ratio(times["now"], times["materialized"])
        rows.append({"part": "materialize", "name": name, "size": "x".join(map(str, args[0].shape)),
                     "device": str(device), "ms": 1e3 * sorted(times["now"])[repeats // 2],
                     "materialized_ms": 1e3 * sorted(times["materialized"])[repeats // 2],
                     "paired_ratio": med, "paired_ratio_iqr": [lo, hi]})
    return rows


# ---------------------------------------------------------------- output

def table(rows, cols, heads) -> str:
    body = [[c(r) if callable(c) else str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(heads, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*heads), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body])


def markdown(rows, machine, repeats) -> str:
    """The results as Markdown tables (for docs/performance.md)."""
    lines = [f"Machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}"
             + (f", {machine['cuda']}" if machine["cuda"] else "") + f"; malloc: {machine.get('allocator', 'default')}"
             + f"; medians of {repeats} interleaved repeats."]
    if any(r["part"] == "ops" for r in rows):
        lines += ["", "| device | family | op | size | manual ms | autograd ms | manual/autograd | "
                  "peak MB manual / autograd |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["part"] == "ops":
            mem = "" if r.get("manual_peak_mb") is None else f"{r['manual_peak_mb']:.0f} / {r['autograd_peak_mb']:.0f}"
            lines.append(f"| {r['device']} | {r['family']} | {r['name']} | {r['size']} | {r['manual_ms']:.3f} | "
                         f"{r['autograd_ms']:.3f} | {r['ratio']:.2f} | {mem} |")
    md = [r for r in rows if r["part"] == "models"]
    if md:
        lines += ["", "| device | model step (forward, backward, Adam) | size | manual ms | plain ms "
                  "| ratio of medians | paired ratio, median [quartiles] "
                  "| unfused: paired ratio | repeats | peak MB manual / plain |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in md:
            mem = "" if r.get("manual_peak_mb") is None else f"{r['manual_peak_mb']:.0f} / {r['autograd_peak_mb']:.0f}"
            lines.append(f"| {r['device']} | {r['name']} | {r['size']} | {r['manual_ms']:.2f} | "
                         f"{r['autograd_ms']:.2f} | {r['ratio']:.3f} "
                         f"| {ratio_q(r['paired_ratio'], r['paired_ratio_iqr'])} "
                         f"| {ratio_q(r['unfused_paired_ratio'], r['unfused_paired_ratio_iqr'])} | {r['repeats']} "
                         f"| {mem} |")
    mr = [r for r in rows if r["part"] == "model runs"]
    if mr:
        lines += ["", "| device | model step | build | paired ratio per run | mean | sd | 95% t-interval "
                  "| runs x rounds |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['variant']} | {', '.join(f'{v:.3f}' for v in r['values'])} "
                  f"| {r['mean']:.3f} | {r['sd']:.3f} | [{r['mean'] - r['ci95']:.3f}, {r['mean'] + r['ci95']:.3f}] "
                  f"| {r['runs']} x {r['repeats']} |" for r in mr]
    cp = [r for r in rows if r["part"] == "compile"]
    if cp:
        lines += ["", "| device | model step (forward + loss compiled, fullgraph) | size | eager plain ms | "
                  "compiled manual ms | compiled plain ms | compiled manual / compiled plain (medians) | paired ratio "
                  "[quartiles] | repeats | compile s manual / plain |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['size']} | {r['eager plain ms']:.2f} | "
                  f"{r['compiled manual ms']:.2f} | {r['compiled plain ms']:.2f} | {r['compiled_ratio']:.2f} | "
                  f"{ratio_q(r['compiled_paired_ratio'], r['compiled_paired_ratio_iqr'])} | {r['repeats']} | "
                  f"{r['manual_compile_s']:.1f} / {r['plain_compile_s']:.1f} |" for r in cp]
    ep = [r for r in rows if r["part"] == "episodes"]
    if ep:
        lines += ["", "| device | case | episodes at once (K) | wall s | episodes per hour |", "|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['K']} | {r['wall_s']:.1f} | {r['episodes_per_hour']:.0f} |"
                  for r in ep]
    wh = [r for r in rows if r["part"] == "whitening"]
    if wh:
        lines += ["", "| device | whitening back end (centre + whiten, fwd+bwd) | D | N | ms | vs eigh |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['width']} | {r['batch']} | {r['ms']:.2f} | {r['vs_eigh']:.2f} |"
                  for r in wh]
    wm = [r for r in rows if r["part"] == "whitening-maps"]
    if wm:
        lines += ["", "| device | feature maps (N, C, H, W) | group size | back end (fwd+bwd) | ms | vs eigh, paired "
                  "[quartiles] |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['size']} | {r['group_size']} | {r['name']} | {r['ms']:.2f} | "
                  f"{ratio_q(r['vs_eigh'], r['vs_eigh_iqr'])} |" for r in wm]
    wd = [r for r in rows if r["part"] == "whitening-models"]
    if wd:
        lines += ["", "| device | CNN6 step (32 channels, affine norm) | batch | mode | ms | vs bn of the same mode, "
                  "paired [quartiles] | compiled vs eager, paired [quartiles] | compile s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['size']} | {r['mode']} | {r['ms']:.2f} | "
                  f"{ratio_q(r['vs_bn'], r['vs_bn_iqr'])} | "
                  + (f"{ratio_q(r['vs_eager'], r['vs_eager_iqr'])} | {r['compile_s']:.1f} |" if "vs_eager" in r
                     else "- | - |") for r in wd]
    pf = [r for r in rows if r["part"] == "profile"]
    if pf:
        lines += ["", "| device | model step | size | self CPU ms per step, manual: total / aten kernels / other "
                  "| plain: total / aten / other | extra 'other' ms | manual Functions per step |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['size']} | {r['manual_total_ms']:.2f} / "
                  f"{r['manual_aten_ms']:.2f} / {r['manual_other_ms']:.2f} | {r['autograd_total_ms']:.2f} / "
                  f"{r['autograd_aten_ms']:.2f} / {r['autograd_other_ms']:.2f} | "
                  f"{r['manual_other_ms'] - r['autograd_other_ms']:.2f} | "
                  f"{r['functions_per_step']:.0f} |" for r in pf]
    mt = [r for r in rows if r["part"] == "materialize"]
    if mt:
        lines += ["", "| device | op (fwd+bwd) | input | ms (no zero gradients) | ms (zero gradients materialised) "
                  "| paired ratio [quartiles] |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['size']} | {r['ms']:.3f} | {r['materialized_ms']:.3f} | "
                  f"{ratio_q(r['paired_ratio'], r['paired_ratio_iqr'])} |" for r in mt]
    ins = [r for r in rows if r["part"] == "instruments"]
    if ins:
        lines += ["", "| device | model family | batch | probe step ms | instrument | with it ms | paired ratio to the "
                  "probe step [quartiles] |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['name']} | {r['size']} | {r['probe_ms']:.2f} | {r['instrument']} | "
                  f"{r['ms']:.2f} | {ratio_q(r['paired_ratio'], r['paired_ratio_iqr'])} |" for r in ins]
    return "\n".join(lines) + "\n"


# glibc malloc settings for the timing process: blocks up to 32 MB come from the heap (not fresh
# mmaps) and freed memory is not returned to the system below 1 GB. With glibc's defaults a step's
# large buffers are page-faulted in again and again, and how often depends on each model instance's
# allocation history: in one process three instances of the same CNN6 step measured 1.10x, 1.18x and
# 1.30x plain torch (200 rounds each). The peak-memory children run with the defaults.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def _allocator() -> str:
    if all(os.environ.get(k) == v for k, v in ALLOCATOR_ENV.items()):
        return "glibc " + " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items())
    return "default"


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--peak-memory-child":
        peak_memory_child(sys.argv[2:])
        return 0
    if argv is None and "--default-malloc" not in sys.argv and sys.platform.startswith("linux") \
            and _allocator() == "default":
        # the settings act only when the process starts: run again with them
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], {**os.environ, **ALLOCATOR_ENV})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, few repeats (smoke test)")
    ap.add_argument("--only", choices=("ops", "models", "compile", "episodes", "whitening", "whitening-maps",
                                       "whitening-models", "materialize", "profile",
                                       "curvature",
                                       "instruments"),
                    action="append",
                    help="parts to run (default: ops, models, whitening, materialize, instruments, curvature; compile, "
                         "episodes and profile only when named: minutes each; episodes needs CIFAR-10 under the "
                         "data root)")
    ap.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda when present)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 15, tiny 3)")
    ap.add_argument("--model-repeats", type=int, default=None,
                    help="timed rounds per model step (default 100, tiny 3); a round times each variant once")
    ap.add_argument("--runs", type=int, default=1,
                    help="model steps: repeat the part in this many fresh processes and report the mean, sd and "
                         "95%% t-interval of their paired ratios (default 1: one run, in this process)")
    ap.add_argument("--no-memory", action="store_true", help="model steps: skip the peak-memory processes")
    ap.add_argument("--tiny-compile", action="store_true",
                    help="with --tiny: compile the whitening-models steps too (about a minute per arm)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="time with glibc's default malloc settings (see ALLOCATOR_ENV: noisier model steps)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "bench.json"))
    args = ap.parse_args(argv)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    repeats = args.repeats or (3 if args.tiny else 15)
    parts = args.only or ["ops", "models", "whitening", "whitening-maps", "whitening-models", "materialize",
                          "instruments", "curvature"]
    rows = []
    for dev in devices:
        device = torch.device(dev)
        if "ops" in parts:
            rows += bench_ops(device, args.tiny, repeats)
        if "models" in parts:
            model_repeats = args.model_repeats or (3 if args.tiny else 100)
            if args.runs > 1:
                rows += bench_model_runs(device, args.tiny, model_repeats, args.runs)
            else:
                rows += bench_models(device, args.tiny, model_repeats, memory=not args.no_memory)
        if "compile" in parts:
            rows += bench_compile(device, args.tiny, args.model_repeats or (3 if args.tiny else 30))
        if "episodes" in parts:
            rows += bench_episodes(device, args.tiny)
        if "whitening" in parts:
            rows += bench_whitening(device, args.tiny, repeats)
        if "whitening-maps" in parts:
            rows += bench_whitening_maps(device, args.tiny, repeats)
        if "whitening-models" in parts:
            rows += bench_whitening_models(device, args.tiny, args.model_repeats or (3 if args.tiny else 20),
                                           compiled=not args.tiny or args.tiny_compile)
        if "materialize" in parts:
            rows += bench_materialize(device, args.tiny, repeats)
        if "profile" in parts:
            rows += bench_profile(device, args.tiny)
        if "instruments" in parts:
            rows += bench_instruments(device, args.tiny, args.model_repeats or (3 if args.tiny else 20))
        if "curvature" in parts:
            rows += bench_curvature(device, args.tiny, args.model_repeats or (3 if args.tiny else 20))
    machine = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
               platform.machine(), "threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "allocator": _allocator()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "tiny": args.tiny, "repeats": repeats, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, machine, repeats))
    ms = lambda k: (lambda r: f"{r[k]:.3f}")  # noqa: E731
    ops = [r for r in rows if r["part"] in ("ops", "models")]
    if ops:
        print(table(ops, ["device", "family", "name", "size", ms("manual_ms"), ms("autograd_ms"),
                          lambda r: f"{r['ratio']:.2f}",
                          lambda r: ratio_q(r["paired_ratio"], r["paired_ratio_iqr"]) if "paired_ratio" in r else "",
                          lambda r: f"{r['unfused_paired_ratio']:.3f}" if "unfused_paired_ratio" in r else "",
                          lambda r: "" if r.get("manual_peak_mb") is None else f"{r['manual_peak_mb']:.0f}",
                          lambda r: "" if r.get("autograd_peak_mb") is None else f"{r['autograd_peak_mb']:.0f}"],
                    ["device", "family", "op", "size", "manual ms", "autograd ms", "ratio", "paired ratio [IQR]",
                     "unfused", "manual MB", "autograd MB"]))
    cv = [r for r in rows if r["part"] == "curvature"]
    if cv:
        print()
        print(table(cv, ["device", "name", "size", ms("gradient_ms"), ms("hvp_ms"),
                         lambda r: ratio_q(r["paired_ratio"], r["paired_ratio_iqr"]),
                         lambda r: ratio_q(r["plain_ratio"], r["plain_ratio_iqr"]),
                         lambda r: ratio_q(r["hvp_vs_plain"], r["hvp_vs_plain_iqr"])],
                    ["device", "model", "batch", "gradient ms", "hvp ms", "hvp / gradient [IQR]",
                     "plain torch: hvp / gradient", "hvp: manual / plain"]))
    mr = [r for r in rows if r["part"] == "model runs"]
    if mr:
        print(table(mr, ["device", "name", "variant", lambda r: " ".join(f"{v:.3f}" for v in r["values"]),
                         lambda r: f"{r['mean']:.3f}", lambda r: f"{r['sd']:.3f}",
                         lambda r: f"[{r['mean'] - r['ci95']:.3f}, {r['mean'] + r['ci95']:.3f}]"],
                    ["device", "model step", "build", "paired ratio per run", "mean", "sd", "95% t-interval"]))
    ep = [r for r in rows if r["part"] == "episodes"]
    if ep:
        print()
        print(table(ep, ["device", "name", "K", lambda r: f"{r['wall_s']:.1f}",
                         lambda r: f"{r['episodes_per_hour']:.0f}"],
                    ["device", "case", "K", "wall s", "episodes per hour"]))
    cp = [r for r in rows if r["part"] == "compile"]
    if cp:
        print()
        print(table(cp, ["device", "name", ms("eager plain ms"), ms("compiled manual ms"), ms("compiled plain ms"),
                         lambda r: f"{r['compiled_ratio']:.2f}", lambda r: f"{r['manual_compile_s']:.1f}",
                         lambda r: f"{r['plain_compile_s']:.1f}"],
                    ["device", "model step", "eager plain ms", "compiled manual ms", "compiled plain ms",
                     "manual/plain (compiled)", "compile s manual", "compile s plain"]))
    mt = [r for r in rows if r["part"] == "materialize"]
    if mt:
        print()
        print(table(mt, ["device", "name", "size", ms("ms"), ms("materialized_ms"),
                         lambda r: ratio_q(r["paired_ratio"], r["paired_ratio_iqr"])],
                    ["device", "op (fwd+bwd)", "input", "ms now", "ms with zero grads", "paired ratio [IQR]"]))
    wh = [r for r in rows if r["part"] == "whitening"]
    if wh:
        print()
        print(table(wh, ["device", "name", "width", "batch", ms("ms"), lambda r: f"{r['vs_eigh']:.2f}"],
                    ["device", "whitening back end (fwd+bwd)", "D", "N", "ms", "vs eigh"]))
    slow = [r for r in ops if r["ratio"] > 1.10 and r["family"] != "baseline"]
    print(f"\n{len(ops)} timed cases, {len(slow)} with manual/autograd > 1.10"
          + (": " + ", ".join(f"{r['name']} ({r['ratio']:.2f})" for r in slow) if slow else "")
          + f"\nmachine: {machine}\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
