#!/usr/bin/env python
"""``make gpu-check``: everything that needs a CUDA device, in one command of about 8 minutes.

    python scripts/gpu_check.py                 # writes runs/gpu-check/report.md

1. The CUDA tests: ``pytest -k cuda`` over the gradient suite (float64 gradcheck and the float32 /
   float64 reference checks on CUDA), the model families against plain torch, torch.compile, and a
   run of the training loop.
2. The GPU benchmark: one training step per model family, manual against plain torch, eager and
   compiled; the whitening back ends (eigh, SVD, Newton-Schulz) at D = 64 to 1024.
3. One short real training per model family (the zca MLP on Fashion-MNIST, CNN6 with batch norm on
   CIFAR-10, the segmentation auto-encoder on Penn-Fudan), on the data under the data root, or on
   small synthetic data in the same on-disk formats where a dataset is missing (the report says
   which).

Without a CUDA device it says so and exits 0. The report (Markdown) names the GPU, torch and CUDA
versions and the commit, and gives each part's command, wall time and results.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAININGS = [   # (model family, experiment, dataset, preset, overrides)
    ("MLP + ZCA", "zca", "fashion_mnist", "quick", ["data.train_limit=20000", "data.test_limit=5000"]),
    ("CNN6 + batch norm", "weights-pov", "cifar10", "quick", ["model.batch_norm=true"]),
    ("segmentation AE", "sparse-filtering", "penn_fudan", "quick", []),   # synthetic data: 40 images, n_train 20
]


def _run(cmd, timeout, log) -> tuple[int, float, str]:
    t0 = time.time()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        so = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, text = 124, so + f"\n(stopped after {timeout} s)"
    wall = time.time() - t0
    log.write_text(text)
    return rc, wall, text


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _data_root_for(name: str, out: Path) -> tuple[str, str]:
    """(data root, "real" or "synthetic"): the configured root when it holds ``name``, else small
    synthetic data in the real on-disk format under ``out``."""
    from manualbp.data import DataError, data_root, load_dataset
    try:
        load_dataset(name, "test", limit=10)
        return str(data_root()), "real"
    except (DataError, ValueError, OSError):
        pass
    from tests import fakedata
    root = out / "synthetic-data"
    if name == "fashion_mnist":
        fakedata.write_mnist_like(root, "FashionMNIST", n_train=2000, n_test=500)
    elif name == "cifar10":
        fakedata.write_cifar_batches(root, n_per_batch=400)
    else:
        fakedata.write_penn_fudan(root, n=40)
    return str(root), "synthetic"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu-check"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each short training (default 3)")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu runs the script itself without a GPU "
                                                     "(a dry run: the CUDA tests are then all skipped)")
    args = ap.parse_args(argv)
    import torch
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device (torch.cuda.is_available() is False); nothing to check")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        where = (f"GPU: {torch.cuda.get_device_name(0)} ({props.total_memory / 2 ** 30:.0f} GiB), "
                 f"CUDA {torch.version.cuda}")
    else:
        where = "device: cpu (a dry run of the script)"
    lines = ["# GPU check", "", f"{where}, torch {torch.__version__}, commit {_commit()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    failed = 0

    # 1. the CUDA tests
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/test_gradients.py",
           "tests/test_models.py", "tests/test_compile.py", "tests/test_train.py"]
    rc, wall, text = _run(cmd, 240, out / "tests.log")
    counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", text)
    summary = ", ".join(f"{n} {w}" for n, w in counts) or "no summary (see tests.log)"
    lines += ["## 1. CUDA tests", "", f"`{' '.join(cmd[1:])}`: {summary}; exit {rc}; {wall:.0f} s.", ""]
    failed += rc != 0
    print(f"tests: {summary} ({wall:.0f} s)", flush=True)

    # 2. the GPU benchmark
    cmd = [sys.executable, "scripts/bench.py", "--device", dev, "--only", "models", "--only", "compile", "--only",
           "whitening", "--model-repeats", "30", "--out", str(out / "bench.json")]
    rc, wall, text = _run(cmd, 300, out / "bench.log")
    lines += ["## 2. Benchmark", "", f"`python {' '.join(cmd[1:])}`: exit {rc}; {wall:.0f} s.", ""]
    if (out / "bench.md").is_file() and rc == 0:
        lines += [(out / "bench.md").read_text(), ""]
    failed += rc != 0
    print(f"bench: exit {rc} ({wall:.0f} s)", flush=True)

    # 3. one short real training per model family
    lines += ["## 3. Short trainings", "", "| model family | command | data | exit | final test acc | wall s |",
              "|---|---|---|---|---|---|"]
    for family, exp, dataset, preset, over in TRAININGS:
        root, kind = _data_root_for(dataset, out)
        run_dir = out / "runs" / exp
        cmd = [sys.executable, "scripts/train.py", exp, "--preset", preset, "--device", dev, "--epochs",
               str(args.epochs), "--data-root", root, "--run-dir", str(run_dir), "log.progress=false", *over]
        if kind == "synthetic" and dataset == "penn_fudan":
            cmd.append("data.options.n_train=20")
        rc, wall, text = _run(cmd, 150, out / f"train-{exp}.log")
        acc = ""
        done = run_dir / "DONE.json"
        if rc == 0 and done.is_file():
            acc = f"{json.loads(done.read_text())['final']['test_acc']:.4f}"
        shown = " ".join(c if c != root else "$MANUALBP_DATA" for c in cmd[1:] if c != str(run_dir))
        lines.append(f"| {family} | `python {shown}` | {dataset} ({kind}) | {rc} | {acc} | {wall:.0f} |")
        failed += rc != 0
        print(f"train {exp}: exit {rc}, test acc {acc} ({wall:.0f} s)", flush=True)
    lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    print(f"report: {out / 'report.md'}" + (f"; {failed} part(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
