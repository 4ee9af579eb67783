"""Experiment zca: the independent whitening check, the article's backward, the preset and sweep wiring,
and the report on a tiny sweep."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import manualbp.functional as MF
from manualbp.experiments import get_experiment, preset
from manualbp.experiments.zca import GRID, whitening_check
from manualbp.train import RunDir, resolve, train
from manualbp.train.config import ConfigError
from manualbp.train.sweep import expand

from .fakedata import write_mnist_like

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode,shape", [("dim", (200, 12)), ("example", (10, 50))])
@pytest.mark.parametrize("backend", ["eigh", "svd"])
def test_whitened_batch_has_identity_covariance_and_matches_numpy(mode, shape, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) @ torch.randn(shape[1], shape[1], generator=g,
                                                                            dtype=torch.float64)
    chk = whitening_check(x, mode, eps=1e-10, backend=backend)
    assert chk["identity_error"] < 1e-6
    assert chk["numpy_difference"] < 1e-8


def test_whitening_check_flags_data_that_is_not_white():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    assert whitening_check(x, "dim", eps=1e-10)["identity_error"] < 1e-6
    # a heavily regularised whitening (eps far above the spectrum) is not white, and the check says so
    assert whitening_check(x, "dim", eps=100.0)["identity_error"] > 0.5


@pytest.mark.parametrize("grad", ["no_eigenvalue_term", "article"])
def test_named_backwards_fail_gradcheck_and_differ_from_exact(grad):
    torch.manual_seed(0)
    # 4 examples of 8 features: per example, A = x^T is 8 x 4 and its 4 x 4 covariance has full rank (the
    # article's backward divides by eigenvalue differences: a rank-deficient batch makes it infinite)
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda x: MF.zca_whiten(x, 1e-2, "example", grad=grad), (x,))
    g = torch.randn(4, 8, dtype=torch.float64)
    (exact,) = torch.autograd.grad(MF.zca_whiten(x, 1e-2, "example"), x, g)
    (other,) = torch.autograd.grad(MF.zca_whiten(x, 1e-2, "example", grad=grad), x, g)
    assert (exact - other).abs().max() > 1e-3


def test_the_article_backward_is_far_from_the_gradient_and_the_milder_variant_close():
    """On the article's shapes (x of 676 features per example, a batch whitened per example at eps
    0.06, here with 100 examples), the article's backward is far off the gradient (SPEC measured 30x
    to 170x in norm, cosine 0.01 to 0.04); the variant without the eigenvalue term is within a few
    percent. The forward is the same for all three."""
    torch.manual_seed(0)
    x = (0.3 * torch.randn(100, 676, dtype=torch.float64)).requires_grad_()
    g = torch.randn(100, 676, dtype=torch.float64)
    out = {k: MF.zca_whiten(x, 0.06, "example", grad=k) for k in ("exact", "no_eigenvalue_term", "article")}
    assert torch.equal(out["exact"], out["no_eigenvalue_term"]) and torch.allclose(out["exact"], out["article"])
    grads = {k: torch.autograd.grad(y, x, g)[0] for k, y in out.items()}
    cos = torch.nn.functional.cosine_similarity
    ratio = (grads["article"].norm() / grads["exact"].norm()).item()
    assert ratio > 10 and abs(cos(grads["article"].flatten(), grads["exact"].flatten(), dim=0).item()) < 0.2
    rel = ((grads["no_eigenvalue_term"] - grads["exact"]).norm() / grads["exact"].norm()).item()
    assert rel < 0.1 and cos(grads["no_eigenvalue_term"].flatten(), grads["exact"].flatten(), dim=0).item() > 0.99


def test_presets_resolve_and_grid_covers_the_variants():
    for name in ("quick", "sound"):
        cfg = resolve(preset("zca", name))
        assert cfg["model"]["name"] == "mlp" and len(cfg["model"]["widths"]) == 4   # three layers
    assert resolve(preset("zca", "sound"))["epochs"] == 15
    specs = expand(preset("zca", "quick"), GRID, Path("/tmp/x"))
    norms = {s.config["model"]["norm"] for s in specs}
    assert norms == {"none", "center", "zca_dim", "zca_example", "decorrelated_batch_norm", "iter_norm"}
    backends = {s.config["model"]["norm_kwargs"].get("backend") for s in specs}
    assert {"eigh", "svd"} <= backends


def test_tiny_sweep_and_report(tmp_path):
    """The whole pipeline on data written in the Fashion-MNIST format: sweep, table, figures."""
    write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=200, n_test=120)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "zca", "--data-root",
                          str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "sweep"), "--seeds", "0,1",
                          "--epochs", "2", "--device", "cpu", "batch_size=40", "model.widths=[784,32,16,10]",
                          "log.progress=false"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for fig in ("transforms.png", "curves.png", "eigh_vs_svd.png", "results.md"):
        assert (tmp_path / "sweep" / fig).stat().st_size > 1000, fig
    table = (tmp_path / "sweep" / "results.md").read_text()
    for v in get_experiment("zca").VARIANTS:
        assert f"| {v} | 2 |" in table, v
    assert "GRU+SVM" in table and "whitening check" in out.stdout


def test_missing_data_message(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "zca", "--data-root", str(tmp_path),
                          "--seeds", "0", "--only", "none", "--sweep-dir", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Fashion-MNIST not found" in out.stdout + out.stderr and str(tmp_path) in out.stdout + out.stderr


def test_zca_dim_running_trains_exactly_as_zca_dim_and_evaluates_both_ways(tmp_path):
    """One zca_dim_running run gives both evaluations: its training equals zca_dim's bit for bit, and
    batch_statistics_accuracy reproduces zca_dim's test accuracy (each test batch whitened by itself)."""
    from manualbp.experiments.zca import VARIANTS, batch_statistics_accuracy
    from manualbp.train import train
    write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=200, n_test=100)
    out = {}
    for v in ("zca_dim", "zca_dim_running"):
        cfg = resolve(preset("zca", "quick"), {**VARIANTS[v], "epochs": 2, "batch_size": 50, "device": "cpu",
                                               "data": {"root": str(tmp_path / "data"), "train_limit": None,
                                                        "test_limit": None},
                                               "log": {"progress": False}})
        cfg["model"]["widths"] = [784, 32, 16, 10]
        out[v] = (train(cfg, tmp_path / v, log=lambda *_: None), cfg)
    a, b = out["zca_dim"][0]["final"], out["zca_dim_running"][0]["final"]
    assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])
    assert batch_statistics_accuracy(tmp_path / "zca_dim_running", out["zca_dim_running"][1]) == a["test_acc"]


