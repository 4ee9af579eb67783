"""Models: every backward node of a model's loss is one of the project's Functions (or
AccumulateGrad), and parameter gradients equal those of the same model in plain torch."""
import copy

import pytest
import torch
import torch.nn.functional as F

import manualbp.functional as MF
from manualbp.models import CNN6, MLP, ArticleSegAE, SegmentationAE
from manualbp.testing.gradsuite import backward_node_names
from manualbp.testing.opinfo import ref_sparse_filtering
from manualbp.testing.reference_models import reference_forward

from .helpers import devices


def _targets_to(*loss_fns, device):
    """Move the targets the loss closures hold (class indices, masks) to ``device``."""
    for fn in loss_fns:
        for cell in fn.__closure__ or ():
            if isinstance(cell.cell_contents, torch.Tensor):
                cell.cell_contents = cell.cell_contents.to(device)

OWN_NODES = {f"{f.__name__}Backward" for f in MF.autograd_functions()}


graph_nodes = backward_node_names


def _mlp_case(norm, **kw):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MLP([12, 9, 7, 4], activation="arctan", bias=norm == "none", norm=norm, norm_at=1,
                norm_kwargs={"eps": 1e-2, **kw} if norm not in ("none", "center") else None).double()
    x = torch.randn(16, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=g)
    return (model, x, lambda m, out: MF.softmax_cross_entropy(out, y),
            lambda m, out: F.cross_entropy(out, y))


def _cnn_case(bn):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = CNN6(batch_norm=bn).double()
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g)
    return (model, x,
            lambda m, out: MF.add(MF.softmax_cross_entropy(out, y), MF.regularize(m.convs[0].weight, "l1", 1e-3)),
            lambda m, out: F.cross_entropy(out, y) + 1e-3 * m.convs[0].weight.abs().sum())


def _ae_case(act):
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = SegmentationAE(size=32, sparse_activation=act).double()
    x = torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 1, 32, 32, generator=g) > 0.5).double()

    def manual(m, out):
        loss = MF.binary_cross_entropy(out[0], mask)
        return MF.add(loss, m.sparse_cost(out[1])) if act else loss

    def plain(m, out):
        loss = F.binary_cross_entropy(out[0], mask)
        return loss + ref_sparse_filtering(out[1], m.sparse_eps, act) if act else loss
    return model, x, manual, plain


