"""Experiment optimizers: the TensorFlow-1 optimizers step by step against their update equations
(written again here in numpy, and TensorFlow's own published test values), resuming through
state_dict, dilated back-propagation against an explicit layer-by-layer backward, and the sweep."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import manualbp.functional as MF
from manualbp.experiments import preset
from manualbp.experiments.optimizers import ARTICLE, CASES, TRIALS, case_config, grid, winners
from manualbp.functional.dilated import CASES as DILATED
from manualbp.models import MLP
from manualbp.optim import make_optimizer
from manualbp.optim import tf1
from manualbp.testing.gradsuite import backward_node_names
from manualbp.train import resolve
from manualbp.train.sweep import expand

from .fakedata import write_mnist_like

ROOT = Path(__file__).resolve().parents[1]
OWN_NODES = {f"{f.__name__}Backward" for f in MF.autograd_functions()}


# ---------------------------------------------------------------- TF1 update equations, in numpy

def np_gd(v, gs, lr):
    for g in gs:
        v = v - lr * g
    return v


def np_adadelta(v, gs, lr=0.001, rho=0.95, eps=1e-8):
    a, u = np.zeros_like(v), np.zeros_like(v)
    for g in gs:
        a = rho * a + (1 - rho) * g * g
        upd = np.sqrt(u + eps) / np.sqrt(a + eps) * g
        v = v - lr * upd
        u = rho * u + (1 - rho) * upd * upd
    return v


def np_adagrad(v, gs, lr, init=0.1):
    a = np.full_like(v, init)
    for g in gs:
        a = a + g * g
        v = v - lr * g / np.sqrt(a)
    return v


def np_adagrad_da(v, gs, lr, init=0.1, l1=0.0, l2=0.0):
    acc, sq = np.zeros_like(v), np.full_like(v, init)
    for t, g in enumerate(gs, start=1):
        acc, sq = acc + g, sq + g * g
        top = np.sign(acc) * np.maximum(np.abs(acc) - l1 * t, 0) if l1 > 0 else acc
        v = -lr * top / (l2 * t * lr + np.sqrt(sq))
    return v


def np_momentum(v, gs, lr, momentum, nesterov=False):
    a = np.zeros_like(v)
    for g in gs:
        a = momentum * a + g
        v = v - lr * g - lr * momentum * a if nesterov else v - lr * a
    return v


def np_adam(v, gs, lr=0.001, b1=0.9, b2=0.999, eps=1e-8):
    m, s = np.zeros_like(v), np.zeros_like(v)
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        v = v - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(s) + eps)
    return v


def np_ftrl(v, gs, lr, power=-0.5, init=0.1, l1=0.0, l2=0.0, shrink=0.0):
    n, z = np.full_like(v, init), np.zeros_like(v)
    for g in gs:
        n_new = n + g * g
        sigma = (n_new ** -power - n ** -power) / lr
        z = z + g + 2 * shrink * v - sigma * v
        v = np.where(np.abs(z) > l1, (l1 * np.sign(z) - z) / (n_new ** -power / lr + 2 * l2), 0.0)
        n = n_new
    return v


def np_prox_gd(v, gs, lr, l1=0.0, l2=0.0):
    for g in gs:
        w = v - lr * g
        v = np.sign(w) * np.maximum(np.abs(w) - lr * l1, 0) / (1 + lr * l2)
    return v


def np_prox_adagrad(v, gs, lr, init=0.1, l1=0.0, l2=0.0):
    a = np.full_like(v, init)
    for g in gs:
        a = a + g * g
        rate = lr / np.sqrt(a)
        w = v - rate * g
        v = np.sign(w) * np.maximum(np.abs(w) - rate * l1, 0) / (1 + rate * l2)
    return v


def np_rmsprop(v, gs, lr, decay=0.9, momentum=0.0, eps=1e-10, centered=False):
    ms, mg, mom = np.ones_like(v), np.zeros_like(v), np.zeros_like(v)
    for g in gs:
        ms = decay * ms + (1 - decay) * g * g
        mg = decay * mg + (1 - decay) * g
        denom = ms - mg * mg + eps if centered else ms + eps
        mom = momentum * mom + lr * g / np.sqrt(denom)
        v = v - mom
    return v


L12 = dict(l1_regularization_strength=0.05, l2_regularization_strength=0.3)
EQUATIONS = {   # id: (class, its kwargs, numpy equations with the same settings)
    "GradientDescent": (tf1.GradientDescent, dict(learning_rate=0.1), lambda v, gs: np_gd(v, gs, 0.1)),
    "Adadelta": (tf1.Adadelta, {}, lambda v, gs: np_adadelta(v, gs)),
    "Adadelta-lr": (tf1.Adadelta, dict(learning_rate=1.0, rho=0.9), lambda v, gs: np_adadelta(v, gs, 1.0, 0.9)),
    "Adagrad": (tf1.Adagrad, dict(learning_rate=0.1), lambda v, gs: np_adagrad(v, gs, 0.1)),
    "AdagradDA": (tf1.AdagradDA, dict(learning_rate=0.1), lambda v, gs: np_adagrad_da(v, gs, 0.1)),
    "AdagradDA-l1l2": (tf1.AdagradDA, dict(learning_rate=0.1, **L12),
                       lambda v, gs: np_adagrad_da(v, gs, 0.1, l1=0.05, l2=0.3)),
    "Momentum": (tf1.Momentum, dict(learning_rate=0.1, momentum=0.9), lambda v, gs: np_momentum(v, gs, 0.1, 0.9)),
    "Momentum-nesterov": (tf1.Momentum, dict(learning_rate=0.1, momentum=0.9, use_nesterov=True),
                          lambda v, gs: np_momentum(v, gs, 0.1, 0.9, True)),
    "Adam": (tf1.Adam, dict(learning_rate=0.01), lambda v, gs: np_adam(v, gs, 0.01)),
    "Ftrl": (tf1.Ftrl, dict(learning_rate=0.5), lambda v, gs: np_ftrl(v, gs, 0.5)),
    "Ftrl-l1l2": (tf1.Ftrl, dict(learning_rate=0.5, **L12), lambda v, gs: np_ftrl(v, gs, 0.5, l1=0.05, l2=0.3)),
    "Ftrl-power-shrink": (tf1.Ftrl, dict(learning_rate=0.5, learning_rate_power=-0.7, **L12,
                                         l2_shrinkage_regularization_strength=0.2),
                          lambda v, gs: np_ftrl(v, gs, 0.5, -0.7, l1=0.05, l2=0.3, shrink=0.2)),
    "ProximalGradientDescent": (tf1.ProximalGradientDescent, dict(learning_rate=0.1),
                                lambda v, gs: np_prox_gd(v, gs, 0.1)),
    "ProximalGradientDescent-l1l2": (tf1.ProximalGradientDescent, dict(learning_rate=0.1, **L12),
                                     lambda v, gs: np_prox_gd(v, gs, 0.1, 0.05, 0.3)),
    "ProximalAdagrad": (tf1.ProximalAdagrad, dict(learning_rate=0.1), lambda v, gs: np_prox_adagrad(v, gs, 0.1)),
    "ProximalAdagrad-l1l2": (tf1.ProximalAdagrad, dict(learning_rate=0.1, **L12),
                             lambda v, gs: np_prox_adagrad(v, gs, 0.1, l1=0.05, l2=0.3)),
    "RMSProp": (tf1.RMSProp, dict(learning_rate=0.01), lambda v, gs: np_rmsprop(v, gs, 0.01)),
    "RMSProp-momentum-centered": (tf1.RMSProp, dict(learning_rate=0.01, momentum=0.5, centered=True),
                                  lambda v, gs: np_rmsprop(v, gs, 0.01, momentum=0.5, centered=True)),
}


def _grads(steps, shape=(3, 4), seed=0):
    g = np.random.default_rng(seed)
    return [g.normal(size=shape) for _ in range(steps)]


def _run_torch(cls, kwargs, v0, gs, split=None):
    """Apply the gradients; with ``split``, rebuild the optimizer from state_dict after that many steps."""
    p = torch.nn.Parameter(torch.tensor(v0))
    opt = cls([p], **kwargs)
    for i, g in enumerate(gs):
        if split is not None and i == split:
            state = copy.deepcopy(opt.state_dict())
            p = torch.nn.Parameter(p.detach().clone())
            opt = cls([p], **kwargs)
            opt.load_state_dict(state)
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


@pytest.mark.parametrize("name", list(EQUATIONS))
def test_tf1_optimizer_follows_its_update_equations(name):
    cls, kwargs, equations = EQUATIONS[name]
    v0 = np.random.default_rng(1).normal(size=(3, 4))
    v0[0, 0] = 0.0                       # a zero weight: sign() and the soft threshold at 0
    gs = _grads(7)
    gs[2][1, 1] = 0.0                    # a zero gradient entry
    np.testing.assert_allclose(_run_torch(cls, kwargs, v0, gs), equations(v0, gs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(EQUATIONS))
def test_tf1_optimizer_resumes_exactly_from_its_state_dict(name):
    cls, kwargs, _ = EQUATIONS[name]
    v0 = np.random.default_rng(2).normal(size=(2, 5))
    gs = _grads(6, (2, 5), seed=3)
    np.testing.assert_array_equal(_run_torch(cls, kwargs, v0, gs, split=3), _run_torch(cls, kwargs, v0, gs))


def _tf_test_case(cls, steps, **kwargs):
    """TensorFlow's own optimizer tests: var0 [1, 2], var1 [4, 3], constant gradients [0.1, 0.2], [0.01, 0.02]."""
    v0 = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    v1 = torch.nn.Parameter(torch.tensor([4.0, 3.0], dtype=torch.float64))
    opt = cls([v0, v1], **kwargs)
    for _ in range(steps):
        v0.grad = torch.tensor([0.1, 0.2], dtype=torch.float64)
        v1.grad = torch.tensor([0.01, 0.02], dtype=torch.float64)
        opt.step()
    return v0.detach().numpy(), v1.detach().numpy()