def test_article_preset_builds_the_articles_script(tmp_path):
    """The run the article preset builds (SPEC's zca section): the layers, activations (the coded tanh
    derivative, leaky ReLU on the output), the ZCA layer with the script's backward at eps 0.06, the
    initial weights' sd, Adam-c at 1e-3 * 0.99^(t + 1), the squared-error loss, the data handling; and
    it trains an epoch on small data."""
    from manualbp.nn import ZCAWhiten
    from manualbp.optim import ConstantBiasAdam

    from .helpers import built_run
    cfg = resolve(preset("zca", "article"))
    assert (cfg["batch_size"], cfg["epochs"], cfg["loss"], cfg["data"]["shuffle"]) == (250, 15, "sum_squared_error",
                                                                                          False)
    assert cfg["data"]["options"] == {"validation": 5000}
    task, model, opt = built_run(cfg)
    assert [a.name for a in model.acts] == ["tanh_sigmoid_derivative", "leaky_relu", "leaky_relu"]
    assert isinstance(model.norm, ZCAWhiten) and (model.norm.mode, model.norm.eps, model.norm.grad) == (
        "example", 0.06, "article") and model.norm_at == 1
    assert [tuple(layer.weight.shape) for layer in model.layers] == [(676, 784), (256, 676), (10, 256)]
    w = torch.cat([layer.weight.detach().flatten() for layer in model.layers])
    b = torch.cat([layer.bias.detach().flatten() for layer in model.layers])
    assert abs(w.std().item() - 0.008) < 1e-4 and abs(b.std().item() - 1e-4) < 2e-5
    assert type(opt) is ConstantBiasAdam and opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.99)
    assert opt.param_groups[0]["eps"] == 1e-40
    write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=600, n_test=250)
    # the script's backward divides by eigenvalue differences: on these synthetic images it blows up, so
    # the CI-sized run checks the rest of the preset's wiring with the exact backward
    small = resolve(preset("zca", "article"), {"epochs": 2, "device": "cpu", "data": {
        "root": str(tmp_path / "data"), "options": {"validation": 100}}, "log": {"progress": False},
        "model": {"norm_kwargs": {"grad": "exact"}}})
    out = train(small, tmp_path / "run", log=lambda *_: None)
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * 0.99, 1e-3 * 0.99 ** 2])
    assert out["final"]["train_loss"] < rows[0]["train_loss"] * 1.5 and 0 <= out["final"]["test_acc"] <= 1


