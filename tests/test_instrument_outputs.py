"""Every instrument's outputs (probes.jsonl, instruments.jsonl, stats.npz, TensorBoard tags and values) equal
those the loop wrote before its instruments became classes: two small float64 runs with every instrument on,
against ``tests/data/instrument_outputs.json.gz`` (``python -m tests.golden_runs --write`` made it)."""
import gzip
import json
import math

import pytest

from .golden_runs import CONFIGS, GOLDEN, make, write_data


def _same(a, b, where="", rel=1e-9, abs_=1e-12):
    """Raise naming the first place where a and b differ (numbers within rel / abs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}", rel, abs_)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} entries != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", rel, abs_)
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=abs_), \
            f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    return make(write_data(root / "data"), root / "runs")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_instrument_outputs_are_unchanged(outputs, name):
    with gzip.open(GOLDEN, "rt") as f:
        golden = json.load(f)[name]
    assert golden["probes"] and golden["instruments"] and golden["tensorboard"]["histograms"]
    _same(outputs[name], golden, name)


def test_the_comparison_sees_a_changed_number():
    with pytest.raises(AssertionError, match=r"x\.y\[1\]"):
        _same({"y": [1.0, 2.0]}, {"y": [1.0, 2.0 + 1e-6]}, "x")
