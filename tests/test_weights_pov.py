"""Experiment weights-pov: the quick sweep and its report on CIFAR-10-format data written here, the
STL-10 path of the full preset on files in STL-10's binary format, and the missing-data message."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manualbp.experiments import get_experiment, preset
from manualbp.experiments.weights_pov import CASES, LETTERS, bootstrap_correlation, excess_kurtosis, grid
from manualbp.train.sweep import expand

from .fakedata import write_cifar_batches, write_stl10

ROOT = Path(__file__).resolve().parents[1]


def sweep(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "weights-pov", "--device", "cpu",
                           "log.progress=false", *args], capture_output=True, text=True, timeout=timeout)


def test_full_preset_builds_the_articles_runs():
    """The runs the full sweep builds (not the preset's text): CNN6 with N(0, 0.05) weights, batch norm
    with eps 1e-8 and momentum 0.1 where asked, Adam at lr 8e-4, the letter's regularizer at lambda
    1e-5 in the objective; STL-10 at batch 20 for 150 epochs, CIFAR-10 at batch 100 for 100."""
    import torch

    from manualbp.models import CNN6
    from manualbp.nn import BatchNorm

    from .helpers import built_run
    specs = expand(preset("weights-pov", "full"), grid("full"), Path("/tmp/x"))
    assert len(specs) == 2 * 2 * 14 * 10     # datasets x BN x (13 cases + Z at batch 20) x episodes
    by_name = {s.name: s.config for s in specs}
    stl, cifar = by_name["stl10-bn-A-seed0"], by_name["cifar10-nobn-A-seed3"]
    assert (stl["batch_size"], stl["epochs"], stl["data"]["name"]) == (20, 150, "stl10")
    assert (cifar["batch_size"], cifar["epochs"], cifar["data"]["name"]) == (100, 100, "cifar10")
    task, model, opt = built_run(stl)
    assert isinstance(model, CNN6) and type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 8e-4
    w = torch.cat([c.weight.detach().flatten() for c in model.convs])
    assert abs(w.std().item() - 0.05) < 0.002 and abs(w.mean().item()) < 0.002
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert len(bns) == 5 and all(b.eps == 1e-8 and b.momentum == 0.1 for b in bns)
    l1 = sum(c.weight.detach().abs().sum().item() for c in model.convs)
    assert float(task.regularizer(model).detach()) == pytest.approx(1e-5 * l1, rel=1e-5)   # letter A: lambda sum |w|
    _, plain, _ = built_run(cifar)
    assert not any(isinstance(m, BatchNorm) for m in plain.modules())
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
