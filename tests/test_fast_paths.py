"""The eager fast paths change no number.

* Every op runs through ``ManualFunction.call``: in plain eager mode the Function's old-style
  twin (no per-call signature binding), under torch.func / torch.compile ``apply``. Both must give
  bit-identical outputs and gradients on every registry sample.
* Models run a weight layer and its activation as one fused Function (``manualbp.nn.layer_act``)
  unless hooks watch them. Fused and unfused training steps must be bit-identical, and a hook (the
  probes) must still see the pre-activation.
"""
import copy

import pytest
import torch

import manualbp.functional as MF
from manualbp.functional._function import ManualFunction
from manualbp.models import CNN6, MLP, SegmentationAE
from manualbp.nn import Activation
from manualbp.testing.gradsuite import backward_node_names, clone_args
from manualbp.testing.opinfo import OPS


def _outputs_and_grads(info, sample):
    args = clone_args(sample.args)
    out = info.op(*args, **sample.kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    g = torch.Generator().manual_seed(0)
    upstream = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, diff, upstream, allow_unused=True) if diff else ()
    return [o.detach() for o in outs], list(grads)


@pytest.mark.parametrize("info", OPS, ids=[o.name for o in OPS])
def test_eager_twin_equals_apply(info, monkeypatch):
    """The twin runs the same forward, setup_context and backward as ``apply``: equal bit for bit."""
    samples = info.samples(torch.float64, torch.device("cpu"))
    fast = [_outputs_and_grads(info, s) for s in samples]
    monkeypatch.setattr(ManualFunction, "call", classmethod(lambda cls, *args: cls.apply(*args)))
    slow = [_outputs_and_grads(info, s) for s in samples]
    for s, (fo, fg), (so, sg) in zip(samples, fast, slow, strict=True):
        for a, b in zip(fo + fg, so + sg, strict=True):
            assert (a is None) == (b is None), f"{info.name} / {s.desc}"
            if a is not None:
                assert torch.equal(a, b), f"{info.name} / {s.desc}: the eager twin differs from apply"


def test_twin_is_used_in_eager_mode_and_apply_under_vmap():
    from manualbp.functional.activations import ReLUFunction
    x = torch.randn(3, 4, requires_grad=True)
    y = MF.relu(x)
    assert type(y.grad_fn) is ReLUFunction._eager._backward_cls        # eager: the twin
    assert type(y.grad_fn).__name__ == "ReLUFunctionBackward"          # one node name on both paths
    xs = torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError):                                   # the twin alone cannot run under vmap ...
        torch.func.vmap(ReLUFunction._eager.apply)(xs)
    assert torch.equal(torch.func.vmap(MF.relu)(xs), xs.clamp_min(0))   # ... so call() takes apply there


def _step(model, x, loss_fn):
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(model, out)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], backward_node_names(loss)


