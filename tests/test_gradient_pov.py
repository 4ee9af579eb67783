"""Experiment gradient-pov: the quick sweep and its report on CIFAR-10-format data written here, the
saved statistics against scipy on the saved weights, and the STL-10 path of the full preset."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from manualbp.experiments import preset
from manualbp.experiments.gradient_pov import CASES, LETTERS, grid
from manualbp.train.probes import QUANTITIES, STATS

from .fakedata import write_cifar_batches, write_stl10

ROOT = Path(__file__).resolve().parents[1]


def sweep(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "gradient-pov", "--device", "cpu",
                           "log.progress=false", *args], capture_output=True, text=True, timeout=900)


def test_sound_preset_builds_the_runs():
    """The run the sound preset builds: CNN6 without batch norm, Adam at lr 8e-4, letter H's
    regularizer -lambda sum tanh(w) in the objective, probes every epoch, STL-10 at batch 20."""
    from manualbp.experiments.gradient_pov import LAMBDA
    from manualbp.nn import BatchNorm
    from manualbp.train.sweep import expand

    from .helpers import built_run
    specs = {s.name: s.config for s in expand(preset("gradient-pov", "sound"), grid("sound"), Path("/tmp/x"))}
    assert len(specs) == 11 * 3
    cfg = specs["H-seed0"]
    assert (cfg["data"]["name"], cfg["batch_size"], cfg["epochs"], cfg["log"]["probe_every"]) == \
        ("stl10", 20, 150, "epoch")
    task, model, opt = built_run(cfg)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 8e-4
    assert not any(isinstance(m, BatchNorm) for m in model.modules())
    tanh = sum(torch.tanh(c.weight.detach()).sum().item() for c in model.convs)
    assert float(task.regularizer(model).detach()) == pytest.approx(-LAMBDA * tanh, rel=1e-5)
    assert built_run(specs["Z-seed0"])[0].regularizer(model) is None          # Z: no regularizer
    assert list(CASES) == ["Z", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]
    assert not any(c["regularizer"]["article_grad"] for c in specs.values())


def test_article_preset_matches_the_authors_code():
    """SPEC's numbers: one run per letter, batch 20, 150 epochs, no batch norm, the weights-pov
    initialisation (one draw, layers 2-5 equal), TensorFlow's SAME padding, file order, lambda 1e-4 (the
    "blog - higher lambda" notebook), Adam-c (lr 0.0008, eps 1e-9),
    the data term at S / B (36 / 20 on STL-10, kept on the CIFAR-10 stand-in of STL-10's sizes),
    G's coded derivative, the after-epoch probe with its moment step."""
    from manualbp.optim import ConstantBiasAdam
    from manualbp.train.sweep import expand

    from .helpers import built_run
    specs = {s.name: s.config for s in expand(preset("gradient-pov", "article"), grid("article"), Path("/tmp/x"))}
    assert sorted(specs) == sorted(f"{c}-seed0" for c in CASES)
    for name, cfg in specs.items():
        letter = name.split("-")[0]
        assert (cfg["data"]["name"], cfg["batch_size"], cfg["epochs"]) == ("stl10", 20, 150)
        assert cfg["data"]["shuffle"] is False and cfg["init_seed"] == 0 and cfg["model"]["equal_init"] is True
        assert cfg["model"]["batch_norm"] is False
        assert cfg["objective"] == {"data": pytest.approx(36 / 20), "regularizer": 1.0}
        assert cfg["optim"] == {"name": "ConstantBiasAdam", "lr": 0.0008, "eps": 1e-9}
        assert cfg["regularizer"]["lam"] == (0.0 if letter == "Z" else 1e-4)
        assert cfg["model"]["padding"] == "tf_same"
        assert cfg["regularizer"]["article_grad"] == (letter == "G")
        assert cfg["log"]["probe_every"] == "after_epoch" and cfg["log"]["probe_moment_step"] is True
    cpu = {s.name: s.config for s in expand(preset("gradient-pov", "article-cpu"), grid("article-cpu"),
                                            Path("/tmp/x"))}
    c = cpu["G-seed0"]
    assert (c["data"]["name"], c["data"]["train_limit"], c["data"]["test_limit"]) == ("cifar10", 5000, 8000)
    assert c["objective"]["data"] == pytest.approx(36 / 20) and c["batch_size"] == 20   # STL-10's S / B
    _, model, opt = built_run(specs["A-seed0"])
    assert type(opt) is ConstantBiasAdam
    assert all(torch.equal(model.convs[1].weight, model.convs[i].weight) for i in (2, 3, 4))


def test_quick_sweep_saves_statistics_that_match_scipy_and_reports_the_claims(tmp_path):
    write_cifar_batches(tmp_path / "data", n_per_batch=20)
    out = sweep("--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"), "--epochs", "2",
                "--seeds", "0,1", "data.test_limit=None")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = tmp_path / "s"
    run = s / "H-seed0"
    with np.load(run / "stats.npz") as z:
        stats, numel, epochs = z["stats"], z["numel"], z["epochs"]
        assert list(z["quantities"]) == list(QUANTITIES) and list(z["statistics"]) == list(STATS)
    assert stats.shape == (2, 6, 6, 5) and list(epochs) == [1, 2]
    # the last probe (last batch of the last epoch, after its update) saw the final weights
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    qi = QUANTITIES.index("weight")
    for layer in range(6):
        w = state[f"convs.{layer}.weight"].double().flatten().numpy()
        want = [w.mean(), w.std(), scipy.stats.skew(w), scipy.stats.kurtosis(w), np.count_nonzero(w)]
        np.testing.assert_allclose(stats[-1, layer, qi], want, rtol=1e-6, atol=1e-12)
        assert numel[-1, layer, qi] == w.size
    assert np.isnan(stats[:, 0, QUANTITIES.index("input_grad")]).all()     # the images need no gradient
    assert not np.isnan(stats[:, 1:, QUANTITIES.index("input_grad")]).any()
    text = (s / "results.md").read_text()
    for letter in CASES:
        assert f"| {letter} | {LETTERS[letter]} | 2 |" in text
    assert "highest test accuracy: case" in text and "lowest test accuracy: case" in text
    assert "case H against the baseline Z" in text
    assert "GSNR (mean over parameters" in text and "| H - Z |" in text     # the per-example instrument
    for fig in ["figures/H-histograms.png", "figures/Z-statistics.png"] + [f"overlay-{st}.png" for st in STATS]:
        assert (s / fig).stat().st_size > 5000, fig
    # the article preset (after-epoch probe with its moment step) and the verdict table against the quick sweep
    out = sweep("--preset", "article-quick", "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "a"),
                "--epochs", "2", "--no-report")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with np.load(tmp_path / "a" / "G-seed0" / "stats.npz") as z:
        assert z["stats"].shape == (2, 6, 6, 5) and list(z["epochs"]) == [1, 2]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "verdicts.py"), "gradient-pov", "--article",
                          str(tmp_path / "a"), "--sound", str(s)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = (s / "verdicts.md").read_text()
    assert "| highest training accuracy |" in text and "| training accuracy of G - Z |" in text
    assert "not run" not in text


