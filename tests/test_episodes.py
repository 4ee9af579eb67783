"""K episodes stacked in one process (torch.func): each episode equals the separate run with its seed
(CNN6 with batch norm and a regularizer, Adam; CNN6 without BN, SGD with momentum), and what it does not
support is refused by name."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from manualbp.experiments import preset
from manualbp.train import ConfigError, resolve, train
from manualbp.train.episodes import train_episodes

from .fakedata import write_cifar_batches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(root, n_per_batch=40)      # 200 train, 40 test
    return root


def _cfg(root, **over):
    base = dict(preset("weights-pov", "quick"), data={"name": "cifar10", "root": str(root)}, batch_size=40,
                device="cpu", epochs=2, log={"progress": False, "probe_every": 0})
    return resolve(base, over)


@pytest.mark.parametrize("over", [
    {"model": {"batch_norm": True}, "regularizer": {"name": "neg_tanh", "lam": 1e-3}},
    {"optim": {"name": "SGD", "lr": 0.05, "momentum": 0.9}, "regularizer": {"name": "l1", "lam": 1e-4}},
], ids=["bn-adam-neg_tanh", "sgd-l1"])
def test_stacked_episodes_equal_separate_runs(cifar, tmp_path, over):
    cfg = _cfg(cifar, **over)
    rows = train_episodes(cfg, [0, 1, 2], log=lambda *_: None)
    assert len(rows) == 3 and all(len(r) == 2 for r in rows)
    for seed, stacked in zip([0, 1, 2], rows):
        alone = train(dict(cfg, seed=seed), tmp_path / f"s{seed}", log=lambda *_: None)
        got, want = stacked[-1], alone["final"]
        for k in ("train_loss", "test_loss", "train_objective"):
            assert got[k] == pytest.approx(want[k], rel=2e-4), (seed, k)   # float32 sums in another order
        for k, n in (("train_acc", 200), ("test_acc", 40)):   # at most one example's argmax may flip
            assert abs(got[k] - want[k]) <= 1 / n + 1e-12, (seed, k)
    assert rows[0][-1]["train_loss"] != rows[1][-1]["train_loss"]     # the episodes differ


def test_unsupported_settings_are_refused(cifar):
    with pytest.raises(ConfigError, match="grad_transforms is not supported for stacked episodes"):
        train_episodes(_cfg(cifar, grad_transforms=[{"name": "gradient_noise"}]), [0, 1])
    with pytest.raises(ConfigError, match="distinct seeds"):
        train_episodes(_cfg(cifar), [1, 1])
    with pytest.raises(ConfigError, match="optim.name 'LBFGS' is not known to update element-wise"):
        train_episodes(_cfg(cifar, optim={"name": "LBFGS", "lr": 0.1}), [0, 1])
    with pytest.raises(ConfigError, match="model.dilation .* is not supported for stacked episodes"):
        from manualbp.experiments.optimizers import case_config
        cfg = resolve(dict(preset("optimizers", "quick"), data={"name": "mnist", "root": str(cifar)}, device="cpu",
                           **case_config(1, 0.01, 12)))
        train_episodes(cfg, [0, 1])


def test_cli_episodes_option(cifar, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "weights-pov", "--episodes", "2",
                          "--data-root", str(cifar), "--device", "cpu", "--epochs", "1", "batch_size=40",
                          "--run-dir", str(tmp_path / "e"), "log.progress=false"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((tmp_path / "e" / "episodes.json").read_text())
    assert saved["seeds"] == [0, 1] and len(saved["metrics"]) == 2 and saved["metrics"][1][0]["epoch"] == 1
