"""Instruments: per-example gradient statistics through the manual Functions against a loop of one
backward per example (four model families, float64), the statistics against numpy, the update size
against its definition, the weight spectra against numpy's SVD and the fitted exponent against
WeightWatcher's, and the instruments in a training run (rows, TensorBoard)."""
import copy
import json

import numpy as np
import pytest
import torch

import manualbp.functional as MF
from manualbp.models import CNN6, MLP, SegmentationAE
from manualbp.train import resolve, train
from manualbp.train.instruments import (UpdateSize, batch_statistics, gradient_statistics, layer_spectrum,
                                        per_example_gradients)

from .fakedata import write_cifar_batches


def _ce(out, y):
    return MF.softmax_cross_entropy(out, y)


def _bce(out, y):
    return MF.binary_cross_entropy(out[0], y)


def _family(name):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    if name == "mlp":
        model = MLP([12, 9, 7, 4], activation="tanh")
        x, y = torch.randn(7, 12, generator=g), torch.randint(0, 4, (7,), generator=g)
        return model.double(), x.double(), y, _ce
    if name.startswith("cnn6"):
        model = CNN6(batch_norm=name == "cnn6-bn")
        x, y = torch.randn(5, 3, 32, 32, generator=g), torch.randint(0, 10, (5,), generator=g)
        return model.double(), x.double(), y, _ce
    model = SegmentationAE(size=32, channels=4, code=4)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = (torch.rand(4, 1, 32, 32, generator=g) > 0.5).double()
    return model.double(), x.double(), y, _bce


@pytest.mark.parametrize("family", ["mlp", "cnn6", "cnn6-bn", "segae"])
def test_per_example_gradients_equal_a_loop_of_backwards(family):
    """vmap(grad) through the manual Functions equals one backward per example; for batch norm both
    hold the batch's statistics fixed (the loop loads them as the running statistics in eval mode)."""
    model, x, y, loss = _family(family)
    grads = per_example_gradients(model, loss, x, y)
    stats = batch_statistics(model, x)
    ref = copy.deepcopy(model)
    if stats:
        with torch.no_grad():
            for k, v in stats.items():
                ref.get_buffer(k).copy_(v)
        ref.eval()
    names = [n for n, _ in ref.named_parameters()]
    assert set(grads) == set(names)
    for i in range(x.shape[0]):
        ref.zero_grad(set_to_none=True)
        loss(ref(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in ref.named_parameters():
            torch.testing.assert_close(grads[n][i], p.grad, rtol=1e-10, atol=1e-12, msg=lambda m: f"{n}[{i}]: {m}")
    if family == "cnn6-bn":   # the fixed statistics are the batch's: the first BN's input is relu(conv1(x))
        h = torch.relu(torch.nn.functional.conv2d(x, model.convs[0].weight, stride=2, padding=1))
        torch.testing.assert_close(stats["bns.0.running_mean"], h.mean((0, 2, 3)))
        torch.testing.assert_close(stats["bns.0.running_var"], h.var((0, 2, 3), unbiased=False))
        assert float(model.bns[0].running_var.sum()) == pytest.approx(16.0)   # the model's buffers untouched


def test_batch_coupling_layers_are_refused():
    model = MLP([6, 5, 3], norm="zca_dim", norm_at=1).double()
    with pytest.raises(ValueError, match="couple the examples of a batch beyond batch norm"):
        per_example_gradients(model, _ce, torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0]))


def test_gradient_statistics_against_numpy():
    rng = np.random.default_rng(0)
    g = rng.normal(0.3, 1.0, size=(9, 4, 5))
    s = gradient_statistics(torch.from_numpy(g))
    flat = g.reshape(9, -1)
    norms = np.linalg.norm(flat, axis=1)
    assert s["norm_mean"] == pytest.approx(norms.mean()) and s["norm_sd"] == pytest.approx(norms.std())
    cov = np.cov(flat.T, bias=True)
    assert s["grad_variance"] == pytest.approx(np.trace(cov) / flat.shape[1])
    assert s["gsnr"] == pytest.approx(np.mean(flat.mean(0) ** 2 / flat.var(0)))


def _cockpit_mean_gsnr(flat, eps):
    """Cockpit's MeanGSNR from its formula: with the mean-loss gradient g = mean_n g_n and BackPACK's
    sum of squared individual gradients (each g_n / N), g^2 / (N sum (g_n / N)^2 - g^2 + eps), averaged
    over every parameter."""
    n = flat.shape[0]
    g = flat.mean(0)
    return float(np.mean(g ** 2 / (n * ((flat / n) ** 2).sum(0) - g ** 2 + eps)))


