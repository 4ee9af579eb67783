"""The loop across model families and schedules: CNN6 classification and the segmentation auto-encoder,
runs in phases, shared initial weights, gradient transforms, kill -9 resume, the NaN stop for whitening
layers, TensorBoard probes by default and hparams, checkpoints loaded as data. Small data written here
in the real on-disk formats."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manualbp.optim.transforms import GradientNoise
from manualbp.train import ConfigError, NonFiniteLoss, RunDir, RunDirError, resolve, train
from manualbp.train.loop import build_initial_model
from manualbp.train.sweep import expand, run_sweep
from manualbp.train.tasks import make_task, mask_metrics

from .fakedata import write_cifar_batches, write_mnist_like, write_penn_fudan

ROOT = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(root, n_per_batch=40)     # 200 train, 40 test images in the python-pickle format
    return root


@pytest.fixture(scope="module")
def penn(tmp_path_factory):
    root = tmp_path_factory.mktemp("penn")
    write_penn_fudan(root, n=12)
    return root


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    write_mnist_like(root, "FashionMNIST", n_train=200, n_test=60)
    return root


def cnn6_cfg(root, **over):
    preset = {"experiment": "test", "epochs": 3, "batch_size": 40, "device": "cpu",
              "data": {"name": "cifar10", "root": str(root)},
              "model": {"name": "cnn6", "batch_norm": True, "bn_eps": 1e-8},
              "optim": {"name": "Adam", "lr": 8e-4}, "regularizer": {"name": "neg_tanh", "lam": 1e-5},
              "grad_transforms": [{"name": "gradient_noise", "eta": 0.01}], "log": {"progress": False}}
    return resolve(preset, over)


def segae_cfg(root, **over):
    preset = {"experiment": "test", "task": "segmentation", "batch_size": 4, "device": "cpu",
              "data": {"name": "penn_fudan", "root": str(root), "size": 32, "options": {"n_train": 8}},
              "model": {"name": "segae", "size": 32, "sparse_activation": "soft_abs"},
              "optim": {"name": "Adam", "lr": 1e-3}, "log": {"progress": False},
              "phases": [{"name": "sparse", "epochs": 2, "objective": ["sparse_filtering"], "train": ["enc", "proj"]},
                         {"name": "end-to-end", "epochs": 2, "lr_scale": 10.0}]}
    return resolve(preset, over)


def run_in_subprocess(cfg, run_dir, kill_at=None):
    """train() in a fresh process (so kill -9 hits a real process), optionally SIGKILLed at a global step."""
    from .helpers import fault_env
    env = fault_env(dict(os.environ, MANUALBP_CACHE=str(Path(run_dir).parent / "cache")), kill_at=kill_at)
    code = ("import json, sys; from manualbp.train import train; "
            "train(json.loads(sys.argv[1]), sys.argv[2])")
    return subprocess.run([sys.executable, "-c", code, json.dumps(cfg), str(run_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_same_run(a: Path, b: Path):
    ra, rb = RunDir(a), RunDir(b)
    assert ra.finished() and rb.finished()
    assert without_time(ra.read_metrics()) == without_time(rb.read_metrics())
    sa, sb = ra.load_checkpoint("cpu"), rb.load_checkpoint("cpu")
    assert sa["model"].keys() == sb["model"].keys()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_cnn6_with_batch_norm_and_noise_killed_resumes_bit_identically(cifar, tmp_path):
    cfg = cnn6_cfg(cifar)
    assert run_in_subprocess(cfg, tmp_path / "full").returncode == 0
    killed = run_in_subprocess(cfg, tmp_path / "resumed", kill_at=8)   # 5 steps per epoch: inside epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert RunDir(tmp_path / "resumed").load_checkpoint("cpu")["epoch"] == 1
    again = run_in_subprocess(cfg, tmp_path / "resumed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after epoch 1 of 3" in again.stdout
    assert_same_run(tmp_path / "full", tmp_path / "resumed")
    rows = RunDir(tmp_path / "full").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["train_acc"] > 0.1


def test_segmentation_ae_in_phases_killed_in_phase_two_resumes_bit_identically(penn, tmp_path):
    cfg = segae_cfg(penn)
    assert cfg["epochs"] == 4
    full = run_in_subprocess(cfg, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run_in_subprocess(cfg, tmp_path / "resumed", kill_at=6)   # 2 steps per epoch: inside epoch 3, phase 2
    assert killed.returncode == -signal.SIGKILL
    ck = RunDir(tmp_path / "resumed").load_checkpoint("cpu")
    assert (ck["epoch"], ck["phase"]) == (2, 0)
    assert run_in_subprocess(cfg, tmp_path / "resumed").returncode == 0
    assert_same_run(tmp_path / "full", tmp_path / "resumed")
    rows = RunDir(tmp_path / "full").read_metrics()
    assert [r["phase"] for r in rows] == ["sparse", "sparse", "end-to-end", "end-to-end"]
    assert [r["lr"] for r in rows] == [1e-3, 1e-3, 1e-2, 1e-2]
    for k in ("test_iou", "test_dice", "test_acc", "train_iou"):
        assert all(0.0 <= r[k] <= 1.0 for r in rows), k


def test_a_phase_trains_only_its_parameters_and_its_objective(penn, tmp_path):
    cfg = segae_cfg(penn, phases={"0": {"epochs": 1}, "1": {"epochs": 1}})
    cfg["phases"] = cfg["phases"][:1]
    cfg["epochs"] = 1
    train(cfg, tmp_path / "r", log=quiet)
    init = build_initial_model(cfg, make_task(cfg, torch.device("cpu")), "cpu").state_dict()
    final = RunDir(tmp_path / "r").load_checkpoint("cpu")["model"]
    changed = {k for k in init if not torch.equal(init[k], final[k])}
    assert changed and all(k.startswith(("enc_convs", "proj")) for k in changed)
    assert any(k.startswith("enc_convs") for k in changed)


def test_phase_settings_are_checked():
    with pytest.raises(ConfigError, match=r"phases\[0\]: unknown key\(s\) \['epoch'\]; known keys"):
        resolve({"phases": [{"epoch": 2}]})
    with pytest.raises(ConfigError, match="set the epochs of each phase instead"):
        resolve({"phases": [{"epochs": 2}]}, {"epochs": 5})
    assert resolve({"phases": [{"epochs": 2}, {"epochs": 3}]}, {"phases": {"1": {"epochs": 4}}})["epochs"] == 6


def test_unknown_objective_term_and_train_prefix_are_refused(penn, tmp_path):
    with pytest.raises(ValueError, match="unknown: \\['sparse'\\]"):
        train(segae_cfg(penn, phases={"0": {"objective": ["sparse"]}}), tmp_path / "a", log=quiet)
    with pytest.raises(ValueError, match="prefix 'encoder' matches no parameter"):
        train(segae_cfg(penn, phases={"0": {"train": ["encoder"]}}), tmp_path / "b", log=quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()   # refused before the folder


def test_init_seed_gives_identical_initial_weights_across_data_seeds(cifar):
    def init(seed, init_seed):
        cfg = cnn6_cfg(cifar, seed=seed, init_seed=init_seed)
        return build_initial_model(cfg, make_task(cfg, torch.device("cpu")), "cpu").state_dict()
    a, b, c = init(0, 7), init(1, 7), init(1, None)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_shared_init_runs_differ_only_in_data_order(cifar, tmp_path):
    a = train(cnn6_cfg(cifar, epochs=1, seed=0, init_seed=3, grad_transforms=[]), tmp_path / "a", log=quiet)
    b = train(cnn6_cfg(cifar, epochs=1, seed=1, init_seed=3, grad_transforms=[]), tmp_path / "b", log=quiet)
    assert a["final"]["train_loss"] != b["final"]["train_loss"]


def test_gradient_noise_follows_its_schedule_and_is_a_config_switch(cifar, tmp_path):
    gn = GradientNoise(eta=0.3, gamma=0.55)
    assert gn.sigma(0) == pytest.approx(0.3 ** 0.5) and gn.sigma(99) == pytest.approx((0.3 / 100 ** 0.55) ** 0.5)
    p = torch.nn.Parameter(torch.zeros(20000))
    p.grad = torch.zeros(20000)
    gn([p], 99, 1, torch.Generator().manual_seed(0))
    assert p.grad.std().item() == pytest.approx(gn.sigma(99), rel=0.03)
    p.grad.zero_()
    GradientNoise(eta=1.0, scalar=True)([p], 0, 1, torch.Generator().manual_seed(0))
    assert p.grad.unique().numel() == 1 and p.grad[0] != 0            # the article's one value per step
    base = train(cnn6_cfg(cifar, epochs=1, grad_transforms=[]), tmp_path / "a", log=quiet)
    zero = train(cnn6_cfg(cifar, epochs=1, grad_transforms=[{"name": "gradient_noise", "eta": 0.0}]),
                 tmp_path / "b", log=quiet)
    noisy = train(cnn6_cfg(cifar, epochs=1, grad_transforms=[{"name": "gradient_noise", "eta": 1.0}]),
                  tmp_path / "c", log=quiet)
    assert without_time([base["final"]]) == without_time([zero["final"]])
    assert noisy["final"]["train_loss"] != base["final"]["train_loss"]
    with pytest.raises(ValueError, match="unknown setting 'sigma'; known settings: eta, gamma, scalar"):
        train(cnn6_cfg(cifar, grad_transforms=[{"name": "gradient_noise", "sigma": 1.0}]), tmp_path / "d", log=quiet)


def test_mask_metrics():
    assert mask_metrics([2.0, 1.0, 1.0]) == {"iou": 0.5, "dice": pytest.approx(2 / 3)}
    assert mask_metrics([0.0, 0.0, 0.0]) == {"iou": 1.0, "dice": 1.0}


@pytest.mark.parametrize("norm", [
    {"norm": "decorrelated_batch_norm", "norm_kwargs": {"group_size": 16, "eps": 1e-3}},
    {"norm": "zca_example", "norm_kwargs": {"backend": "svd", "eps": 1.0}},
    {"norm": "zca_dim", "norm_kwargs": {"backend": "eigh", "eps": 1e-3}},
])
def test_nan_stop_for_whitening_layers_names_epoch_and_step(fashion, tmp_path, norm):
    cfg = resolve({"epochs": 2, "batch_size": 50, "device": "cpu", "data": {"name": "fashion_mnist",
                                                                           "root": str(fashion)},
                   "model": {"name": "mlp", "widths": [784, 32, 16, 10], "norm_at": 1, **norm},
                   "optim": {"name": "SGD", "lr": 1e10}, "log": {"progress": False}})
    with pytest.raises(NonFiniteLoss, match=r"NaN or Inf at epoch 1, step [1-4] \(step [1-4] of the epoch\)"):
        train(cfg, tmp_path / "r", log=quiet)
    assert not RunDir(tmp_path / "r").finished()


def test_nan_stop_comes_near_the_first_bad_step(fashion, tmp_path):
    cfg = resolve({"epochs": 1, "batch_size": 10, "device": "cpu", "check_finite_every": 5,
                   "data": {"name": "fashion_mnist", "root": str(fashion)},
                   "model": {"name": "mlp", "widths": [784, 16, 10]},
                   "optim": {"name": "tests.helpers:NaNAtStep", "lr": 0.01, "nan_step": 2}, "log": {"progress": False}})
    seen = []
    orig = torch.Tensor.backward

    def counting(self, *a, **k):
        seen.append(1)
        return orig(self, *a, **k)
    torch.Tensor.backward = counting
    try:
        with pytest.raises(NonFiniteLoss, match="step 3 "):
            train(cfg, tmp_path / "r", log=quiet)
    finally:
        torch.Tensor.backward = orig
    assert len(seen) == 5     # stopped at the first check, not after the epoch's 20 steps


def test_checkpoints_are_loaded_as_data_only(fashion, tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    torch.save({"epoch": 1, "payload": Path("any/pickled/object")}, rd.checkpoint)   # arbitrary pickle: refused
    with pytest.raises(RunDirError, match="cannot be read"):
        rd.load_checkpoint("cpu")


def test_checkpoint_with_rng_state_round_trips_with_weights_only(fashion, tmp_path):
    cfg = resolve({"epochs": 1, "device": "cpu", "data": {"name": "fashion_mnist", "root": str(fashion)},
                   "model": {"name": "mlp", "widths": [784, 8, 10]}, "log": {"progress": False}})
    train(cfg, tmp_path / "r", log=quiet)
    ck = torch.load(RunDir(tmp_path / "r").checkpoint, weights_only=True)
    assert ck["epoch"] == 1 and "numpy" in ck["rng"] and isinstance(ck["noise"], torch.Tensor)


def test_train_cli_logs_histograms_by_default(fashion, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "zca", "--epochs", "1", "--data-root",
                          str(fashion), "--run-dir", str(tmp_path / "r"), "--device", "cpu", "batch_size=50",
                          "model.widths=[784,32,16,10]", "data.train_limit=None", "data.test_limit=None"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ea = EventAccumulator(str(tmp_path / "r" / "tb"), size_guidance={"histograms": 0})
    ea.Reload()
    assert "probe_hist/weight/layer1" in ea.Tags()["histograms"]
    assert "probe_kurtosis/post_activation/layer1" in ea.Tags()["scalars"]


def _hparams(run_tb: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    ea = EventAccumulator(str(run_tb))
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    ssi = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    return {"hparams": {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in ssi.hparams.items()},
            "metrics": {m.name.tag for m in exp.metric_infos}}


def test_sweep_runs_carry_hparams_of_the_keys_that_vary(fashion, tmp_path):
    base = {"experiment": "test", "epochs": 1, "device": "cpu", "data": {"name": "fashion_mnist", "root": str(fashion)},
            "model": {"name": "mlp", "widths": [784, 8, 10]}, "log": {"progress": False}}
    specs = expand(base, {"optim.lr": [1e-3, 3e-3], "seed": [0, 1]}, tmp_path / "sweep")
    assert specs[0].hparams == ["optim.lr", "seed"]
    run_sweep(specs, ["cpu"])
    for s in specs:
        hp = _hparams(Path(s.run_dir) / "tb")
        assert hp["hparams"] == {"optim.lr": s.config["optim"]["lr"], "seed": s.config["seed"]}
        assert {"test/acc", "test/loss", "train/acc", "train/loss"} <= hp["metrics"]


def test_unknown_settings_anywhere_list_the_known_ones(fashion, tmp_path):
    base = {"epochs": 1, "device": "cpu", "data": {"name": "fashion_mnist", "root": str(fashion)},
            "log": {"progress": False}}
    cases = [({"model": {"name": "mlp", "widths": [784, 8, 10], "norm": "zca_dim", "norm_kwargs": {"epsilon": 3}}},
              r"norm_kwargs of 'zca_dim': unknown setting 'epsilon'; known settings: eps, backend"),
             ({"model": {"name": "mlp", "widths": [784, 8, 10], "activaton": "relu"}},
              r"model 'mlp': unknown setting 'activaton'; known settings: widths, activation"),
             ({"model": {"name": "mlp", "widths": [784, 8, 10]}, "optim": {"name": "Adam", "lr": 1e-3, "beta": 0.9}},
              r"optim Adam: unknown setting 'beta'; known settings: lr, betas"),
             ({"model": {"name": "mlp", "widths": [784, 8, 10]}, "data": {"options": {"n_trian": 3}}},
              r"dataset 'fashion_mnist'")]
    for i, (over, msg) in enumerate(cases):
        with pytest.raises(ValueError, match=msg):
            train(resolve(base, over), tmp_path / str(i), log=quiet)


def test_probe_histogram_survives_a_range_too_narrow_for_its_bins():
    import numpy as np

    from manualbp.train.probes import histogram
    h = histogram(np.full(50, 3e7, dtype=np.float32))          # one value: no finite-width bins
    assert sum(h["counts"]) == 50 and h["range"] == [3e7, 3e7]
    h = histogram(np.arange(100, dtype=np.float32))
    assert sum(h["counts"]) == 100 and len(h["counts"]) == 30 and h["range"] == [0.0, 99.0]