TF_VALUES = [   # (class, steps, kwargs, var0, var1) as asserted in TensorFlow's adagrad_da_test.py / ftrl_test.py
    (tf1.AdagradDA, 1, dict(learning_rate=3.0), [-0.904534, -1.603567], [-0.094821, -0.189358]),
    (tf1.AdagradDA, 1, dict(learning_rate=3.0, l1_regularization_strength=0.001, l2_regularization_strength=2.0),
     [-0.046907, -0.093659], [-0.004275, -0.009023]),
    (tf1.Ftrl, 3, dict(learning_rate=3.0), [-2.55607247, -3.98729396], [-0.28232238, -0.56096673]),
    (tf1.Ftrl, 10, dict(learning_rate=3.0, l1_regularization_strength=0.001),
     [-7.66718769, -10.91273689], [-0.93460727, -1.86147261]),
    (tf1.Ftrl, 10, dict(learning_rate=3.0, l1_regularization_strength=0.001, l2_regularization_strength=2.0),
     [-0.24059935, -0.46829352], [-0.02406147, -0.04830509]),
    (tf1.Ftrl, 10, dict(learning_rate=3.0, l1_regularization_strength=0.001, l2_regularization_strength=2.0,
                        l2_shrinkage_regularization_strength=0.1),
     [-0.22578995, -0.44345796], [-0.14378493, -0.13229476]),
]