def test_gsnr_against_cockpits_mean_gsnr():
    """Equal to Cockpit's with eps 0 when no variance is 0; a parameter with zero variance (a dead unit)
    is left out by gradient_statistics and counted as 0 by Cockpit; Cockpit's eps 1e-5 shrinks the value
    of small gradients, gradient_statistics is invariant to the loss's scale."""
    rng = np.random.default_rng(1)
    flat = rng.normal(0.2, 1.0, size=(16, 10))
    s = gradient_statistics(torch.from_numpy(flat))["gsnr"]
    assert s == pytest.approx(_cockpit_mean_gsnr(flat, 0.0), rel=1e-10)
    dead = np.concatenate([flat, np.zeros((16, 2))], axis=1)
    assert gradient_statistics(torch.from_numpy(dead))["gsnr"] == pytest.approx(s, rel=1e-12)
    assert _cockpit_mean_gsnr(dead, 1e-5) == pytest.approx(s * 10 / 12, rel=1e-4)
    small = flat * 1e-4   # variances near 1e-8: Cockpit's eps dominates, gradient_statistics does not move
    assert gradient_statistics(torch.from_numpy(small))["gsnr"] == pytest.approx(s, rel=1e-10)
    assert _cockpit_mean_gsnr(small, 1e-5) < 0.01 * s


def test_update_size_is_the_relative_step():
    torch.manual_seed(0)
    model = CNN6()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    MF.softmax_cross_entropy(model(x), y).backward()
    w0 = model.convs[2].weight.detach().clone()
    u = UpdateSize(model)
    u.snapshot()
    opt.step()
    rows = {r["layer"]: r for r in u.rows(opt, 1, 1)}
    g = model.convs[2].weight.grad
    assert rows["conv3"]["update_ratio"] == pytest.approx(float(0.1 * g.norm() / w0.norm()), rel=1e-5)
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert rows["conv3"]["global_grad_norm"] == pytest.approx(float(total), rel=1e-5)
    assert np.isnan(rows["conv3"]["second_moment_mean"])     # SGD keeps no second moment
    # an MLP's biases are no probe point: the global norm still counts them
    mlp = MLP([6, 5, 3]).double()
    MF.softmax_cross_entropy(mlp(torch.randn(4, 6, dtype=torch.float64)), torch.tensor([0, 1, 2, 0])).backward()
    rows = UpdateSize(mlp).rows(None, 1, 1)
    every = torch.cat([p.grad.flatten() for p in mlp.parameters()]).norm()
    weights = torch.cat([lay.weight.grad.flatten() for lay in mlp.layers]).norm()
    assert rows[0]["global_grad_norm"] == pytest.approx(float(every), rel=1e-12)
    assert float(every) > float(weights) * (1 + 1e-6)


@pytest.mark.parametrize("family", ["segae", "segae_article", "cnn6", "mlp"])
def test_spectra_rows_equal_numpy_svd_of_each_layers_matrix(family):
    """Linear, convolution and transposed-convolution layers: spectral norm, stable rank and the number of
    singular values equal numpy's SVD of the weight as (out, rest), the transposed convolution's out axis
    moved first (its (in, out kH kW) reshape has other singular values). No WeightWatcher needed: these
    layers have fewer than 50 singular values."""
    from manualbp.models import build_model
    from manualbp.train.instruments import spectra_rows
    torch.manual_seed(3)
    model = {"segae": lambda: SegmentationAE(size=32, channels=4, code=4),
             "segae_article": lambda: build_model({"name": "segae_article"}),
             "cnn6": lambda: CNN6(),
             "mlp": lambda: MLP([30, 20, 10])}[family]()
    rows = {r["layer"]: r for r in spectra_rows(model, 1, 1)}
    kinds = set()
    for name, layer, _ in model.probe_points():
        kinds.add(type(layer).__name__)
        sv = np.linalg.svd(_matrix(layer), compute_uv=False)
        assert rows[name]["spectral_norm"] == pytest.approx(sv[0], rel=1e-6), name
        assert rows[name]["stable_rank"] == pytest.approx((sv ** 2).sum() / sv[0] ** 2, rel=1e-6), name
        assert rows[name]["n_singular"] == len(sv) and np.isnan(rows[name]["alpha"])
    if family.startswith("segae"):
        assert "ConvTranspose2d" in kinds


