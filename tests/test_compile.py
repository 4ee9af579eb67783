"""torch.compile(fullgraph=True) of every model family's forward and loss: no graph break, and the
loss and every parameter gradient (through the compiled manual backward) equal eager mode; the
loop's ``compile=true`` trains to the eager run's metrics."""
import copy

import pytest
import torch

import manualbp.functional as MF
from manualbp.models import CNN6, MLP, SegmentationAE
from manualbp.train import ConfigError, resolve, train

from .fakedata import write_mnist_like
from .helpers import devices


def _mlp():
    g = torch.Generator().manual_seed(0)
    model = MLP([20, 12, 12, 5], activation="arctan", norm="zca_dim", norm_at=1)
    x, y = torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)
    return model, x, y, lambda m, x, y: MF.add(MF.softmax_cross_entropy(m(x), y),
                                               MF.regularize(m.layers[0].weight, "neg_tanh", 1e-3))


def _cnn6():
    g = torch.Generator().manual_seed(1)
    model = CNN6(batch_norm=True)
    x, y = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)
    return model, x, y, lambda m, x, y: MF.softmax_cross_entropy(m(x), y)


def _cnn6_whitening(norm):
    def family():
        g = torch.Generator().manual_seed(3)
        # float64: the eigendecomposition's backward amplifies float32 rounding (measured: 1.8e-5 on one weight)
        model = CNN6(channels=(8, 8, 8, 8, 8, 10), norm=norm, norm_kwargs={"group_size": 4, "affine": True}).double()
        x = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (4,), generator=g)
        return model, x, y, lambda m, x, y: MF.softmax_cross_entropy(m(x), y)
    return family


def _segae():
    g = torch.Generator().manual_seed(2)
    model = SegmentationAE(size=32, sparse_activation="soft_abs")
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()

    def loss(m, x, y):
        p, z = m(x)
        return MF.add(MF.binary_cross_entropy(p, y), m.sparse_cost(z))
    return model, x, y, loss


@pytest.mark.slow
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("family", [_mlp, _cnn6, _cnn6_whitening("dbn"), _cnn6_whitening("iter_norm"), _segae],
                         ids=["mlp-zca", "cnn6-bn", "cnn6-dbn-groups", "cnn6-iternorm-groups", "segae-sparse"])
def test_fullgraph_compile_equals_eager(family, device):
    torch.manual_seed(0)
    model, x, y, loss_fn = family()
    model, x, y = model.to(device), x.to(device), y.to(device)
    ref = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True)     # a graph break would raise here
    loss = compiled(model, x, y)
    loss.backward()
    ref_loss = loss_fn(ref, x, y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")
    for a, b in zip(model.buffers(), ref.buffers(), strict=True):   # running statistics updated the same way
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_loop_compile_switch_trains_like_eager(tmp_path):
    write_mnist_like(tmp_path / "data", "MNIST", n_train=120, n_test=40)
    base = {"experiment": "test", "epochs": 2, "batch_size": 40, "device": "cpu",
            "data": {"name": "mnist", "root": str(tmp_path / "data")},
            "model": {"name": "mlp", "widths": [784, 16, 10], "activation": "arctan"},
            "optim": {"name": "Adam", "lr": 1e-3}, "log": {"progress": False, "probe_every": "epoch"}}
    torch._dynamo.reset()
    eager = train(resolve(base), tmp_path / "eager", log=lambda *_: None)["final"]
    comp = train(resolve(base, {"compile": True}), tmp_path / "compiled", log=lambda *_: None)["final"]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert comp[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-6), k
    with pytest.raises(ConfigError, match="compile=true cannot trace dilated back-propagation"):
        resolve(dict(base, model={"name": "mlp", "widths": [784, 8, 8, 8, 8, 10], "dilation": {"case": 1}}),
                {"compile": True})