@pytest.mark.parametrize("case", range(len(TF_VALUES)))
def test_tf1_optimizer_reproduces_tensorflows_own_test_values(case):
    cls, steps, kwargs, want0, want1 = TF_VALUES[case]
    got0, got1 = _tf_test_case(cls, steps, **kwargs)
    np.testing.assert_allclose(got0, want0, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got1, want1, rtol=2e-6, atol=1e-6)


def test_tf1_differs_from_torch_where_tf1_wins():
    """RMSProp's mean square starts at 1 (torch: 0); Adam's epsilon sits on the uncorrected sqrt(v)."""
    v0, gs = np.ones((2, 2)), _grads(1, (2, 2))
    p = torch.nn.Parameter(torch.tensor(v0))
    opt = torch.optim.RMSprop([p], lr=0.01, alpha=0.9, eps=1e-10)
    p.grad = torch.tensor(gs[0])
    opt.step()
    assert not np.allclose(p.detach().numpy(), _run_torch(tf1.RMSProp, dict(learning_rate=0.01), v0, gs))
    big_eps = dict(epsilon=0.5)
    p = torch.nn.Parameter(torch.tensor(v0))
    opt = torch.optim.Adam([p], lr=0.01, eps=0.5)
    p.grad = torch.tensor(gs[0])
    opt.step()
    assert not np.allclose(p.detach().numpy(), _run_torch(tf1.Adam, dict(learning_rate=0.01, **big_eps), v0, gs))


