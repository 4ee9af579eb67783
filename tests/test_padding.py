"""TensorFlow's "SAME" padding (``padding="tf_same"``): the padding against TensorFlow's formula, the
convolution against an explicit F.pad + conv2d written in the test, its gradients (gradcheck), and
CNN6 built with it against a plain-torch twin."""
import math

import pytest
import torch
import torch.nn.functional as F

import manualbp.functional as MF
from manualbp.models import CNN6


def tf_formula(n, k, s):
    """TensorFlow's documented SAME rule: out = ceil(n / s); pad_total = max((out - 1) s + k - n, 0);
    pad_top = pad_total // 2 (the odd pixel goes to the bottom / right)."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


@pytest.mark.parametrize("n", [1, 5, 8, 9, 32, 33])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_tf_same_padding_is_tensorflows_formula(n, k, s):
    out, before, after = tf_formula(n, k, s)
    assert MF.tf_same_padding(n, k, s) == (before, after)
    x = torch.randn(1, 1, n, n, dtype=torch.float64)
    w = torch.randn(1, 1, k, k, dtype=torch.float64)
    assert MF.conv2d(x, w, stride=s, padding="tf_same").shape[-2:] == (out, out)


@pytest.mark.parametrize("n, k, s, pads", [(5, 3, 2, (1, 1)), (8, 4, 1, (1, 2)), (9, 1, 3, (0, 0)), (32, 3, 2, (0, 1)),
                                          (7, 4, 2, (1, 2)), (6, 5, 3, (1, 1)), (10, 2, 4, (0, 0)),
                                          (10, 3, 4, (0, 1))])
def test_tf_same_padding_worked_by_hand(n, k, s, pads):
    """Cases worked out by hand from TensorFlow's rule (e.g. n 8, k 4, s 1: out 8, total 3 = 1 before, 2 after)."""
    assert MF.tf_same_padding(n, k, s) == pads


def test_cnn6_layers_on_cifar_pad_one_pixel_after_only():
    """The articles' CNN6 on 32 x 32 inputs: layers 1-4 (3 x 3, stride 2) on 32, 16, 8, 4 pixels pad 0 before
    and 1 after; "same" pads 1 on each side (the same output size, another sampling grid)."""
    for n in (32, 16, 8, 4):
        assert MF.tf_same_padding(n, 3, 2) == (0, 1)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    tf, same = MF.conv2d(x, w, stride=2, padding="tf_same"), MF.conv2d(x, w, stride=2, padding="same")
    assert tf.shape == same.shape == (2, 4, 16, 16)
    torch.testing.assert_close(tf, F.conv2d(F.pad(x, (0, 1, 0, 1)), w, stride=2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(same, F.conv2d(F.pad(x, (1, 1, 1, 1)), w, stride=2), rtol=1e-12, atol=1e-12)
    assert (tf - same).abs().max() > 0.1


@pytest.mark.parametrize("shape, k, stride", [((2, 3, 8, 8), 3, 2), ((1, 2, 7, 6), 4, (2, 1)), ((2, 2, 9, 9), 3, 2),
                                              ((1, 1, 5, 6), 2, 1), ((2, 2, 8, 7), 3, 2)])  # rows 0+1, columns 1+1
@pytest.mark.parametrize("act", [None, "relu", "elu"])
def test_conv2d_tf_same_equals_explicit_padding_and_its_gradients(shape, k, stride, act):
    """Forward and every gradient of conv2d / conv2d_act with padding="tf_same" equal F.pad by the formula
    then conv2d in plain torch (autograd), and pass gradcheck (float64)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, shape[1], k, k, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    _, top, bottom = tf_formula(shape[2], k, sh)
    _, left, right = tf_formula(shape[3], k, sw)

    def ours(x, w, b):
        if act is None:
            return MF.conv2d(x, w, b, stride, "tf_same")
        return MF.conv2d_act(x, w, b, stride, "tf_same", act)

    def twin(x, w, b):
        y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride)
        return y if act is None else (torch.relu(y) if act == "relu" else F.elu(y))
    y, ref = ours(x, w, b), twin(x, w, b)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    for a, r in zip(torch.autograd.grad(y, (x, w, b), gy), torch.autograd.grad(ref, (x, w, b), gy)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x, w, b))


def test_pad2d_backward_and_errors():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = MF.pad2d(x, (1, 0, 2, 3))
    assert y.shape == (2, 3, 5, 10)
    torch.testing.assert_close(y[..., 1:, 2:7], x.detach())
    assert float(y.detach().abs().sum()) == pytest.approx(float(x.detach().abs().sum()))
    assert torch.autograd.gradcheck(lambda t: MF.pad2d(t, (1, 0, 2, 3)), (x,))
    with pytest.raises(ValueError, match=r"pad2d: pads must be four ints >= 0 \(top, bottom, left, right\)"):
        MF.pad2d(x, (1, 2))
    with pytest.raises(ValueError, match=r"pad2d: pads must be four ints >= 0"):
        MF.pad2d(x, (1, -1, 0, 0))
    with pytest.raises(ValueError, match=r"conv2d: x must be a 4-D tensor"):
        MF.conv2d(torch.randn(3, 8, 8), torch.randn(4, 3, 3, 3), stride=2, padding="tf_same")
    with pytest.raises(ValueError, match=r"conv2d: stride must be >= 1, got 0"):
        MF.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), stride=0, padding="tf_same")
    with pytest.raises(ValueError, match=r"CNN6: padding must be 'same' or 'tf_same'"):
        CNN6(padding="SAME")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_cnn6_with_tf_same_equals_a_plain_torch_twin(batch_norm):
    """CNN6(padding="tf_same") on 32 x 32 images: logits and weight gradients equal the network written in
    plain torch with F.pad(x, (0, 1, 0, 1)) before each stride-2 convolution (float64)."""
    torch.manual_seed(0)
    model = CNN6(batch_norm=batch_norm, padding="tf_same").double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 9])
    out = model(x)
    MF.softmax_cross_entropy(out, y).backward()
    h = x
    ws = [c.weight.detach().clone().requires_grad_(True) for c in model.convs]
    for i, (w, s) in enumerate(zip(ws, (2, 2, 2, 2, 1, 1))):
        pad = (0, 1, 0, 1) if s == 2 else (1, 1, 1, 1)
        h = torch.relu(F.conv2d(F.pad(h, pad), w, stride=s))
        if batch_norm and i < 5:
            h = F.batch_norm(h, None, None, training=True, eps=1e-8)
    ref = h.mean((2, 3))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    F.cross_entropy(ref, y).backward()
    for c, w in zip(model.convs, ws):
        torch.testing.assert_close(c.weight.grad, w.grad, rtol=1e-8, atol=1e-12)
