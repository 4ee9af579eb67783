"""Experiment weights-pov: the quick sweep and its report on CIFAR-10-format data written here, the
STL-10 path of the full preset on files in STL-10's binary format, and the missing-data message."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manualbp.experiments import get_experiment, preset
from manualbp.experiments.weights_pov import CASES, LETTERS, bootstrap_correlation, excess_kurtosis, grid
from manualbp.train import resolve
from manualbp.train.sweep import expand

from .fakedata import write_cifar_batches, write_stl10

ROOT = Path(__file__).resolve().parents[1]


def sweep(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "weights-pov", "--device", "cpu",
                           "log.progress=false", *args], capture_output=True, text=True, timeout=timeout)


def test_presets_follow_the_article():
    full = resolve(preset("weights-pov", "full"))
    m = full["model"]
    assert (m["name"], m["init_std"], m["bn_eps"], m["bn_momentum"]) == ("cnn6", 0.05, 1e-8, 0.1)
    assert full["optim"] == {"name": "Adam", "lr": 0.0008}
    specs = expand(preset("weights-pov", "full"), grid("full"), Path("/tmp/x"))
    assert len(specs) == 2 * 2 * 14 * 10     # datasets x BN x (13 cases + Z at batch 20) x episodes
    stl = [s for s in specs if s.labels["dataset"] == "stl10"][0].config
    cifar = [s for s in specs if s.labels["dataset"] == "cifar10" and s.labels["case"] == "A"][0].config
    assert (stl["batch_size"], stl["epochs"], cifar["batch_size"], cifar["epochs"]) == (20, 150, 100, 100)
    assert cifar["regularizer"] == {"name": "l1", "lam": 1e-5}
    assert set(LETTERS) | {"Z20"} == set(CASES)


def test_statistics_helpers():
    rng = np.random.default_rng(0)
    assert abs(excess_kurtosis(rng.normal(size=200000))) < 0.05
    assert excess_kurtosis(rng.laplace(size=200000)) == pytest.approx(3.0, abs=0.2)
    x = np.arange(13.0)
    r, lo, hi = bootstrap_correlation(x, -2 * x + rng.normal(scale=0.1, size=13))
    assert r < -0.99 and lo <= r <= hi


def test_quick_sweep_writes_tables_findings_and_figures(tmp_path):
    write_cifar_batches(tmp_path / "data", n_per_batch=40)
    out = sweep("--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"), "--epochs", "1",
                "data.test_limit=None")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = tmp_path / "s"
    text = (s / "results.md").read_text()
    for letter in CASES:
        assert f"| {letter} | " in text, letter
    for finding in ("1. BN makes", "2. BN overfits more", "3. Smaller batches", "4. (bn) sparsity", "4. (nobn)"):
        assert finding in text, finding
    for fig in ("regularizers.png", "summary-cifar10.png", "hist3d-cifar10-bn.png", "figures/cifar10/Z-bn.png",
                "figures/cifar10/L-nobn.png"):
        assert (s / fig).stat().st_size > 5000, fig
    assert any((s / "tb_report").iterdir())


def test_stl10_path_of_the_full_preset(tmp_path):
    write_stl10(tmp_path / "data", n_train=20, n_test=6)
    out = sweep("--preset", "full", "--run", "stl10-bn-A-seed0", "--epochs", "1", "--data-root",
                str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "s" / "stl10-bn-A-seed0" / "DONE.json").is_file()


def test_missing_data_gives_a_clear_error(tmp_path):
    out = sweep("--data-root", str(tmp_path), "--sweep-dir", str(tmp_path / "s"), "--only", "bn-Z-seed0", timeout=300)
    assert out.returncode != 0
    assert "CIFAR-10 not found" in out.stdout + out.stderr and "--download" in out.stdout + out.stderr


def test_experiment_is_discovered():
    assert hasattr(get_experiment("weights-pov"), "report")