def test_tf1_optimizers_by_config_name_and_bad_settings():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("tf1.Ftrl", p, learning_rate=0.1), tf1.Ftrl)
    assert sorted(tf1.OPTIMIZERS) == sorted(["GradientDescent", "Adadelta", "Adagrad", "AdagradDA", "Momentum", "Adam",
                                             "Ftrl", "ProximalGradientDescent", "ProximalAdagrad", "RMSProp"])
    with pytest.raises(ValueError, match="no such TensorFlow-1 optimizer.*tf1.Ftrl"):
        make_optimizer("tf1.FTRL", p, learning_rate=0.1)
    with pytest.raises(ValueError, match="does not accept|unknown|lr"):
        make_optimizer("tf1.Adagrad", p, lr=0.1)       # TF1's name is learning_rate
    with pytest.raises(ValueError, match="learning_rate_power must be <= 0"):
        tf1.Ftrl(p, 0.1, learning_rate_power=0.5)
    with pytest.raises(ValueError, match="initial_accumulator_value must be > 0"):
        tf1.Adagrad(p, 0.1, initial_accumulator_value=0.0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        tf1.RMSProp(p, float("nan"))


# ---------------------------------------------------------------- dilated back-propagation

def explicit_backward(Ws, x, y, rules, r):
    """The article's numpy-style backward, layer by layer: returns dL/dW per layer for a bias-free
    arctan MLP (arctan on every layer), mean softmax cross-entropy, layer k fed with
    g_{k+1} + r * combine(g_j, j in rules[k])."""
    a, zs = [x], []
    for W in Ws:
        zs.append(a[-1] @ W.T)
        a.append(np.arctan(zs[-1]))
    out = a[-1]
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    fed = (p - np.eye(out.shape[1])[y]) / len(y)
    g, dWs = {}, {}
    for k in range(len(Ws), 0, -1):
        dz = fed / (1 + zs[k - 1] ** 2)
        dWs[k] = dz.T @ a[k - 1]
        g[k] = dz @ Ws[k - 1]
        if k > 1:
            fed = g[k]
            if (k - 1) in rules:
                op, js = rules[k - 1]
                extra = g[js[0]]
                for j in js[1:]:
                    extra = extra + g[j] if op == "sum" else extra * g[j]
                fed = g[k] + r * extra
    return [dWs[k] for k in range(1, len(Ws) + 1)]


def _dilated_mlp(case, epoch=0, **over):
    torch.manual_seed(4)
    model = MLP([12, 7, 7, 7, 7, 5], activation="arctan", bias=False, final_activation=True,
                dilation={"case": case, **over}).double()
    model.set_epoch(epoch)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    return model, x, y


SPEC_TABLE = {   # SPEC, experiment 3: layer l <- g_{l+1} + r * (...), r = P / (1 + D t); case 6 feeds layer 3 too
    1: ({3: ("sum", (5,)), 2: ("sum", (4,)), 1: ("sum", (3,))}, 1000, 0.08),
    2: ({3: ("sum", (5,)), 2: ("sum", (4,)), 1: ("sum", (3,))}, 1000, 0.08),
    3: ({3: ("sum", (5,)), 2: ("sum", (4, 5)), 1: ("sum", (3, 4, 5))}, 1000, 0.08),
    4: ({3: ("prod", (5,)), 2: ("prod", (4, 5)), 1: ("prod", (3, 4, 5))}, 1000, 0.08),
    5: ({3: ("sum", (5,)), 2: ("sum", (4, 5)), 1: ("sum", (3, 4, 5))}, 800, 0.064),
    6: ({3: ("sum", (5,)), 2: ("sum", (4, 5)), 1: ("prod", (3, 4, 5))}, 500, 0.04),
}


def test_dilated_cases_are_specs_table():
    assert {c: (d["rules"], d["P"], d["D"]) for c, d in DILATED.items()} == SPEC_TABLE


@pytest.mark.parametrize("case", sorted(DILATED))
def test_dilated_backprop_matches_an_explicit_layer_by_layer_backward(case):
    model, x, y = _dilated_mlp(case, epoch=3, P=2.0, D=0.5)   # r = 2 / (1 + 0.5 * 3) = 0.8
    assert model.dilation_rate() == pytest.approx(0.8)
    loss = MF.softmax_cross_entropy(model(x), y)
    nodes = backward_node_names(loss)
    assert not {n for n in nodes if n not in OWN_NODES and n != "AccumulateGrad"}
    assert "DilatedTapBackward" in nodes
    loss.backward()
    Ws = [layer.weight.detach().numpy() for layer in model.layers]
    want = explicit_backward(Ws, x.numpy(), y.numpy(), SPEC_TABLE[case][0], 0.8)
    plain = explicit_backward(Ws, x.numpy(), y.numpy(), {}, 0.0)
    for i, (layer, w, p) in enumerate(zip(model.layers, want, plain)):
        np.testing.assert_allclose(layer.weight.grad.numpy(), w, rtol=1e-10, atol=1e-13, err_msg=f"layer {i + 1}")
    # the rules change layers 1-3, never 4 and 5 (case 6's rule has three entries, as every case's)
    changed = [not np.allclose(w, p) for w, p in zip(want, plain)]
    assert changed == [True, True, True, False, False]
    assert len(SPEC_TABLE[case][0]) == 3


def test_dilated_rate_follows_the_epoch_and_zero_rate_is_plain_backprop():
    model, x, y = _dilated_mlp(3)
    assert model.dilation_rate() == 1000.0
    model.set_epoch(10)
    assert model.dilation_rate() == pytest.approx(1000.0 / (1 + 0.08 * 10))
    model, x, y = _dilated_mlp(4, P=0.0)
    MF.softmax_cross_entropy(model(x), y).backward()
    torch.manual_seed(4)
    ref = MLP([12, 7, 7, 7, 7, 5], activation="arctan", bias=False, final_activation=True).double()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    for a, b in zip(model.layers, ref.layers):
        torch.testing.assert_close(a.weight.grad, b.weight.grad, rtol=1e-10, atol=1e-13)


def test_dilation_settings_are_checked():
    with pytest.raises(ValueError, match="dilation.case must be one of"):
        MLP([4, 3, 3, 3, 3, 2], dilation={"case": 7})
    with pytest.raises(ValueError, match="names layer 5's gradient, but the model has 3 layers"):
        MLP([4, 3, 3, 2], dilation={"case": 1})
    with pytest.raises(ValueError, match="unknown|does not accept|rate"):
        MLP([4, 3, 3, 3, 3, 2], dilation={"case": 1, "rate": 3})


# ---------------------------------------------------------------- the experiment

def test_grid_has_17_cases_x_4_trials_and_runs_share_initial_weights(tmp_path):
    specs = expand(preset("optimizers", "sound-gpu"), grid("sound-gpu"), tmp_path)
    assert len(specs) == 17 * 4 * 3 and len(CASES) == 17
    by_run: dict = {}
    for s in specs:
        c = s.config
        assert c["init_seed"] is None and c["batch_size"] == 1000    # init_seed = seed: one init per run
        trial = int(s.labels["setting"][5])
        lr, width = TRIALS[trial]
        assert c["model"]["widths"] == [784] + [width] * 4 + [10]
        assert c["optim"].get("lr", c["optim"].get("learning_rate")) == lr
        by_run.setdefault((trial, c["seed"]), set()).add(s.labels["setting"])
    assert all(len(v) == 17 for v in by_run.values())
    full = resolve(preset("optimizers", "sound"))
    assert (full["epochs"], full["batch_size"], full["data"]["train_limit"]) == (801, 1000, None)
    assert len(grid("sound")["seed"]) == 10
    assert case_config(13, 0.001, 8)["optim"] == {"name": "tf1.Ftrl", "learning_rate": 0.001}
    assert case_config(2, 0.001, 8)["grad_transforms"][0]["name"] == "gradient_noise"
    assert case_config(5, 0.001, 8)["model"]["dilation"] == {"case": 5}


def test_winners_count_ties_and_skip_non_finite():
    def run(trial, r, case, loss, tr, te):
        return {"trial": trial, "run": r, "case": case,
                "metrics": [{"train_loss": loss, "train_acc": tr, "test_acc": te}]}
    runs = [run(1, "s0", 0, 0.5, 0.9, 0.8), run(1, "s0", 3, 0.4, 0.9, 0.7), run(1, "s0", 5, float("nan"), 0.1, 0.1),
            run(1, "s1", 0, 0.3, 0.8, 0.9), run(1, "s1", 3, 0.6, 0.95, 0.85)]
    w = winners(runs)
    assert w["n"] == {1: 2}
    assert w[1]["cost"] == {3: 1, 0: 1}
    assert w[1]["train_acc"] == {0: 1, 3: 2}     # the tie in run s0 credits both
    assert w[1]["test_acc"] == {0: 2}
    assert sum(ARTICLE[1]["test_acc"].values()) == 100 and ARTICLE[2]["test_acc"][5] == 70


def test_article_grid_is_the_authors_code(tmp_path):
    """SPEC's optimizers section: the last 55,000 images in the file's order, batch 1000, 801 epochs, 10
    runs; summed gradients (data term weighted by 1000); weights N(0, 1) drawn per case; Adam-c eps 1e-8
    for 1, 3-6; SGD with the scalar noise for 0 and 2; TF1 cases on the summed softmax BCE; Momentum =
    lr; the BCE reported as every case's cost; full-pass training accuracy."""
    specs = {s.name: s.config for s in expand(preset("optimizers", "article"), grid("article"), tmp_path)}
    assert len(specs) == 17 * 4 * 10
    c = specs["trial2-case00-seed3"]
    assert (c["epochs"], c["batch_size"], c["data"]["shuffle"], c["data"]["options"]) == (
        801, 1000, False, {"validation": 5000})
    assert c["objective"] == {"data": 1000.0} and c["metric_loss"] == "softmax_binary_cross_entropy"
    assert c["train_metrics"] == "full_pass_accuracy" and c["model"]["init_std"] == 1.0
    assert c["optim"] == {"name": "SGD", "lr": 0.0025} and c["loss"] == "softmax_cross_entropy"
    assert c["grad_transforms"] == [{"name": "gradient_noise", "eta": 1e-6, "gamma": 1.1, "scalar": True,
                                     "clock": "epoch"}]
    assert specs["trial2-case02-seed3"]["grad_transforms"] == c["grad_transforms"]
    for case in (1, 3, 4, 5, 6):
        cc = specs[f"trial1-case{case:02d}-seed0"]
        assert cc["optim"] == {"name": "ConstantBiasAdam", "lr": 0.001, "eps": 1e-8} and not cc["grad_transforms"]
        assert cc["model"]["dilation"] == {"case": case} and cc["loss"] == "softmax_cross_entropy"
    for case in range(7, 17):
        cc = specs[f"trial4-case{case:02d}-seed0"]
        assert cc["loss"] == "softmax_binary_cross_entropy" and cc["optim"]["learning_rate"] == 0.0025
    assert specs["trial4-case11-seed0"]["optim"] == {"name": "tf1.Momentum", "learning_rate": 0.0025,
                                                     "momentum": 0.0025}
    # every case its own initial weights; the runs (seeds) differ too
    seeds = {(cc["seed"] + cc["init_seed_offset"]) for n, cc in specs.items() if n.startswith("trial1-")}
    assert len(seeds) == 17 * 10
    cpu = resolve(preset("optimizers", "article-cpu"))
    assert cpu["objective"] == {"data": 1000.0} and len(grid("article-cpu")["seed"]) >= 2


def test_scalar_noise_on_the_epoch_clock():
    """The article's noise: one scalar per step, added to every entry, std 0.001 / (1 + epoch)^0.55."""
    from manualbp.optim.transforms import make_grad_transforms
    (t,) = make_grad_transforms(case_config(0, 0.001, 8, "article")["grad_transforms"])
    assert t.sigma(0) == pytest.approx(0.001) and t.sigma(3) == pytest.approx(0.001 / 4 ** 0.55)
    ps = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))]
    for p in ps:
        p.grad = torch.zeros_like(p)
    g = torch.Generator().manual_seed(0)
    t(ps, 500, 4, g)    # step 500 of epoch 4: t = 3
    noise = ps[0].grad.flatten()[0].item()
    assert all(torch.all(p.grad == noise) for p in ps) and noise != 0
    ref = torch.randn((), generator=torch.Generator().manual_seed(0)).item() * 0.001 / 4 ** 0.55
    assert noise == pytest.approx(ref)
    with pytest.raises(ValueError, match="clock"):
        make_grad_transforms([{"name": "gradient_noise", "clock": "batch"}])


