"""Instruments: per-example gradient statistics through the manual Functions against a loop of one
backward per example (four model families, float64), the statistics against numpy, the update size
against its definition, the weight spectra against numpy's SVD and the fitted exponent against
WeightWatcher's, and the instruments in a training run (rows, TensorBoard)."""
import copy
import json
import logging
import warnings

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


def test_spectra_against_numpy_and_weightwatcher():
    ww = pytest.importorskip("weightwatcher")
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(120, 200)) * 0.05
    s = layer_spectrum(torch.from_numpy(w))
    sv = np.linalg.svd(w, compute_uv=False)
    assert s["spectral_norm"] == pytest.approx(sv[0]) and s["n_singular"] == 120
    assert s["stable_rank"] == pytest.approx((sv ** 2).sum() / sv[0] ** 2)
    layer = torch.nn.Linear(200, 120, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            details = ww.WeightWatcher(model=torch.nn.Sequential(layer)).analyze()
    finally:
        logging.disable(logging.NOTSET)
    assert s["alpha"] == pytest.approx(float(details["alpha"].iloc[0]), rel=1e-6)
    assert s["xmin"] == pytest.approx(float(details["xmin"].iloc[0]), rel=1e-6)
    conv = torch.randn(16, 8, 3, 3, dtype=torch.float64)     # a convolution: out x (in kH kW)
    assert layer_spectrum(conv)["spectral_norm"] == pytest.approx(np.linalg.svd(conv.reshape(16, -1).numpy(),
                                                                                compute_uv=False)[0])
    assert np.isnan(layer_spectrum(conv)["alpha"])       # 16 singular values: no fit under 50


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


@pytest.mark.parametrize("name", ["Adam", "ConstantBiasAdam", "RMSprop", "Adagrad", "tf1.Adam", "tf1.RMSProp",
                                  "tf1.Adagrad", "tf1.AdagradDA", "tf1.Adadelta", "tf1.Ftrl", "tf1.ProximalAdagrad",
                                  "tf1.Momentum", "tf1.GradientDescent"])
def test_second_moment_of_every_optimizer_that_keeps_one(name):
    from manualbp.optim import make_optimizer
    from manualbp.train.instruments import second_moment
    w = torch.nn.Parameter(torch.ones(3))
    kw = {"learning_rate": 0.1} if name.startswith("tf1.") else {"lr": 0.1}
    if name == "tf1.Momentum":
        kw["momentum"] = 0.9
    opt = make_optimizer(name, [w], **kw)
    w.grad = torch.tensor([1.0, -2.0, 3.0])
    opt.step()
    v = second_moment(opt, w)
    if name in ("tf1.Momentum", "tf1.GradientDescent"):
        assert v is None
    else:   # every second moment grows with g^2: the largest gradient entry has the largest value
        assert v is not None and v.shape == (3,) and int(v.argmax()) == 2, name
