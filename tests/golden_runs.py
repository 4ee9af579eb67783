"""Two small runs with every instrument on, and what they write: probes.jsonl, instruments.jsonl,
stats.npz and the TensorBoard tags and values. ``tests/test_instrument_outputs.py`` runs them again and
compares with ``tests/data/instrument_outputs.json.gz``, written by the loop as it stood before its
instruments became classes (``python -m tests.golden_runs --write``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np

from manualbp.train import resolve, train

from .fakedata import write_mnist_like

GOLDEN = Path(__file__).resolve().parent / "data" / "instrument_outputs.json.gz"

CONFIGS = {
    # probes every 2 steps, per-example statistics, optimizer state, spectra every epoch, histograms
    "every-2": {"log": {"probe_every": 2, "per_example": True, "optimizer_state": True, "spectra": "epoch",
                        "histograms": True, "progress": False}},
    # the articles' after-epoch probe with its moment step and layer 1's passed gradient
    "after-epoch": {"log": {"probe_every": "after_epoch", "probe_moment_step": True, "per_example": True,
                            "optimizer_state": True, "first_input_grad": True, "histograms": True,
                            "progress": False}},
}


def config(data_root, name: str) -> dict:
    preset = {"experiment": "golden", "epochs": 2, "batch_size": 50, "device": "cpu", "dtype": "float64",
              "data": {"name": "fashion_mnist", "root": str(data_root), "train_limit": 200, "test_limit": 50},
              "model": {"name": "mlp", "widths": [784, 12, 10]},
              "optim": {"name": "Adam", "lr": 3e-3}}
    return resolve(preset, CONFIGS[name])


def _rows(path: Path) -> list:
    if not path.is_file():
        return []
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in path.read_text().splitlines()]


def _tensorboard(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    return {"scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in sorted(tags["scalars"])},
            "histograms": sorted(tags["histograms"])}


def outputs(run: Path) -> dict:
    """What a run wrote, in comparable form (wall times left out)."""
    out = {"probes": _rows(run / "probes.jsonl"), "instruments": _rows(run / "instruments.jsonl"),
           "metrics": _rows(run / "metrics.jsonl"), "tensorboard": _tensorboard(run)}
    npz = run / "stats.npz"
    if npz.is_file():
        with np.load(npz) as z:
            out["stats_npz"] = {k: z[k].tolist() for k in sorted(z.files)}
    return out


def make(data_root: Path, runs_root: Path) -> dict:
    res = {}
    for name in CONFIGS:
        train(config(data_root, name), runs_root / name, log=lambda *_: None)
        res[name] = outputs(runs_root / name)
    return res


def write_data(root: Path) -> Path:
    write_mnist_like(root, "FashionMNIST", n_train=200, n_test=50)
    return root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"write {GOLDEN}")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = make(write_data(Path(tmp) / "data"), Path(tmp) / "runs")
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(GOLDEN, "wt") as f:
            json.dump(res, f)
        print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
