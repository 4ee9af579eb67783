"""Bad input gives a ValueError that names the argument and what was expected."""
import pytest
import torch

import manualbp.functional as MF
from manualbp.models import CNN6, MLP, SegmentationAE
from manualbp.nn import Activation, make_norm

x2 = torch.randn(4, 3)
img = torch.randn(2, 3, 8, 8)

CASES = [
    (lambda: MF.linear(x2, torch.randn(5, 4)), r"linear: x has 3 features .* w expects 4"),
    (lambda: MF.linear(x2, torch.randn(5)), r"linear: w must be a 2-D tensor of shape \(out_features, in_features\)"),
    (lambda: MF.linear(x2, torch.randn(5, 3), torch.randn(4)), r"linear: b must have shape \(5,\)"),
    (lambda: MF.linear(x2.long(), torch.randn(5, 3)), r"linear: x must have a floating dtype"),
    (lambda: MF.linear(x2.double(), torch.randn(5, 3)), r"linear: w has dtype torch.float32 but x has torch.float64"),
    (lambda: MF.linear([1.0, 2.0], torch.randn(5, 3)), r"linear: x must be a torch.Tensor"),
    (lambda: MF.conv2d(x2, torch.randn(4, 3, 3, 3)), r"conv2d: x must be a 4-D tensor of shape \(N, C, H, W\)"),
    (lambda: MF.conv2d(img, torch.randn(4, 2, 3, 3)), r"conv2d: x has 3 channels but w"),
    (lambda: MF.conv2d(img, torch.randn(4, 3, 2, 2)), r"conv2d: padding='same' needs an odd kernel"),
    (lambda: MF.conv2d(img, torch.randn(4, 3, 3, 3), stride=0.5), r"conv2d: stride must be an int or a pair"),
    (lambda: MF.conv_transpose2d(img, torch.randn(3, 2, 3, 3), stride=2, output_padding=2),
     r"conv_transpose2d: output_padding"),
    (lambda: MF.max_pool2d(torch.randn(1, 1, 1, 1), 2), r"max_pool2d: input of spatial size \(1, 1\) is smaller"),
    (lambda: MF.pool_mix(img, torch.zeros(2)), r"pool_mix: w must be a tensor with one element"),
    (lambda: MF.pool_mix(img, torch.zeros((), dtype=torch.float64)), r"pool_mix: w has dtype torch.float64"),
    (lambda: MF.pool_mix(torch.randn(1, 1, 1, 3), torch.zeros(())), r"pool_mix: input of spatial size"),
    (lambda: MF.pool_mix(x2, torch.zeros(())), r"pool_mix: x must be a 4-D tensor"),
    (lambda: MF.interpolate(img, size=(4, 4), mode="nearest"), r"interpolate: mode must be one of"),
    (lambda: MF.interpolate(img), r"interpolate: give exactly one of size and scale_factor"),
    (lambda: MF.reshape(x2, (5, -1)), r"reshape: cannot reshape x of shape \(4, 3\)"),
    (lambda: MF.concat([img, x2]), r"concat: xs\[1\] has shape \(4, 3\), which does not match"),
    (lambda: MF.add(x2, img), r"add: xs\[1\] has shape"),
    (lambda: MF.elu(x2, alpha=0), r"elu: alpha must be a number > 0"),
    (lambda: MF.soft_abs(x2, eps=-1), r"soft_abs: eps must be a number > 0"),
    (lambda: MF.softmax_cross_entropy(x2, torch.tensor([0, 1, 2, 3])), r"class indices must lie in \[0, 2\]"),
    (lambda: MF.softmax_cross_entropy(x2, torch.tensor([0, 1])), r"class-index target must have shape \(4,\)"),
    (lambda: MF.softmax_cross_entropy(x2, torch.rand(4, 5)), r"a floating target must have the logits' shape"),
    (lambda: MF.softmax_cross_entropy(torch.randn(4), torch.tensor([0])), r"logits must be a 2-D tensor"),
    (lambda: MF.softmax_cross_entropy(x2, torch.tensor([0, 1, 2, 1]), reduction="none"), r"reduction must be one"),
    (lambda: MF.mse(x2, torch.randn(3, 4)), r"mse: pred has shape \(4, 3\) but target \(3, 4\)"),
    (lambda: MF.sum_squared_error(x2, torch.randn(4, 2)), r"sum_squared_error: pred has shape \(4, 3\) but target"),
    (lambda: MF.leaky_relu(x2, slope=-0.1), r"leaky_relu: slope must be a number >= 0"),
    (lambda: MF.tanh_sigmoid_derivative([1.0]), r"tanh_sigmoid_derivative: x must be a torch.Tensor"),
    (lambda: MF.binary_cross_entropy(x2.sigmoid(), torch.rand(4, 2)), r"binary_cross_entropy: p has shape"),
    (lambda: MF.center(x2, dim=2), r"center: dim 2 out of range"),
    (lambda: MF.standardize(x2, eps=0), r"standardize: eps must be a number > 0"),
    (lambda: MF.batch_norm(torch.randn(4, 3, 2), None, None), r"batch_norm: x must be a 2-D or 4-D tensor"),
    (lambda: MF.batch_norm(torch.randn(1, 3), None, None), r"training needs more than one value per channel"),
    (lambda: MF.batch_norm(x2, torch.zeros(2), torch.ones(2)), r"batch_norm: running_mean must be a \(3,\) tensor"),
    (lambda: MF.batch_norm(x2, None, None, training=False), r"running_mean is required in eval mode"),
    (lambda: MF.batch_norm(x2, None, None, momentum=1.5), r"momentum must lie in \[0, 1\]"),
    (lambda: MF.zca_whiten(img), r"zca_whiten: x must be a 2-D tensor of shape \(N, D\)"),
    (lambda: MF.zca_whiten(x2, eps=0.0), r"zca_whiten: eps must be a number > 0"),
    (lambda: MF.zca_whiten(x2, mode="column"), r"zca_whiten: mode must be one of \['dim', 'example'\]"),
    (lambda: MF.zca_whiten(x2, backend="qr"), r"zca_whiten: backend must be one of"),
    (lambda: MF.decorrelated_batch_norm(torch.randn(1, 3)), r"training needs at least 2 samples per channel"),
    (lambda: MF.decorrelated_batch_norm(x2, torch.zeros(3), torch.eye(2)),
     r"running_whitening must be a tensor of shape \(1, 3, 3\)"),
    (lambda: MF.decorrelated_batch_norm(x2, group_size=2), r"group_size must be a positive divisor of the 3 channels"),
    (lambda: MF.iter_norm(x2, iterations=0), r"iter_norm: iterations must be an int >= 1"),
    (lambda: MF.sparse_filtering(x2, activation="relu"), r"sparse_filtering: activation must be one of"),
    (lambda: MF.sparse_filtering(torch.randn(3)), r"sparse_filtering: z must be a 2-D tensor"),
    (lambda: MF.regularize(x2, "l3"), r"regularize: unknown regularizer 'l3'"),
    (lambda: MF.regularize(x2, "l1", lam=-1), r"regularize: lam must be a number >= 0"),
    (lambda: MLP([784]), r"MLP: widths must be at least two positive ints"),
    (lambda: MLP([4, 3, 2], norm_at=2), r"MLP: norm_at must lie in \[0, 1\]"),
    (lambda: MLP([4, 3, 2])(torch.randn(2, 5)), r"MLP: expected input of shape \(N, 4\)"),
    (lambda: CNN6()(torch.randn(2, 1, 8, 8)), r"CNN6: expected images of shape \(N, 3, H, W\)"),
    (lambda: SegmentationAE(size=40), r"size must be a multiple of 16"),
    (lambda: SegmentationAE(size=32)(torch.randn(1, 3, 64, 64)), r"expected images of shape \(N, 3, 32, 32\)"),
    (lambda: SegmentationAE(size=32).sparse_cost(x2), r"built without sparse_activation"),
    (lambda: Activation("swish"), r"unknown activation 'swish'"),
    (lambda: make_norm("whiten", 3), r"unknown normalisation 'whiten'"),
    (lambda: MF.zca_whiten(x2, grad="paper"), r"zca_whiten: grad must be one of \['article', 'exact', "
                                               r"'no_eigenvalue_term'\], got 'paper'"),
    (lambda: MF.regularize(x2, "l1", 1.0, article_grad=True),
     r"regularize: article_grad=True .* regularizer 'l1' has none .* those with one: \['log_sq', 'ratio'\]"),
    (lambda: MF.regularize(x2, "log_sq", 1.0, article_grad=1), r"regularize: article_grad must be True or False"),
    (lambda: _adamc(eps=float("nan")), r"ConstantBiasAdam: eps must be a finite number >= 0 .* got nan"),
    (lambda: _adamc(eps=float("inf")), r"ConstantBiasAdam: eps must be a finite number >= 0 .* got inf"),
    (lambda: _adamc(eps=-1e-8), r"ConstantBiasAdam: eps must be a finite number >= 0 .* got -1e-08"),
    (lambda: _adamc(lr=float("inf")), r"ConstantBiasAdam: lr must be a finite number > 0, got inf"),
    (lambda: _adamc(lr=float("nan")), r"ConstantBiasAdam: lr must be a finite number > 0, got nan"),
    (lambda: _per_example(["layers.0.wieght"]),
     r"per-example gradients: no parameter named \['layers.0.wieght'\] in MLP; its parameters are "
     r"\['layers.0.weight'"),
]