def test_article_sweep_is_seeds_of_one_configuration_and_compares_with_the_log(tmp_path):
    from manualbp.experiments.zca import ARTICLE_LOG, article_comparison, grid
    specs = expand(preset("zca", "article"), grid("article"), tmp_path)
    assert [s.name for s in specs] == [f"article-seed{i}" for i in range(10)]
    assert all(s.config["model"]["norm_kwargs"]["grad"] == "article" for s in specs)
    # two fake runs 0.1 and 0.3 points above the log every epoch: the mean difference is +0.20
    runs = [{"metrics": [{"test_acc": (a + d) / 100} for a in ARTICLE_LOG]} for d in (0.1, 0.3)]
    table = article_comparison(runs, tmp_path / "fig.png")
    assert "| 15 | 89.51 | 89.71 | +0.20 | [-1.07, +1.47] | 2 |" in table   # 0.2 -+ 12.706 x 0.1414 / 1.414
    assert (tmp_path / "fig.png").stat().st_size > 5000
    assert table.endswith("One interval per epoch, 15 in all, none corrected for the others.")


def test_ablation_steps_fix_one_error_at_a_time():
    from manualbp.experiments.zca import ABLATION, ablation_table, grid
    specs = {s.name: s.config for s in expand(preset("zca", "ablation"), grid("ablation"), Path("/tmp/x"))}
    assert len(specs) == 4 * 5 + 2 * 10    # 10 seeds for the two ends, 5 for the steps between
    assert "article-seed9" in specs and "sound-seed9" in specs and "exact_zca-seed5" not in specs
    with pytest.raises(ConfigError, match="name a run twice"):   # a list of grids must not overlap
        expand(preset("zca", "ablation"), [*grid("article"), grid("article")[1]], Path("/tmp/x"))
    art, ex, th, ad, ce, snd = (specs[f"{k}-seed0"] for k in ABLATION)
    # the last step is the sound preset's zca_example run, key for key
    sound = expand(preset("zca", "sound"), {"variant": {"zca_example": {}}, "seed": [0]}, Path("/tmp/x"))[0].config
    for key in set(sound) - {"preset", "data", "model"}:
        assert snd[key] == sound[key], key
    assert {**snd["data"], "options": {}} == sound["data"] and snd["data"]["options"] == {"validation": 0}
    assert {k: v for k, v in snd["model"].items() if v not in (None, False)} == {
        **sound["model"], "norm_kwargs": {"eps": 1.0, "grad": "exact"}}
    assert art["model"]["norm_kwargs"] == {"eps": 0.06, "grad": "article"}
    assert ex["model"]["norm_kwargs"] == {"eps": 0.06, "grad": "exact"} and ex["model"]["activation"][0] == \
        "tanh_sigmoid_derivative"
    assert th["model"]["activation"] == ["tanh", "leaky_relu", "leaky_relu"] and th["optim"]["name"] == \
        "ConstantBiasAdam"
    assert ad["optim"] == {"name": "Adam", "lr": pytest.approx(1e-3 * 0.99)} and ad["loss"] == "sum_squared_error"
    assert ce["loss"] == "softmax_cross_entropy" and ce["data"]["shuffle"] is False and ce["dtype"] == "float64"
    runs = {k: [{"config": {"seed": s}, "metrics": [{"test_acc": (89 + d + 0.1 * s) / 100}]} for s in range(3)]
            for k, d in (("article", 0.0), ("exact_zca", 0.5))}
    table = ablation_table(runs)
    assert "| exact_zca | 3 | 89.60 ± 0.10 |" in table and "+0.50 [+0.50, +0.50] (n=3)" in table


