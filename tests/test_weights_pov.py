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


def test_sound_preset_builds_the_runs():
    """The runs the sound sweep builds (not the preset's text): CNN6 with N(0, 0.05) weights, batch norm
    with eps 1e-8 and momentum 0.1 where asked, Adam at lr 8e-4, the letter's regularizer at lambda
    1e-5 in the objective; CIFAR-10 at batch 100 for 100 epochs, ten episodes with their own weights."""
    import torch

    from manualbp.models import CNN6
    from manualbp.nn import BatchNorm

    from .helpers import built_run
    specs = expand(preset("weights-pov", "sound"), grid("sound"), Path("/tmp/x"))
    assert len(specs) == 2 * 14 * 10     # BN x (13 cases + Z at batch 20) x episodes
    by_name = {s.name: s.config for s in specs}
    bn, cifar = by_name["bn-A-seed0"], by_name["nobn-A-seed3"]
    assert (cifar["batch_size"], cifar["epochs"], cifar["data"]["name"]) == (100, 100, "cifar10")
    task, model, opt = built_run(bn)
    assert isinstance(model, CNN6) and type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 8e-4
    w = torch.cat([c.weight.detach().flatten() for c in model.convs])
    assert abs(w.std().item() - 0.05) < 0.002 and abs(w.mean().item()) < 0.002
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert len(bns) == 5 and all(b.eps == 1e-8 and b.momentum == 0.1 for b in bns)
    l1 = sum(c.weight.detach().abs().sum().item() for c in model.convs)
    assert float(task.regularizer(model).detach()) == pytest.approx(1e-5 * l1, rel=1e-5)   # letter A: lambda sum |w|
    _, plain, _ = built_run(cifar)
    assert not any(isinstance(m, BatchNorm) for m in plain.modules())
    _, other, _ = built_run(by_name["bn-A-seed1"])
    assert not torch.equal(other.convs[0].weight, model.convs[0].weight)   # episodes: their own initial weights
    assert set(LETTERS) | {"Z20"} == set(CASES)


def test_article_preset_matches_the_authors_code():
    """SPEC's numbers for the article preset: one shared initial draw (layers 2-5 equal), lambda 0.01
    with batch norm and 1e-5 without on CIFAR-10 (none with batch norm on STL-10), the data term at
    S / B (4 / 100; 36 / 20), Adam-c at lr 0.0008 and eps 1e-9, batch 100 for 100 epochs (20 for 150),
    the 50,000 training images in file order, running statistics from 0 with the biased variance."""
    import torch

    from manualbp.nn import BatchNorm
    from manualbp.optim import ConstantBiasAdam

    from .helpers import built_run
    specs = {s.name: s.config for s in expand(preset("weights-pov", "article"), grid("article"), Path("/tmp/x"))}
    assert len(specs) == 2 * 13
    for name, cfg in specs.items():
        bn = name.startswith("bn-")
        lam = cfg["regularizer"]["lam"]
        assert lam == (0.0 if name.split("-")[1] == "Z" else 0.01 if bn else 1e-5), name
        assert cfg["objective"] == {"data": 0.04, "regularizer": 1.0}
        assert (cfg["batch_size"], cfg["eval_batch_size"], cfg["epochs"]) == (100, 100, 100)
        assert cfg["data"]["shuffle"] is False and cfg["data"]["train_limit"] is None
        assert cfg["init_seed"] == 0 and cfg["optim"] == {"name": "ConstantBiasAdam", "lr": 0.0008, "eps": 1e-9}
        assert cfg["regularizer"]["article_grad"] == (name.split("-")[1] == "K")   # K's coded 2 / (w + eps)
    task, model, opt = built_run(specs["bn-C-seed0"])
    assert type(opt) is ConstantBiasAdam and opt.param_groups[0]["eps"] == 1e-9
    ws = [c.weight.detach() for c in model.convs]
    assert all(torch.equal(ws[1], w) for w in ws[2:5]) and not torch.equal(ws[0][:, :3], ws[1][:, :3])
    _, again, _ = built_run(specs["nobn-H-seed0"])
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(model.convs, again.convs))   # one draw for all
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert all(b.running_init == "zero" and b.running_variance == "biased" for b in bns)
    assert float(bns[0].running_var.abs().sum()) == 0.0
    stl = {s.name: s.config for s in expand(preset("weights-pov", "article-stl10"), grid("article-stl10"),
                                            Path("/tmp/x"))}
    assert all(c["regularizer"]["name"] == "none" for n, c in stl.items() if n.startswith("bn-"))
    assert stl["nobn-A-seed0"]["regularizer"]["lam"] == 1e-5
    assert stl["nobn-A-seed0"]["objective"]["data"] == pytest.approx(36 / 20)
    assert (stl["nobn-A-seed0"]["batch_size"], stl["nobn-A-seed0"]["epochs"]) == (20, 150)