def _cases():
    g = torch.Generator().manual_seed(3)
    x_mlp = torch.randn(16, 12, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    x_img = torch.randn(4, 3, 32, 32, generator=g)
    y10 = torch.randint(0, 10, (4,), generator=g)
    x_seg = torch.rand(3, 3, 32, 32, generator=g)
    mask = (torch.rand(3, 1, 32, 32, generator=g) > 0.5).float()
    ce = lambda t: (lambda m, out: MF.softmax_cross_entropy(out, t))  # noqa: E731

    def seg_loss(m, out):
        return MF.add(MF.binary_cross_entropy(out[0], mask), m.sparse_cost(out[1]))
    return {
        "mlp relu": (lambda: MLP([12, 9, 7, 4], activation="relu"), x_mlp, ce(y), "LinearActFunctionBackward"),
        "mlp tanh + zca": (lambda: MLP([12, 9, 7, 4], activation="tanh", norm="zca_dim", norm_at=1,
                                       norm_kwargs={"eps": 1e-2}), x_mlp, ce(y), "LinearActFunctionBackward"),
        "mlp elu + dilation": (lambda: MLP([12, 8, 8, 8, 8, 4], activation="elu", dilation={"case": 2}), x_mlp, ce(y),
                               "LinearActFunctionBackward"),
        "cnn6": (lambda: CNN6(), x_img, ce(y10), "Conv2dActFunctionBackward"),
        "cnn6 + bn": (lambda: CNN6(batch_norm=True), x_img, ce(y10), "Conv2dActFunctionBackward"),
        "segae": (lambda: SegmentationAE(size=32, sparse_activation="soft_abs"), x_seg, seg_loss,
                  "ConvTranspose2dActFunctionBackward"),
    }


def _no_fusion(model):
    for m in model.modules():
        if isinstance(m, Activation):
            m.fusable = False
    return model


@pytest.mark.parametrize("name", list(_cases()))
def test_fused_model_step_is_bit_identical(name):
    """The default model (fused layer + activation Functions where nothing watches) and the unfused
    model agree bit for bit over two SGD steps (loss, every gradient, buffers), the fused one with
    fewer autograd nodes."""
    build, x, loss_fn, fused_node = _cases()[name]
    torch.manual_seed(0)
    model = build()
    ref = _no_fusion(copy.deepcopy(model))
    for _ in range(2):   # two steps: running statistics and the dilation tape carry over
        loss, grads, nodes = _step(model, x, loss_fn)
        ref_loss, ref_grads, ref_nodes = _step(ref, x, loss_fn)
        assert fused_node in nodes and fused_node not in ref_nodes
        assert len(nodes) < len(ref_nodes)
        assert torch.equal(loss, ref_loss), f"{name}: loss {loss} != unfused {ref_loss}"
        for (pn, _), a, b in zip(model.named_parameters(), grads, ref_grads, strict=True):
            assert torch.equal(a, b), f"{name}: gradient of {pn} differs from the unfused model's"
        with torch.no_grad():
            for m in (model, ref):
                for p in m.parameters():
                    p.sub_(0.1 * p.grad)
    for (bn, b), (_, c) in zip(model.named_buffers(), ref.named_buffers(), strict=True):
        assert torch.equal(b, c), f"{name}: buffer {bn} differs"


def test_hooks_see_the_pre_activation():
    """A forward hook on a layer (as the probes install) turns fusion off for that layer: it sees the
    layer's own output, negative values included, and the activation's hook sees the ReLU output;
    the unwatched layers after it still run as fused Functions."""
    torch.manual_seed(0)
    model = CNN6()
    seen = {}
    model.convs[0].register_forward_hook(lambda m, i, o: seen.__setitem__("pre", o.detach()))
    model.acts[0].register_forward_hook(lambda m, i, o: seen.__setitem__("post", o.detach()))
    loss = MF.softmax_cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    assert (seen["pre"] < 0).any() and torch.equal(seen["post"], seen["pre"].clamp_min(0))
    nodes = backward_node_names(loss)
    assert "Conv2dFunctionBackward" in nodes and "ReLUFunctionBackward" in nodes   # layer 1 unfused
    assert "Conv2dActFunctionBackward" in nodes                                     # the others: fused


def test_a_subclass_forward_is_not_bypassed():
    """Fusion must not skip a layer's own forward: a Conv2d subclass (or an instance whose forward was
    replaced) runs its forward, and the result shows it."""
    from manualbp.nn import Conv2d, layer_act

    class Doubled(Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)
    torch.manual_seed(0)
    conv, act, x = Doubled(3, 4), Activation("relu"), torch.randn(2, 3, 8, 8)
    assert torch.equal(layer_act(conv, act, x), (2 * MF.conv2d(x, conv.weight, conv.bias)).clamp_min(0))
    plain = Conv2d(3, 4)
    plain.forward = lambda x: torch.zeros(2, 4, 8, 8)
    assert torch.equal(layer_act(plain, act, x), torch.zeros(2, 4, 8, 8))
    fresh = Conv2d(3, 4)
    assert type(layer_act(fresh, act, x).grad_fn).__name__ == "Conv2dActFunctionBackward"


def test_probes_capture_pre_and_post_activations():
    from manualbp.train.probes import Probes
    torch.manual_seed(0)
    model = CNN6()
    probes = Probes(model)
    probes.arm()
    MF.softmax_cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    for name, _, _ in probes.points:
        pre, post = probes._captured[(name, "pre_activation")], probes._captured[(name, "post_activation")]
        assert torch.equal(post, pre.clamp_min(0)), name


@pytest.mark.parametrize("call, message", [
    (lambda: MF.linear_act(torch.randn(2, 3), torch.randn(4, 3), activation="arctan"), "activation must be one of"),
    (lambda: MF.linear_act(torch.randn(2, 5), torch.randn(4, 3)), "linear_act: x has 5 features"),
    (lambda: MF.conv2d_act(torch.randn(2, 3, 8, 8), torch.randn(4, 2, 3, 3)), "conv2d_act: x has 3 channels"),
    (lambda: MF.conv2d_act(torch.randn(2, 3, 8, 8).double(), torch.randn(4, 3, 3, 3)),
     "conv2d_act: w has dtype torch.float32 but x has torch.float64"),
    (lambda: MF.conv_transpose2d_act(torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3), stride=2, output_padding=2),
     "output_padding (2, 2) must be smaller than stride"),
    (lambda: MF.linear_act(torch.randn(2, 3), torch.randn(4, 3), activation="elu", alpha=-1.0),
     "alpha must be a number > 0"),
])
def test_fused_ops_name_bad_input(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_cnn6_runs_one_fused_function_per_layer():
    """Unwatched, CNN6 is six fused conv + relu Functions, the pool and the loss: no other node."""
    torch.manual_seed(0)
    model = CNN6()
    loss = MF.softmax_cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    nodes = backward_node_names(loss)
    assert nodes.count("Conv2dActFunctionBackward") == 6
    assert set(nodes) - {"AccumulateGrad"} == {"SoftmaxCrossEntropyFunctionBackward", "Conv2dActFunctionBackward",
                                                "GlobalAvgPool2dFunctionBackward"}