def test_layer_spectrum_against_numpy_without_weightwatcher():
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(120, 200)) * 0.05
    s = layer_spectrum(torch.from_numpy(w), min_singular_values=10 ** 6)   # no power-law fit
    sv = np.linalg.svd(w, compute_uv=False)
    assert s["spectral_norm"] == pytest.approx(sv[0], rel=1e-12) and s["n_singular"] == 120
    assert s["stable_rank"] == pytest.approx((sv ** 2).sum() / sv[0] ** 2, rel=1e-12)
    assert np.isnan(s["alpha"])


def _power_law_fit(ev):
    """The continuous power-law fit of Clauset, Shalizi and Newman (2009), written in this test from its
    formulas: for each candidate xmin (every sorted value but the largest) the maximum-likelihood
    alpha = 1 + n / sum log(x_i / xmin) over the n values x_i >= xmin and the Kolmogorov-Smirnov
    distance max |(1 - (x / xmin)^(1 - alpha)) - (i / n)|; the xmin of the smallest distance."""
    x = np.sort(ev[ev > 1e-5])
    best = None
    for i in range(len(x) - 1):
        tail = x[i:]
        n = len(tail)
        alpha = 1 + n / np.log(tail / x[i]).sum()
        d = np.max(np.abs(1 - (tail / x[i]) ** (1 - alpha) - np.arange(n) / n)) if alpha > 1 else 1.0
        if best is None or d < best[2]:
            best = (alpha, x[i], d)
    return best


def test_power_law_alpha_against_the_maximum_likelihood_formula():
    """The fitted exponent, its xmin and KS distance equal the estimator written from its formulas
    (not WeightWatcher's own analyze, which runs the same code)."""
    pytest.importorskip("weightwatcher")
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(120, 200)) * 0.05
    s = layer_spectrum(torch.from_numpy(w))
    alpha, xmin, d = _power_law_fit(np.linalg.svd(w, compute_uv=False) ** 2)
    assert s["alpha"] == pytest.approx(alpha, rel=1e-9) and s["xmin"] == pytest.approx(xmin, rel=1e-12)
    assert s["ks_distance"] == pytest.approx(d, rel=1e-9)
    assert 1.5 < s["alpha"] < 10
    # eigenvalues from a power law down to 2e-5 (the fit's xmin low in the range, below 1e-3): the
    # floor 1e-5 keeps them, as WeightWatcher's analyze does
    ev = 2e-5 * (1 - rng.random(100)) ** (-1 / 1.5)
    q1, _ = np.linalg.qr(rng.normal(size=(100, 100)))
    q2, _ = np.linalg.qr(rng.normal(size=(150, 100)))
    s = layer_spectrum(torch.from_numpy(q1 @ np.diag(np.sqrt(ev)) @ q2.T))
    alpha, xmin, d = _power_law_fit(ev)
    assert xmin < 1e-3 and s["xmin"] == pytest.approx(xmin, rel=1e-6) and s["alpha"] == pytest.approx(alpha, rel=1e-6)