def _adamc(**kw):
    from manualbp.optim import ConstantBiasAdam
    return ConstantBiasAdam([torch.nn.Parameter(torch.ones(2))], **kw)


def _per_example(names):
    from manualbp.train.instruments import per_example_gradients
    model = MLP([3, 2])
    return per_example_gradients(model, MF.softmax_cross_entropy, x2, torch.tensor([0, 1, 0, 1]), names)


@pytest.mark.parametrize("call,match", CASES, ids=[m[:40] for _, m in CASES])
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_regularize_none_is_zero_and_article_variant_differs():
    w = torch.tensor([0.5, -2.0], requires_grad=True)
    assert MF.regularize(w, "none").item() == 0.0
    # weights near 1e-6, where 2 / w and the article's 2 / (w + 1e-7) differ by 2-5%: compared at float64 precision
    w = torch.tensor([2e-6, -3e-6, 0.5], dtype=torch.float64, requires_grad=True)
    (g_true,) = torch.autograd.grad(MF.regularize(w, "log_sq", 1.0), w)
    (g_article,) = torch.autograd.grad(MF.regularize(w, "log_sq", 1.0, article_grad=True), w)
    torch.testing.assert_close(g_true, 2 / w.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(g_article, 2 / (w.detach() + 1e-7), rtol=1e-14, atol=0)
    assert ((g_true - g_article).abs() / g_true.abs())[:2].min() > 0.02


@pytest.mark.parametrize("override, message", [
    ("regularizer.name=l3", r"regularizer.name 'l3' is not a regularizer; choose 'none' or one of \['abs_sin'"),
    ("model.batch_norm=maybe", r"model 'cnn6': batch_norm must be true or false, got 'maybe'"),
    ("model.batch_norm=1", r"batch_norm must be true or false, got 1"),
    ("data.download=yes", r"data.download must be true or false, got 'yes'"),
    ("log.progress=0", r"log.progress must be true or false, got 0"),
    ("log.per_example=maybe", r"log.per_example must be true or false, got 'maybe'"),
    ("log.optimizer_state=1", r"log.optimizer_state must be true or false, got 1"),
    ("log.spectra=sometimes", r"log.spectra must be 'off', 'end' or 'epoch', got 'sometimes'"),
    ("regularizer.name=l1 regularizer.lam=0.1 regularizer.article_grad=true",
     r"regularizer.article_grad=true asks for the articles' coded derivative, but regularizer 'l1' has none; those "
     r"with one: \['log_sq', 'ratio'\]. Set regularizer.article_grad=false"),
    ("log.probe_every=0 log.per_example=true", r"log.per_example=true is computed on probe steps; set "
                                               r"log.probe_every"),
    ("log.probe_every=0 log.optimizer_state=true", r"log.optimizer_state=true is computed on probe steps"),
])
def test_nonsense_settings_are_refused_by_name(override, message, tmp_path):
    """Settings that used to train silently: an unknown regularizer, a boolean that is not one."""
    from manualbp.experiments import preset
    from manualbp.models import build_model
    from manualbp.train import ConfigError, parse_overrides, resolve
    with pytest.raises((ConfigError, ValueError), match=message):
        cfg = resolve(preset("weights-pov", "quick"), parse_overrides(override.split()))
        build_model(cfg["model"])



def test_softmax_binary_cross_entropy_is_the_articles_summed_cost():
    """-sum t log p + (1 - t) log(1 - p) over classes and examples, p = softmax: against the formula
    with torch's own ops (sum and mean), and its gradient against autograd on that formula."""
    torch.manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 0, 1])]
    p = torch.softmax(z, 1)
    want = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum()
    got = MF.softmax_binary_cross_entropy(z, t)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(MF.softmax_binary_cross_entropy(z, t, "mean"), want / 6, rtol=1e-12, atol=0)
    (g1,) = torch.autograd.grad(got, z)
    (g2,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"target must have the logits' shape \(6, 4\)"):
        MF.softmax_binary_cross_entropy(z, torch.rand(6, 3, dtype=torch.float64))