def _article_ae_case(code_activation, sparse_activation="soft_abs"):
    """The sparse-filtering article's auto-encoder: pool mixes, the 9-d code, the transposed-convolution
    decoder; BCE + MSE + L1 on the convolutions + the mean sparse-filtering cost (eps 1e-20)."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = ArticleSegAE(size=32, code=4, code_activation=code_activation, code_init_std=1.0,
                         sparse_activation=sparse_activation).double()
    x = torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 1, 32, 32, generator=g) > 0.5).double()

    def manual(m, out):
        pens = [MF.regularize(w, "l1", 0.005) for w in m.penalized_parameters()]
        return MF.add(MF.binary_cross_entropy(out[0], mask), MF.mse(out[0], mask), m.sparse_cost(out[1]), *pens,
                      weights=[1.0, 1.0, 1.75] + [1.0] * len(pens))

    def plain(m, out):
        l1 = sum(0.005 * w.abs().sum() for w in m.penalized_parameters())
        return (F.binary_cross_entropy(out[0], mask) + F.mse_loss(out[0], mask)
                + 1.75 * ref_sparse_filtering(out[1], 1e-20, sparse_activation, "mean") + l1)
    return model, x, manual, plain


CASES = {
    "mlp": lambda: _mlp_case("none"),
    "mlp-center": lambda: _mlp_case("center"),
    "mlp-standardize": lambda: _mlp_case("standardize"),
    "mlp-batch_norm": lambda: _mlp_case("batch_norm"),
    "mlp-zca": lambda: _mlp_case("zca_dim"),
    "mlp-zca-example": lambda: _mlp_case("zca_example"),
    "mlp-dbn": lambda: _mlp_case("decorrelated_batch_norm"),
    "mlp-dbn-groups": lambda: _mlp_case("decorrelated_batch_norm", group_size=3),
    "mlp-iternorm": lambda: _mlp_case("iter_norm"),
    "cnn6": lambda: _cnn_case(False),
    "cnn6-bn": lambda: _cnn_case(True),
    "segae": lambda: _ae_case(None),
    "segae-sparse": lambda: _ae_case("soft_abs"),
    "segae-sparse-elu": lambda: _ae_case("elu"),
    "segae_article-plain": lambda: _article_ae_case("soft_abs"),
    "segae_article-sparse": lambda: _article_ae_case(None),
    "segae_article-sparse-elu": lambda: _article_ae_case(None, "elu"),
}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", list(CASES))
def test_graph_is_pure_and_gradients_match_plain_torch(name, device):
    model, x, manual_loss, plain_loss = CASES[name]()
    model, x = model.to(device), x.to(device)
    _targets_to(manual_loss, plain_loss, device=device)
    ref_model = copy.deepcopy(model)

    loss = manual_loss(model, model(x))
    nodes = graph_nodes(loss)
    foreign = sorted({n for n in nodes if n not in OWN_NODES and n != "AccumulateGrad"})
    assert not foreign, f"{name}: autograd differentiated something itself: {foreign}"
    assert sum(n in OWN_NODES for n in nodes) >= 3
    loss.backward()

    ref_loss = plain_loss(ref_model, reference_forward(ref_model, x))
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-9, atol=1e-10)
    for (pn, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, f"{name}: no gradient for {pn}"
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {pn}\n{m}")
    for (bn, b), (_, c) in zip(model.named_buffers(), ref_model.named_buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: buffer {bn}\n{m}")


def test_plain_torch_model_is_detected_as_foreign():
    """The purity check itself: a plain-torch forward must be reported."""
    model, x, _, plain_loss = _mlp_case("none")
    nodes = graph_nodes(plain_loss(model, reference_forward(model, x)))
    assert {n for n in nodes if n not in OWN_NODES and n != "AccumulateGrad"}


@pytest.mark.parametrize("name", ["mlp-dbn", "mlp-dbn-groups", "mlp-iternorm", "cnn6-bn"])
def test_eval_mode_uses_running_statistics(name):
    model, x, _, _ = CASES[name]()
    model.train()
    for _ in range(3):
        model(x)
    model.eval()
    ref = copy.deepcopy(model)
    out = model(x[:1])  # batch 1 is legal in eval mode
    torch.testing.assert_close(out, reference_forward(ref, x[:1]), rtol=1e-9, atol=1e-10)


def test_two_training_forwards_before_one_backward():
    """Running statistics change in place on every training forward; an earlier graph must still
    backward, to the gradient plain torch gives for the same two forwards."""
    model, x, manual_loss, plain_loss = CASES["cnn6-bn"]()
    ref = copy.deepcopy(model)
    first = manual_loss(model, model(x))
    second = manual_loss(model, model(x.flip(0)))
    MF.add(first, second).backward()
    (plain_loss(ref, reference_forward(ref, x)) + plain_loss(ref, reference_forward(ref, x.flip(0)))).backward()
    for (pn, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=lambda m: f"{pn}\n{m}")


@pytest.mark.parametrize("name", ["mlp-batch_norm", "mlp-dbn", "mlp-dbn-groups", "mlp-iternorm", "cnn6-bn"])
def test_eval_forward_then_training_forward_then_eval_backward(name):
    """An eval-mode graph whose running buffers a later training forward updates in place: its backward
    runs (no version-counter error) and gives the gradient of the eval forward as it was computed."""
    model, x, manual_loss, _ = CASES[name]()
    for _ in range(2):   # running statistics away from their initial values
        model(x)
    model.eval()
    ref = copy.deepcopy(model)
    loss = manual_loss(model, model(x))
    model.train()
    model(x.flip(0))     # updates the running buffers the eval forward used
    loss.backward()
    ref_loss = manual_loss(ref, ref(x))
    ref_loss.backward()
    for (pn, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: {pn}\n{m}")
    assert any(not torch.equal(b, c) for b, c in zip(model.buffers(), ref.buffers(), strict=True))


def test_normal_initialisation_of_weights_and_biases():
    """MLP(init_std=s, bias_init_std=b): weights N(0, s^2), biases N(0, b^2) (the zca article's draw),
    measured on a large layer; with init_std alone the biases start at zero."""
    torch.manual_seed(0)
    m = MLP([784, 676, 10], init_std=0.008, bias_init_std=1e-4)
    w, b = m.layers[0].weight.detach(), m.layers[0].bias.detach()
    assert abs(w.std().item() - 0.008) < 0.008 * 0.01 and abs(w.mean().item()) < 1e-4
    assert abs(b.std().item() - 1e-4) < 1e-4 * 0.1
    assert torch.equal(MLP([5, 3], init_std=0.1).layers[0].bias, torch.zeros(3))
    with pytest.raises(ValueError, match="bias_init_std must be None or a number >= 0"):
        MLP([5, 3], bias_init_std=-1.0)


def test_batch_norm_running_statistics_as_the_weights_pov_article_coded():
    """running_init="zero", running_variance="biased": the running mean and variance start at 0 and
    average the batch's biased variance; the normalised output is unchanged in training; eval mode
    uses the running values."""
    from manualbp.nn import BatchNorm
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    ours = BatchNorm(3, 1e-5, 0.1, running_init="zero", running_variance="biased").double()
    torch_like = BatchNorm(3, 1e-5, 0.1).double()
    assert torch.equal(ours.running_var, torch.zeros(3, dtype=torch.float64))
    y, y_ref = ours(x), torch_like(x)
    assert torch.allclose(y, y_ref, atol=1e-12)
    dims = (0, 2, 3)
    assert torch.allclose(ours.running_mean, 0.1 * x.mean(dims))
    assert torch.allclose(ours.running_var, 0.1 * x.var(dims, unbiased=False))
    assert torch.allclose(torch_like.running_var, 0.9 + 0.1 * x.var(dims, unbiased=True))
    ours.eval()
    expect = (x - ours.running_mean.reshape(1, 3, 1, 1)) / torch.sqrt(ours.running_var.reshape(1, 3, 1, 1) + 1e-5)
    assert torch.allclose(ours(x), expect)
    with pytest.raises(ValueError, match="running_variance must be"):
        BatchNorm(3, running_variance="sample")
    from manualbp.models.cnn6 import CNN6
    net = CNN6(batch_norm=True, bn_running_init="zero", bn_running_variance="biased")
    assert all(bn.running_init == "zero" and bn.running_variance == "biased" for bn in net.bns)


def test_cnn6_equal_init_repeats_the_draw_for_equal_shapes():
    """equal_init=True: layers 2-5 (16 -> 16) start as copies of layer 2, as the weights-pov article's
    same-seeded draws did; layers 1 and 6 (other shapes) keep their own draws."""
    torch.manual_seed(0)
    net = CNN6(equal_init=True)
    w = [c.weight for c in net.convs]
    assert all(torch.equal(w[1], w[i]) for i in (2, 3, 4))
    torch.manual_seed(0)
    plain = CNN6()
    assert torch.equal(plain.convs[1].weight, w[1]) and not torch.equal(plain.convs[2].weight, w[2])
    assert torch.equal(plain.convs[0].weight, w[0]) and torch.equal(plain.convs[5].weight, w[5])