def test_stl10_path_of_the_article_preset(tmp_path):
    write_stl10(tmp_path / "data", n_train=20, n_test=6)
    out = sweep("--preset", "article", "--run", "H-seed0", "--epochs", "1", "--data-root", str(tmp_path / "data"),
                "--sweep-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with np.load(tmp_path / "s" / "H-seed0" / "stats.npz") as z:
        assert z["stats"].shape == (1, 6, 6, 5)


def test_letter_g_coded_derivative_by_configuration():
    """regularizer.article_grad=true with letter G (ratio): the article's coded derivative
    (w^2 / (|w| + 1e-7) - |w|) / (w^2 + 1e-7), about -1 for |w| < 1e-4, reaches every weight's gradient;
    without it G's gradient is 0 (R = sign(w) is flat away from 0)."""
    from manualbp.train import resolve

    from .helpers import built_run
    base = {"device": "cpu", "model": {"name": "mlp", "widths": [6, 4, 3]}, "data": {"name": "mnist"}}
    for coded in (False, True):
        cfg = resolve(base, {"regularizer": {"name": CASES["G"]["regularizer"]["name"], "lam": 2.0,
                                             "article_grad": coded}})
        task, model, _ = built_run(cfg)
        w = model.layers[0].weight
        with torch.no_grad():
            w[0, :3] = torch.tensor([2e-5, -3e-5, 0.5])
        task.regularizer(model).backward()
        a = w.detach().abs()
        expected = 2.0 * (w.detach() ** 2 / (a + 1e-7) - a) / (w.detach() ** 2 + 1e-7) if coded else torch.zeros_like(w)
        assert torch.allclose(w.grad, expected, rtol=1e-5, atol=1e-12)
    assert -2.0 < w.grad[0, 0].item() < -1.9 and abs(w.grad[0, 2].item()) < 1e-5   # about -lam, and tiny at 0.5