def test_winners_take_the_first_index_under_the_article():
    def run(r, case, loss, acc):
        return {"trial": 1, "run": r, "case": case, "metrics": [{"train_loss": loss, "train_acc": acc,
                                                                 "test_acc": acc}]}
    runs = [run(0, 3, 0.4, 0.9), run(0, 5, 0.4, 0.9), run(0, 1, 0.5, 0.9)]
    assert winners(runs, "first")[1] == {"cost": {3: 1}, "train_acc": {1: 1}, "test_acc": {1: 1}}
    assert winners(runs)[1]["train_acc"] == {1: 1, 3: 1, 5: 1}
    with pytest.raises(ValueError, match="ties"):
        winners(runs, "random")


def test_article_quick_sweep_reports_the_bce_cost_and_full_pass_accuracy(tmp_path):
    """The article preset's CI-sized variant end to end: its runs report the summed binary cross-entropy
    of the softmax (divided by the images) as every case's cost, the training accuracy of a pass after
    the epoch, and the report counts winners by first index."""
    write_mnist_like(tmp_path / "data", "MNIST", n_train=300, n_test=60)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "optimizers", "--preset",
                          "article-quick", "--device", "cpu", "--data-root", str(tmp_path / "data"), "--sweep-dir",
                          str(tmp_path / "s"), "--epochs", "2", "--only", "trial3", "batch_size=100",
                          "data.options.validation=100", "log.progress=false"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = tmp_path / "s"
    assert len(list(s.glob("trial3-case*-seed0/DONE.json"))) == 17
    text = (s / "results.md").read_text()
    assert "article configuration" in text and "lowest case number" in text and "Final training cost" in text
    import json
    rows = [json.loads(x) for x in (s / "trial3-case00-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and 0 < rows[-1]["train_loss"] < 20
    # the reported cost is the binary cross-entropy even where the trained loss is softmax cross-entropy
    cfg = json.loads((s / "trial3-case00-seed0" / "config.json").read_text())
    assert cfg["loss"] == "softmax_cross_entropy" and cfg["metric_loss"] == "softmax_binary_cross_entropy"


def test_quick_sweep_trains_every_case_from_shared_weights_and_reports(tmp_path):
    write_mnist_like(tmp_path / "data", "MNIST", n_train=200, n_test=60)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "optimizers", "--device", "cpu",
                          "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"), "--epochs", "2",
                          "--only", "trial3", "--seeds", "0,1", "batch_size=50", "log.progress=false"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = tmp_path / "s"
    assert len(list(s.glob("trial3-case*-seed*/DONE.json"))) == 34
    text = (s / "results.md").read_text()
    assert "lowest final training cost" in text and "trial 3 article" in text and "70%" in text
    assert (s / "frequency.png").stat().st_size > 10_000 and (s / "curves.png").stat().st_size > 10_000
    # the shared initial weights: identical for two cases of a run, different between runs
    from manualbp.train.loop import build_initial_model
    from manualbp.train.tasks import make_task
    import json
    cfgs = {n: json.loads((s / n / "config.json").read_text()) for n in
            ("trial3-case00-seed0", "trial3-case13-seed0", "trial3-case13-seed1")}
    w = {}
    for n, c in cfgs.items():
        c = dict(c, data=dict(c["data"], root=str(tmp_path / "data")))
        w[n] = build_initial_model(c, make_task(c, torch.device("cpu")), "cpu").layers[0].weight
    assert torch.equal(w["trial3-case00-seed0"], w["trial3-case13-seed0"])
    assert not torch.equal(w["trial3-case13-seed0"], w["trial3-case13-seed1"])


@pytest.mark.parametrize("case", [2, 13, 16])
def test_killed_run_of_a_case_resumes_bit_identically(case, tmp_path):
    """Dilated back-propagation with SGD + noise (its rate depends on the epoch, its noise on the
    checkpointed generator), tf1.Ftrl and tf1.RMSProp (their slots in the optimizer's state_dict):
    SIGKILLed in epoch 3, resumed, equal to the uninterrupted run."""
    from .test_loop_families import assert_same_run, run_in_subprocess
    write_mnist_like(tmp_path / "data", "MNIST", n_train=120, n_test=40)
    cfg = resolve(dict(preset("optimizers", "quick"), epochs=4, batch_size=40, device="cpu",
                       **case_config(case, 0.01, 12), data={"name": "mnist", "root": str(tmp_path / "data")},
                       log={"progress": False}))
    assert run_in_subprocess(cfg, tmp_path / "full").returncode == 0
    killed = run_in_subprocess(cfg, tmp_path / "resumed", kill_at=8)    # 3 steps per epoch: inside epoch 3
    assert killed.returncode == -9
    again = run_in_subprocess(cfg, tmp_path / "resumed")
    assert again.returncode == 0 and "resuming after epoch 2 of 4" in again.stdout, again.stderr[-2000:]
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.parametrize("name", ["article", "sound"])
def test_full_presets_expand_from_the_command_line(name):
    """scripts/sweep.py optimizers --preset article / sound: the 680 runs of the article's schedule
    (17 cases x 4 trials x 10 runs), one command each."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "optimizers", "--preset", name, "--list"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 680 and all("--run trial" in json.loads(x)["command"] for x in lines)


def test_update_ratio_findings_pair_each_case_with_tf1_adam(tmp_path):
    """The update-size table: each case's mean update-to-weight ratio per layer over tf1.Adam's in the
    same run (seed), from the runs' instruments.jsonl."""
    import json

    from manualbp.experiments.optimizers import update_ratio_findings
    runs = []
    for case, scale in ((12, 1.0), (4, 3.0)):
        for seed in (0, 1):
            d = tmp_path / f"c{case}s{seed}"
            d.mkdir()
            rows = [{"instrument": "optimizer", "layer": f"layer{k}", "update_ratio": 0.001 * k * scale * (1 + seed),
                     "grad_norm": 10.0 * scale ** 2, "epoch": 1, "step": 1} for k in (1, 2)]
            (d / "instruments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs.append({"trial": 1, "case": case, "run": seed, "dir": d})
    text = "\n".join(update_ratio_findings(runs))
    assert "| 4 dilated 4, dense product (Adam) / reference | 2 | 3 ± 0 | 3 ± 0 |" in text
    assert "| 12 tf1.Adam (value) | 2 | 1.5 ± 6.4 | 3 ± 13 |" in text
    assert "gradient norm ||g||" in text
    assert "| 4 dilated 4, dense product (Adam) / reference | 2 | 9 ± 0 | 9 ± 0 |" in text
    one = update_ratio_findings([r for r in runs if r["run"] == 0])   # one seed: no interval, said so
    assert "| 12 tf1.Adam (value) | 1 | 1 (one run, no interval) | 2 (one run, no interval) |" in "\n".join(one)
    # a case's seed without tf1.Adam's is not paired: n counts the pairs
    text = "\n".join(update_ratio_findings([r for r in runs if not (r["case"] == 12 and r["run"] == 1)]))
    assert "| 4 dilated 4, dense product (Adam) / reference | 1 | 3 (one run, no interval) |" in text


def test_final_tables_give_n_per_cell_and_no_interval_for_one_run():
    """The final-value tables: mean ± t half-width recomputed, the usual n in the title, other n marked, a
    single run labelled as one without an interval."""
    from scipy.stats import t

    from manualbp.experiments.optimizers import final_tables
    accs = {(1, 7): [0.90, 0.92, 0.94], (1, 12): [0.97, 0.95, 0.96], (2, 7): [0.80, 0.84], (2, 12): [0.99]}
    runs = [{"trial": tr, "case": c, "metrics": [{"train_loss": 1.0 - a, "train_acc": a, "test_acc": a}]}
            for (tr, c), v in accs.items() for a in v]
    text = "\n".join(final_tables(runs, [1, 2]))
    assert "### Final test accuracy (%), mean ± 95% Student-t half-width over runs (n = 3 runs per cell, other n " \
           "marked)" in text
    row = next(line for line in text.split("### Final test accuracy")[1].splitlines() if line.startswith("| 7:"))
    h3 = t.ppf(0.975, 2) * 100 * np.std([0.90, 0.92, 0.94], ddof=1) / np.sqrt(3)
    h2 = t.ppf(0.975, 1) * 100 * np.std([0.80, 0.84], ddof=1) / np.sqrt(2)
    assert row == f"| 7: tf1.GradientDescent | 92.00 ± {h3:.2f} | 82.00 ± {h2:.2f} (n=2) |"
    row = next(line for line in text.split("### Final test accuracy")[1].splitlines() if line.startswith("| 12:"))
    assert row.endswith("| 99.00 (one run, no interval) |")