def test_numpy_init_draws_the_scripts_weights_in_its_order():
    """model.numpy_init_seed=1234: numpy's RandomState(1234).normal, W1 (784 x 676), b1, W2, b2, W3, b3,
    held exactly in a float64 run (not rounded through float32)."""
    import numpy as np

    from .helpers import built_run
    cfg = resolve(preset("zca", "article"), {"model": {"numpy_init_seed": 1234}, "device": "cpu"})
    _, model, _ = built_run(cfg)
    rng = np.random.RandomState(1234)
    for layer, (a, b) in zip(model.layers, [(784, 676), (676, 256), (256, 10)]):
        assert layer.weight.dtype == torch.float64
        assert np.array_equal(layer.weight.detach().numpy(), rng.normal(0, 0.008, (a, b)).T)
        assert np.array_equal(layer.bias.detach().numpy(), rng.normal(0, 1e-4, b))
    with pytest.raises(ValueError, match="init_std"):
        from manualbp.models.mlp import MLP
        MLP([4, 3, 2], numpy_init_seed=1)


@pytest.mark.parametrize("name,extra", [("sound", ["batch_size=50"]),
                                        # the script's backward blows up on synthetic images (above): exact here
                                        ("article", ["data.options.validation=100", "model.norm_kwargs.grad=exact",
                                                     "model.numpy_init_seed=1234"])])
def test_presets_run_from_the_command_line(name, extra, tmp_path):
    """A CI-sized run of each preset through scripts/train.py: 1 epoch on 400 synthetic images."""
    write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=400, n_test=100)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "zca", "--preset", name, "--epochs", "1",
                          "--device", "cpu", "--data-root", str(tmp_path / "data"), "--run-dir", str(tmp_path / "r"),
                          "log.progress=false", *extra], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = RunDir(tmp_path / "r").read_metrics()
    assert len(rows) == 1 and 0 <= rows[0]["test_acc"] <= 1 and (tmp_path / "r" / "DONE.json").is_file()


def test_zca_report_on_a_test_split_smaller_than_100(tmp_path):
    write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=100, n_test=60)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "zca", "--data-root",
                          str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "sweep"), "--seeds", "0", "--only",
                          "zca_example-", "--epochs", "1", "--device", "cpu", "batch_size=20",
                          "model.widths=[784,16,8,10]", "log.progress=false"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "whitening check on 60 test images" in out.stdout
    assert "| zca_example | 1 |" in (tmp_path / "sweep" / "results.md").read_text()


def test_zca_dim_with_running_estimates_whitens_test_data_with_the_running_matrix():
    from manualbp.nn import make_norm
    layer = make_norm("zca_dim", 4, eps=1e-3, running=True, momentum=1.0)
    x = torch.randn(50, 4) @ torch.randn(4, 4)
    layer.train()
    y = layer(x)
    layer.eval()
    torch.testing.assert_close(layer(x), y, rtol=1e-4, atol=1e-4)   # momentum 1: the last batch's matrix
    one = torch.randn(1, 4)
    torch.testing.assert_close(layer(one), one @ layer.running_whitening)


def test_against_baseline_pairs_by_seed_and_corrects_over_the_variants():
    """Differences to `none` by seed (seed 2 of `b` has no `none` partner and is left out); `a` is +1 point on
    every seed plus a small spread (holds alone and after Holm over the two variants), `b` across 0."""
    import numpy as np
    import scipy.stats

    from manualbp.experiments.zca import against_baseline

    def runs(accs):
        return [{"labels": {"seed": f"seed{i}"}, "metrics": [{"test_acc": 0.0}, {"test_acc": a}]}
                for i, a in enumerate(accs) if a is not None]
    groups = {"none": runs([0.80, 0.82, None]), "a": runs([0.8101, 0.8298, 0.5]), "b": runs([0.79, 0.83, 0.9])}
    text = against_baseline(groups)
    da, db = [0.0101, 0.0098], [-0.01, 0.01]
    t = scipy.stats.t.ppf(0.975, 1)
    half = t * np.std(da, ddof=1) / np.sqrt(2)
    assert f"| a | {100 * np.mean(da):.2f} [{100 * (np.mean(da) - half):.2f}, {100 * (np.mean(da) + half):.2f}], " \
           "n = 2: holds" in text
    assert "| b | 0.00 [" in text and "n = 2: undecided |" in text
    p = sorted(scipy.stats.ttest_1samp(d, 0).pvalue for d in (da, db))
    holds_after = p[0] <= 0.05 / 2
    assert (", also after Holm's correction" in text) == holds_after
    assert f"Holm's correction over the 2 variants with two or more pairs in this column: {int(holds_after)} of 2" \
        in text
    assert against_baseline({"a": groups["a"]}) == ""