def test_instruments_in_a_run_write_rows_and_tensorboard(tmp_path):
    write_cifar_batches(tmp_path / "data", n_per_batch=10)
    cfg = resolve({"device": "cpu", "epochs": 2, "batch_size": 10, "data": {"name": "cifar10",
                                                                            "root": str(tmp_path / "data")},
                   "model": {"name": "cnn6", "batch_norm": True}, "optim": {"name": "Adam", "lr": 1e-3},
                   "log": {"probe_every": "epoch", "per_example": True, "optimizer_state": True, "spectra": "epoch",
                           "progress": False}})
    train(cfg, tmp_path / "run", log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "instruments.jsonl").read_text().splitlines()]
    kinds = {(r["instrument"], r["epoch"]) for r in rows}
    assert kinds == {(k, e) for k in ("per_example", "optimizer", "spectra") for e in (1, 2)}
    pe = [r for r in rows if r["instrument"] == "per_example"]
    assert len(pe) == 12 and all(r["gsnr"] > 0 and r["norm_mean"] > 0 and "hist" in r for r in pe)
    opt = [r for r in rows if r["instrument"] == "optimizer" and r["epoch"] == 2]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert opt[0]["second_moment_mean"] == pytest.approx(float(state[0]["exp_avg_sq"].double().mean()), rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert "per_example_gsnr/conv3" in tags["scalars"] and "optimizer_update_ratio/conv1" in tags["scalars"]
    assert "spectra_stable_rank/conv2" in tags["scalars"] and "per_example_norms/conv4" in tags["histograms"]
    from manualbp.train.status import status_figure
    from PIL import Image
    png = status_figure(tmp_path / "run")
    assert png == tmp_path / "run" / "status.png" and png.stat().st_size > 20000
    with Image.open(png) as im:
        assert im.size[0] > 1000
    with pytest.raises(ValueError, match="no metrics.jsonl rows"):
        status_figure(tmp_path)


G1, G2 = torch.tensor([1.0, -3.0, 2.0]), torch.tensor([0.5, 2.0, -1.0])
# each optimizer's second moment after the gradients G1 then G2, by its own equation (non-default constants)
SECOND_MOMENTS = {
    "Adam": ({"lr": 0.1, "betas": (0.9, 0.99)}, lambda: 0.99 * 0.01 * G1 ** 2 + 0.01 * G2 ** 2),
    "ConstantBiasAdam": ({"lr": 0.1, "betas": (0.9, 0.99)}, lambda: 0.99 * 0.01 * G1 ** 2 + 0.01 * G2 ** 2),
    "RMSprop": ({"lr": 0.1, "alpha": 0.8}, lambda: 0.8 * 0.2 * G1 ** 2 + 0.2 * G2 ** 2),
    "Adagrad": ({"lr": 0.1, "initial_accumulator_value": 0.3}, lambda: 0.3 + G1 ** 2 + G2 ** 2),
    "tf1.Adam": ({"learning_rate": 0.1, "beta2": 0.99}, lambda: 0.99 * 0.01 * G1 ** 2 + 0.01 * G2 ** 2),
    # ms starts at 1: ms <- ms + (1 - decay) (g^2 - ms)
    "tf1.RMSProp": ({"learning_rate": 0.1, "decay": 0.7},
                    lambda: 0.7 * (0.7 * 1.0 + 0.3 * G1 ** 2) + 0.3 * G2 ** 2),
    "tf1.Adagrad": ({"learning_rate": 0.1, "initial_accumulator_value": 0.3}, lambda: 0.3 + G1 ** 2 + G2 ** 2),
    "tf1.AdagradDA": ({"learning_rate": 0.1, "initial_gradient_squared_accumulator_value": 0.3},
                      lambda: 0.3 + G1 ** 2 + G2 ** 2),
    "tf1.Adadelta": ({"learning_rate": 0.1, "rho": 0.6}, lambda: 0.6 * 0.4 * G1 ** 2 + 0.4 * G2 ** 2),
    "tf1.Ftrl": ({"learning_rate": 0.1, "initial_accumulator_value": 0.3}, lambda: 0.3 + G1 ** 2 + G2 ** 2),
    "tf1.ProximalAdagrad": ({"learning_rate": 0.1, "initial_accumulator_value": 0.3},
                            lambda: 0.3 + G1 ** 2 + G2 ** 2),
    "tf1.Momentum": ({"learning_rate": 0.1, "momentum": 0.9}, None),   # accum is a velocity, not a second moment
    "tf1.GradientDescent": ({"learning_rate": 0.1}, None),
    "SGD": ({"lr": 0.1, "momentum": 0.9}, None),
}


@pytest.mark.parametrize("name", sorted(SECOND_MOMENTS))
def test_second_moment_of_every_optimizer_equals_its_equation(name):
    """Two steps with the asymmetric gradients g1 = [1, -3, 2], g2 = [0.5, 2, -1] (a first moment, |g| or
    the last g^2 give other numbers): the instrument's second moment, and its row's mean and sd, equal
    the optimizer's own equation for its accumulator."""
    from manualbp.optim import make_optimizer
    from manualbp.train.instruments import second_moment
    kw, formula = SECOND_MOMENTS[name]
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer(name, [w], **kw)
    for g in (G1, G2):
        w.grad = g.clone()
        opt.step()
    v = second_moment(opt, w)
    if formula is None:
        assert v is None
        return
    torch.testing.assert_close(v, formula(), rtol=1e-6, atol=1e-7)

    class One(torch.nn.Module):   # one probed layer holding w
        def probe_points(self):
            return [("lin", self, None)]

        @property
        def weight(self):
            return w
    u = UpdateSize(One())
    row = u.rows(opt, 2, 1)[0]
    assert row["second_moment_mean"] == pytest.approx(float(formula().double().mean()), rel=1e-6)
    assert row["second_moment_sd"] == pytest.approx(float(formula().double().std(unbiased=False)), rel=1e-6)


def _matrix(layer):
    """A probed layer's weight as the spectra read it, recomputed in the test: (out, rest); a transposed
    convolution's weight is (in, out, kH, kW), so its out axis goes first."""
    w = layer.weight.detach().double()
    if type(layer).__name__ == "ConvTranspose2d":
        w = w.permute(1, 0, 2, 3)
    return w.reshape(w.shape[0], -1).numpy()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_instrument_rows_of_a_run_equal_their_definitions(tmp_path, batch_norm):
    """One epoch of one step (the batch is the whole training set) with every instrument on: each row's
    numbers are recomputed from the initial weights w0 (rebuilt from the config) and the checkpoint's
    w1: update_ratio = ||w1 - w0|| / ||w0||; the gradient norms of the batch gradient at w0; Adam's
    second moment (1 - b2) g^2; the per-example statistics of the per-example gradients at w0; the
    spectra of w1 by numpy's SVD."""
    from manualbp.train.loop import build_initial_model, epoch_generator
    from manualbp.train.tasks import make_task
    write_cifar_batches(tmp_path / "data", n_per_batch=4)
    cfg = resolve({"device": "cpu", "epochs": 1, "batch_size": 20, "dtype": "float64",
                   "data": {"name": "cifar10", "root": str(tmp_path / "data")},
                   "model": {"name": "cnn6", "batch_norm": batch_norm}, "optim": {"name": "Adam", "lr": 1e-2},
                   "log": {"probe_every": "epoch", "per_example": True, "optimizer_state": True, "spectra": "end",
                           "histograms": False, "progress": False}})
    train(cfg, tmp_path / "run", log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "instruments.jsonl").read_text().splitlines()]
    task = make_task(cfg, torch.device("cpu"))
    train_data, _ = task.load_data()
    model0 = build_initial_model(cfg, task, "cpu")
    x, y = next(iter(train_data.batches(20, shuffle=True, dtype=task.dtype, generator=epoch_generator(0, 1))))
    model0.train()
    loss, _ = task.loss(model0, x, y, task.objective_weights(None))
    grads = torch.autograd.grad(loss, list(model0.parameters()))
    gmap = {id(p): g for p, g in zip(model0.parameters(), grads)}
    model1 = build_initial_model(cfg, task, "cpu")
    model1.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"])
    names = [n for n, _, _ in model0.probe_points()]
    per_example = per_example_gradients(model0, task.example_loss, x, y,
                                        [k for k, p in model0.named_parameters()
                                         if any(p is lay.weight for _, lay, _ in model0.probe_points())])
    pname = {id(p): k for k, p in model0.named_parameters()}
    global_norm = float(torch.cat([g.reshape(-1) for g in grads]).norm())
    for (name, l0, _), (_, l1, _) in zip(model0.probe_points(), model1.probe_points()):
        w0, w1 = l0.weight.detach(), l1.weight.detach()
        g = gmap[id(l0.weight)]
        opt = next(r for r in rows if r["instrument"] == "optimizer" and r["layer"] == name)
        assert opt["update_ratio"] == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-9), name
        assert opt["update_ratio"] > 0
        assert opt["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-9)
        assert opt["global_grad_norm"] == pytest.approx(global_norm, rel=1e-9)
        v = (1 - 0.999) * g ** 2
        assert opt["second_moment_mean"] == pytest.approx(float(v.mean()), rel=1e-9)
        assert opt["second_moment_sd"] == pytest.approx(float(v.std(unbiased=False)), rel=1e-9)
        pe = next(r for r in rows if r["instrument"] == "per_example" and r["layer"] == name)
        want = gradient_statistics(per_example[pname[id(l0.weight)]])
        for k in ("norm_mean", "norm_sd", "grad_variance", "gsnr"):
            assert pe[k] == pytest.approx(want[k], rel=1e-8), (name, k)
        sp = next(r for r in rows if r["instrument"] == "spectra" and r["layer"] == name)
        sv = np.linalg.svd(_matrix(l1), compute_uv=False)
        assert sp["spectral_norm"] == pytest.approx(sv[0], rel=1e-10)
        assert sp["stable_rank"] == pytest.approx((sv ** 2).sum() / sv[0] ** 2, rel=1e-10)
        assert sp["n_singular"] == len(sv)
    assert {r["layer"] for r in rows} == set(names)
