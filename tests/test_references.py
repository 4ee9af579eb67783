"""The reference check catches a wrong backward.

The references of ``manualbp/testing/references.py`` are built from elementary tensor ops, not
from the aten kernels the manual backwards call. These tests swap a deliberately wrong backward into
an op (a wrong threshold, a transposed kernel, a wrong scale) and assert that the registry's
reference comparison fails for it, and passes again without the error.
"""
import ast
from pathlib import Path

import pytest
import torch

import manualbp.functional.activations as activations
import manualbp.functional.dense as dense
import manualbp.functional.fused as fused
import manualbp.functional.losses as losses
import manualbp.functional.norm as norm
from manualbp.testing import references
from manualbp.testing.gradsuite import compare_reference
from manualbp.testing.opinfo import OPS_BY_NAME

aten = torch.ops.aten


class _Aten:
    """torch.ops.aten with some kernels replaced."""

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced.get(name) or getattr(aten, name)


def _wrong_conv_backward(need, has_bias, x, w, g, stride, padding, output_padding=None):
    # the kernel's spatial axes transposed: right shapes, wrong numbers
    return _conv_backward(need, has_bias, x, w.transpose(2, 3), g, stride, padding, output_padding)


_conv_backward = dense.conv_backward


def _with_ops(fake_aten):
    """torch, with ``torch.ops.aten`` replaced by ``fake_aten``."""
    class _T:
        def __getattr__(self, name):
            return getattr(torch, name)

        class ops:
            aten = fake_aten
    return _T()


def _bn_backward_wrong_std(g, x, w, rm, rv, mean, invstd, train, eps, mask):
    # 1 / sqrt(var + eps) replaced by 1 / sqrt(var + eps + 0.1)
    return aten.native_batch_norm_backward(g, x, w, rm, rv, mean, 1 / torch.sqrt(1 / invstd ** 2 + 0.1), train, eps,
                                           mask)


MUTATIONS = {
    "relu: threshold 0.3 instead of 0": (
        "relu", lambda mp: mp.setattr(activations, "aten", _Aten(
            threshold_backward=lambda g, y, t: aten.threshold_backward(g, y, 0.3)))),
    "elu: alpha 2 in the backward": (
        "elu", lambda mp: mp.setattr(activations, "aten", _Aten(
            elu_backward=lambda g, a, s, i, r, y: aten.elu_backward(g, 2.0, s, i, r, y)))),
    "conv2d: the kernel transposed in the backward": (
        "conv2d", lambda mp: mp.setattr(dense, "conv_backward", _wrong_conv_backward)),
    "conv_transpose2d: the kernel transposed in the backward": (
        "conv_transpose2d", lambda mp: mp.setattr(dense, "conv_backward", _wrong_conv_backward)),
    "conv2d_act[relu]: the fused relu derivative with threshold 0.3": (
        "conv2d_act[relu]", lambda mp: mp.setitem(fused.FUSED_ACTIVATIONS, "relu", (
            fused.FUSED_ACTIVATIONS["relu"][0], lambda g, y, alpha: aten.threshold_backward(g, y, 0.3)))),
    "softmax_cross_entropy: the softmax backward on the wrong axis": (
        "softmax_cross_entropy", lambda mp: mp.setattr(losses, "torch", _with_ops(_Aten(
            _log_softmax_backward_data=lambda g, lp, dim, dt: aten._log_softmax_backward_data(g, lp, 0, dt))))),
    "batch_norm: the saved 1 / std changed": (
        "batch_norm", lambda mp: mp.setattr(norm, "torch", _with_ops(_Aten(
            native_batch_norm_backward=_bn_backward_wrong_std)))),
}



@pytest.mark.parametrize("name", list(MUTATIONS))
def test_reference_check_catches_a_wrong_backward(name, monkeypatch):
    op, mutate = MUTATIONS[name]
    info = OPS_BY_NAME[op]
    samples = info.samples(torch.float64, torch.device("cpu"))
    for s in samples:   # the op as written passes
        compare_reference(info, s)
    with monkeypatch.context() as mp:
        mutate(mp)
        failed = 0
        for s in samples:
            try:
                compare_reference(info, s)
            except AssertionError as e:
                assert "gradient of input" in str(e), str(e)[:300]   # the forward still agrees: the backward is caught
                failed += 1
        assert failed, f"{name}: the reference check passed a wrong backward"
    for s in samples:   # and passes again once the error is gone
        compare_reference(info, s)


# torch.nn.functional may be used by the references only for padding and patch extraction
ALLOWED_F = {"pad", "unfold"}


def test_references_use_elementary_ops_only():
    tree = ast.parse(Path(references.__file__).read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "F"}
    assert used <= ALLOWED_F, f"references call torch.nn.functional.{sorted(used - ALLOWED_F)}"
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("manualbp" in (getattr(n, "module", None) or "") or
                   any("manualbp" in a.name for a in n.names) for n in imports)


@pytest.mark.parametrize("op", ["relu", "elu", "tanh", "sigmoid", "softmax_cross_entropy", "mse",
                                "binary_cross_entropy", "batch_norm", "conv2d", "conv_transpose2d", "linear",
                                "max_pool2d", "interpolate[bilinear]", "interpolate[bicubic]", "global_avg_pool2d",
                                "linear_act[elu]", "conv2d_act[tanh]", "conv_transpose2d_act[sigmoid]"])
def test_entry_uses_an_independent_reference(op):
    """The registry's reference of each op whose backward is one aten call lives in references.py."""
    ref = OPS_BY_NAME[op].ref
    mod = getattr(ref, "__module__", "")
    closure = [c.cell_contents for c in (getattr(ref, "__closure__", None) or ())]
    assert mod == references.__name__ or any(getattr(c, "__module__", "") == references.__name__ for c in closure), \
        f"{op}: reference {ref} is not from manualbp.testing.references"