def test_per_example_instruments_of_a_batch_coupling_model_are_refused_when_the_config_is_read(tmp_path, monkeypatch):
    """log.per_example=true with a whitening layer: refused by resolve (the zca article preset, before a
    sweep starts) and, for a model whose coupling layer no setting names, by train() before the run
    folder is made (not at the first probe step)."""
    from manualbp.experiments import preset
    from manualbp.train import ConfigError, resolve, train
    from manualbp.train.instruments import check_instruments
    with pytest.raises(ConfigError, match=r"log.per_example=true: model.norm='zca_example' couples the examples"):
        resolve(preset("zca", "article"), {"log": {"per_example": True}})
    model = MLP([4, 3, 2], norm="decorrelated_batch_norm", norm_at=1)
    with pytest.raises(ConfigError, match=r"log.per_example=true: norm \(DecorrelatedBatchNorm\) couple"):
        check_instruments(model, {"per_example": True})
    check_instruments(model, {"per_example": False})
    check_instruments(CNN6(batch_norm=True), {"per_example": True})   # batch norm: statistics fixed
    from manualbp.models import MODELS
    from .fakedata import write_mnist_like
    write_mnist_like(tmp_path / "data", "MNIST")
    monkeypatch.setitem(MODELS, "coupled_mlp", lambda: MLP([784, 8, 10], norm="zca_dim", norm_at=1))
    cfg = resolve({"device": "cpu", "data": {"name": "mnist", "root": str(tmp_path / "data")},
                   "model": {"name": "coupled_mlp"}, "log": {"per_example": True, "progress": False}})
    with pytest.raises(ConfigError, match=r"norm \(ZCAWhiten\) couple the examples"):
        train(cfg, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_spectra_without_weightwatcher_is_a_clear_error(monkeypatch):
    import sys

    from manualbp.train.instruments import _wwfit
    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    monkeypatch.setitem(sys.modules, "weightwatcher.WW_powerlaw", None)
    with pytest.raises(ImportError, match=r"log.spectra fits power laws with WeightWatcher's fit; install it with "
                                          r"pip install -e '.\[instruments\]' .* or set log.spectra=off"):
        _wwfit()
