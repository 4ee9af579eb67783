"""The gradient suite: every entry of the op registry through every check.

Adding an op to manualbp.functional means adding an OpInfo to manualbp/testing/opinfo.py;
test_every_function_is_covered fails otherwise.
"""
import pytest
import torch

import manualbp.functional as M
from manualbp.testing.gradsuite import CHECKS, backward_node_names, clone_args, run_check
from manualbp.testing.opinfo import OPS

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("info", OPS, ids=[o.name for o in OPS])
def test_op(info, check):
    if check.startswith("cuda") and not CUDA:
        pytest.skip("no CUDA device")
    run_check(info, check)


def test_every_function_is_covered():
    """Each autograd.Function in manualbp.functional appears in the graph of some registry sample."""
    covered = set()
    for info in OPS:
        for s in info.samples(torch.float64, torch.device("cpu")):
            covered |= set(backward_node_names(info.op(*clone_args(s.args), **s.kwargs)))
    functions = M.autograd_functions()
    assert len(functions) >= 25
    missing = {f.__name__ for f in functions} - {n[: -len("Backward")] for n in covered}
    assert not missing, f"autograd.Functions without a registry entry: {sorted(missing)}"


def test_every_regularizer_has_an_entry():
    names = {o.name for o in OPS}
    assert {f"regularize[{n}]" for n in M.REGULARIZERS} <= names
    assert len(M.REGULARIZERS) == 16