def test_two_article_episodes_are_bit_identical_and_the_verdict_table(tmp_path):
    """The article's episodes share their initial weights and data order: on a CPU, episodes 0 and 1
    end with the same weights, bit for bit (the sound preset's do not). The verdict table reads both
    sweeps."""
    import torch
    write_cifar_batches(tmp_path / "data", n_per_batch=30)
    out = sweep("--preset", "article-quick", "--only=-H-", "--seeds", "0,1", "--epochs", "2", "--no-report",
                "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "a"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    a, b = (torch.load(tmp_path / "a" / f"bn-H-seed{s}" / "checkpoint.pt", weights_only=True)["model"] for s in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["bns.0.running_var"].abs().sum()) > 0     # trained: the running statistics moved from 0
    out = sweep("--preset", "quick", "--only=-H-", "--seeds", "0,1", "--epochs", "1", "--no-report",
                "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    a, b = (torch.load(tmp_path / "s" / f"bn-H-seed{s}" / "checkpoint.pt", weights_only=True)["model"] for s in (0, 1))
    assert not torch.equal(a["convs.0.weight"], b["convs.0.weight"])
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "verdicts.py"), "weights-pov", "--article",
                          str(tmp_path / "a"), "--sound", str(tmp_path / "s")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = (tmp_path / "s" / "verdicts.md").read_text()
    assert "| train - test gap, points: on - off (paired) |" in text and "BN overfits more" in text
    assert "over 2 episodes" in text and "over 1 regularizers" in text and "| nan |" not in text


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
    for finding in ("1. BN makes", "2. BN overfits more", "3. Smaller batches", "4. (bn) sparsity", "4. (nobn)",
                    "### Weight spectra and the train-test gap", "Pearson r with the gap: spectral norm"):
        assert finding in text, finding
    for fig in ("regularizers.png", "summary-cifar10.png", "hist3d-cifar10-bn.png", "figures/cifar10/Z-bn.png",
                "figures/cifar10/L-nobn.png", "mean-weights-cifar10-bn.png"):
        assert (s / fig).stat().st_size > 5000, fig
    assert any((s / "tb_report").iterdir())
    assert (s / "bn-Z-seed0" / "status.png").stat().st_size > 20000     # one status figure per run


def test_stl10_path_of_the_article_stl10_preset(tmp_path):
    write_stl10(tmp_path / "data", n_train=20, n_test=6)
    out = sweep("--preset", "article-stl10", "--run", "nobn-A-seed0", "--epochs", "1", "--data-root",
                str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "s" / "nobn-A-seed0" / "DONE.json").is_file()


def test_missing_data_gives_a_clear_error(tmp_path):
    out = sweep("--data-root", str(tmp_path), "--sweep-dir", str(tmp_path / "s"), "--only", "bn-Z-seed0", timeout=300)
    assert out.returncode != 0
    assert "CIFAR-10 not found" in out.stdout + out.stderr and "--download" in out.stdout + out.stderr


def test_experiment_is_discovered():
    assert hasattr(get_experiment("weights-pov"), "report")
