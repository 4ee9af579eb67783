"""The curvature instrument: Hessian-vector products through the manual Functions against the plain-torch
twin and against a peer (curvlinops' HessianLinearOperator on the twin), Lanczos and Hutchinson against
the exact Hessian of a tiny model (torch.func.hessian), finite differences against double backward, exact
derivatives for models trained with a named backward, and the instrument in a run."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

import manualbp.functional as M
from manualbp.models import CNN6, MLP
from manualbp.testing.reference_models import TwinModule
from manualbp.train import resolve, train
from manualbp.train.instruments import curvature, exact_derivatives, hutchinson, hvp, hvp_finite_difference, lanczos

from .fakedata import write_mnist_like

ROOT = Path(__file__).resolve().parents[1]


_Twin = TwinModule


def _cases():
    torch.manual_seed(0)
    mlp = MLP([6, 5, 4], activation="tanh").double()
    torch.manual_seed(1)
    cnn = CNN6(in_channels=2, channels=(3, 3, 3, 3, 3, 4), strides=(2, 1, 2, 1, 1, 1), batch_norm=True,
               init_std=0.3, bn_eps=1e-5).double()
    return {"mlp": (mlp, torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 4, (7,))),
            "cnn6-bn": (cnn, torch.randn(5, 2, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,)))}


CASES = _cases()


def _restoring(model, fn):
    """fn() with the model's buffers reset before each call (batch norm's running statistics)."""
    saved = {k: v.clone() for k, v in model.named_buffers()}

    def call():
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])
        return fn()
    return call


@pytest.mark.parametrize("name", list(CASES))
def test_hvp_through_manual_ops_equals_the_twin_and_the_peer(name):
    curvlinops = pytest.importorskip("curvlinops")
    model, x, y = CASES[name]
    params = list(model.parameters())
    twin = _Twin(model)
    vecs = [torch.randn_like(p) for p in params]
    manual = hvp(_restoring(model, lambda: M.softmax_cross_entropy(model(x), y)), params, vecs)
    plain = hvp(_restoring(model, lambda: F.cross_entropy(twin(x), y)), params, vecs)
    for a, b in zip(manual, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    H = curvlinops.HessianLinearOperator(twin, torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)
    peer = H @ [v.clone() for v in vecs]
    peer = peer if isinstance(peer, (list, tuple)) else peer.split([p.numel() for p in params])
    for a, b in zip(manual, peer):
        torch.testing.assert_close(a.reshape(-1), b.reshape(-1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(CASES))
def test_top_eigenvalue_and_trace_against_the_exact_hessian_and_the_peer(name):
    curvlinops = pytest.importorskip("curvlinops")
    model, x, y = CASES[name]
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    loss = _restoring(model, lambda: M.softmax_cross_entropy(model(x), y))
    # the exact Hessian, column by column (every column an HVP with a unit vector) and by torch.func.hessian
    names = [k for k, _ in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def f(theta):
        parts = theta.split([p.numel() for p in params])
        ps = {k: t.view_as(p) for k, t, p in zip(names, parts, params)}
        return M.softmax_cross_entropy(torch.func.functional_call(model, ps, (x,)), y)
    H = _restoring(model, lambda: torch.func.hessian(f)(flat0))()
    eig = torch.linalg.eigvalsh(H)
    res = curvature(loss, params, lanczos_steps=n, hutchinson_samples=400, seed=3, method="double_backward")
    assert res["hvp"] == "double_backward"
    assert abs(res["top_eigenvalue"] - float(eig[-1])) < 1e-8 * max(1.0, float(eig.abs().max()))
    # Hutchinson: unbiased; 400 Rademacher samples within 4 standard errors of tr(H)
    assert abs(res["trace"] - float(H.trace())) < 4 * res["trace_se"]
    assert res["trace_se"] > 0
    # the peer: curvlinops' operator on the plain twin, scipy's eigsh for the top eigenvalue
    op = curvlinops.HessianLinearOperator(_Twin(model), torch.nn.CrossEntropyLoss(), params, [(x, y)],
                                          check_deterministic=False)
    top_peer = scipy.sparse.linalg.eigsh(op.to_scipy(), k=1, which="LA", return_eigenvectors=False)[0]
    assert abs(res["top_eigenvalue"] - float(top_peer)) < 1e-6 * max(1.0, abs(float(top_peer)))
    dense = op @ torch.eye(n, dtype=torch.float64)   # the peer's whole Hessian, one column per matvec
    torch.testing.assert_close(dense, H, rtol=0, atol=1e-10)


def test_lanczos_and_hutchinson_on_a_known_matrix():
    torch.manual_seed(0)
    A = torch.randn(30, 30, dtype=torch.float64)
    A = A + A.T
    eig = torch.linalg.eigvalsh(A)
    theta, _ = lanczos(lambda v: A @ v, 30, 30, torch.Generator().manual_seed(0))
    torch.testing.assert_close(theta, eig, rtol=0, atol=1e-9)
    # Hutchinson's estimate equals the mean of v^T A v over the same Rademacher vectors, recomputed here
    gen = torch.Generator().manual_seed(5)
    est, se = hutchinson(lambda v: A @ v, 30, 50, gen)
    gen = torch.Generator().manual_seed(5)
    vals = []
    for _ in range(50):
        v = (torch.randint(0, 2, (30,), generator=gen) * 2 - 1).double()
        vals.append(float(v @ A @ v))
    assert est == pytest.approx(np.mean(vals), abs=1e-10)
    assert se == pytest.approx(np.std(vals, ddof=1) / np.sqrt(50), rel=1e-9)


def test_finite_difference_hvp_is_close_to_double_backward():
    model, x, y = CASES["mlp"]   # smooth (tanh): no kink for the difference to cross
    params = list(model.parameters())
    vecs = [torch.randn_like(p) for p in params]
    loss = _restoring(model, lambda: M.softmax_cross_entropy(model(x), y))
    a = torch.cat([t.reshape(-1) for t in hvp(loss, params, vecs)])
    before = [p.detach().clone() for p in params]
    b = torch.cat([t.reshape(-1) for t in hvp_finite_difference(loss, params, vecs)])
    assert (a - b).norm() < 1e-6 * a.norm()
    for p, q in zip(params, before):   # the weights are put back exactly
        assert torch.equal(p.detach(), q)


def test_a_whitened_model_gives_the_hessian_block_above_the_whitening_and_refuses_the_rest(data, tmp_path):
    """Through ZCA (no second derivative): the Hessian in every weight is refused, its block in the layers
    above the whitening equals that block of the exact Hessian; the run settings are refused before the run."""
    from manualbp.functional._function import RefusedDerivative
    from manualbp.train import ConfigError
    torch.manual_seed(2)
    model = MLP([4, 5, 5, 3], activation="tanh", norm="zca_dim", norm_at=1).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    with pytest.raises(RefusedDerivative):
        curvature(lambda: M.softmax_cross_entropy(model(x), y), list(model.parameters()), 5, 2, seed=0)
    above = {n: p for n, p in model.named_parameters() if n.startswith(("layers.1", "layers.2"))}
    below = {n: p.detach() for n, p in model.named_parameters() if n not in above}
    params = list(above.values())
    n = sum(p.numel() for p in params)
    res = curvature(lambda: M.softmax_cross_entropy(model(x), y), params, n, 2, seed=0)

    def f(theta):
        parts = theta.split([p.numel() for p in params])
        ps = {k: t.view_as(p) for (k, p), t in zip(above.items(), parts)}
        return M.softmax_cross_entropy(torch.func.functional_call(model, {**below, **ps}, (x,)), y)
    H = torch.func.hessian(f)(torch.cat([p.detach().reshape(-1) for p in params]))
    assert res["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    cfg = _cfg(data, curvature="end")
    for bad, match in (({"model": {"name": "mlp", "widths": [784, 8, 10], "norm": "zca_dim", "norm_at": 1}},
                        "gives no second derivative"),
                       ({"log": {"curvature": "end", "curvature_hvp": "finite_difference"}, "model": {
                           "name": "mlp", "widths": [784, 8, 10], "activation": "relu"}}, "jumps at"),
                       ({"log": {"curvature": "end", "curvature_params": ["nothing"]}}, "names none")):
        with pytest.raises(ConfigError, match=match):
            train(resolve(cfg, bad), tmp_path / "refused", log=lambda *_: None)
        assert not (tmp_path / "refused").exists()
    ok = resolve(cfg, {"model": {"name": "mlp", "widths": [784, 8, 10], "norm": "zca_dim", "norm_at": 1},
                       "log": {"curvature_params": ["layers.1"], "curvature_lanczos_steps": 4,
                               "curvature_hutchinson_samples": 2}})
    train(ok, tmp_path / "block", log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "block" / "instruments.jsonl").read_text().splitlines()]
    assert rows[0]["params"] == ["layers.1"] and rows[0]["hvp"] == "double_backward"


def test_finite_differences_across_a_kink_are_refused_by_name():
    from manualbp.train.instruments import kinked_ops
    assert kinked_ops(MLP([4, 3, 2], activation="relu")) and not kinked_ops(MLP([4, 3, 2], activation="tanh"))
    assert kinked_ops(CNN6())


def test_exact_derivatives_switches_named_backwards_and_restores_them():
    torch.manual_seed(0)
    model = MLP([6, 8, 8, 8, 8, 4], activation=["tanh_sigmoid_derivative", "tanh", "tanh", "tanh"], norm="zca_example",
                norm_at=1, norm_kwargs={"eps": 0.5, "grad": "article"},
                dilation={"case": 3, "P": 1000.0, "D": 0.08}).double()
    exact = MLP([6, 8, 8, 8, 8, 4], activation="tanh", norm="zca_example", norm_at=1,
                norm_kwargs={"eps": 0.5}).double()
    exact.load_state_dict(model.state_dict())
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 4, (5,))

    def grads(m):
        return torch.autograd.grad(M.softmax_cross_entropy(m(x), y), list(m.parameters()))
    with exact_derivatives(model):
        inside = grads(model)
    for a, b in zip(inside, grads(exact)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    after = grads(model)   # the named backwards are back: not the gradient
    assert model.norm.grad == "article" and model.acts[0].name == "tanh_sigmoid_derivative"
    assert model.dilation is not None
    assert max(float((a - b).abs().max()) for a, b in zip(after, inside)) > 1e-6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "FashionMNIST", n_train=100, n_test=40)
    return root


def _cfg(data, **log):
    preset = {"experiment": "test", "epochs": 2, "batch_size": 25, "device": "cpu", "dtype": "float64",
              "data": {"name": "fashion_mnist", "root": str(data)},
              "model": {"name": "mlp", "widths": [784, 8, 10]}, "regularizer": {"name": "l2", "lam": 1e-3},
              "optim": {"name": "Adam", "lr": 3e-3}, "log": {"progress": False, "histograms": False, **log}}
    return resolve(preset, {})


def test_the_instrument_in_a_run_measures_the_final_weights_and_leaves_training_alone(data, tmp_path):
    cfg = _cfg(data, probe_every="after_epoch", curvature=True, curvature_lanczos_steps=12,
               curvature_hutchinson_samples=6)
    train(cfg, tmp_path / "with", log=lambda *_: None)
    train(_cfg(data, probe_every="after_epoch"), tmp_path / "without", log=lambda *_: None)

    def metrics(run):
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics(tmp_path / "with") == metrics(tmp_path / "without")
    rows = [json.loads(line) for line in (tmp_path / "with" / "instruments.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["instrument"] == "curvature"]
    assert [(r["epoch"], r["term"]) for r in rows] == [(1, "data"), (1, "objective"), (2, "data"), (2, "objective")]
    # recompute the last epoch's rows: the final weights, the epoch's last batch, the same seed
    from manualbp.train.loop import build_initial_model, epoch_generator
    from manualbp.train.tasks import make_task
    task = make_task(cfg, torch.device("cpu"))
    train_data, _ = task.load_data()
    model = build_initial_model(cfg, task, torch.device("cpu"))
    model.load_state_dict(torch.load(tmp_path / "with" / "checkpoint.pt", weights_only=True)["model"])
    model.train()
    *_, (xb, yb) = train_data.batches(25, shuffle=cfg["data"]["shuffle"], dtype=task.dtype,
                                      generator=epoch_generator(cfg["seed"], 2))
    params = list(model.parameters())
    for r in rows[2:]:
        w = {"data": 1.0} if r["term"] == "data" else {"data": 1.0, "regularizer": 1.0}
        c = curvature(lambda w=w: task.loss(model, xb, yb, w)[0], params, 12, 6, cfg["seed"] * 1_000_003 + r["step"])
        assert r["top_eigenvalue"] == pytest.approx(c["top_eigenvalue"], rel=1e-9)
        assert r["trace"] == pytest.approx(c["trace"], rel=1e-9)
    # the l2 penalty lam sum w^2 adds 2 lam to every eigenvalue: the objective's trace exceeds the data term's
    n = sum(p.numel() for p in params if p.dim() > 1)
    # (the two terms' estimates use the same Rademacher vectors, each with v^T v = P over the weights)
    assert rows[3]["trace"] - rows[2]["trace"] == pytest.approx(2e-3 * n, rel=1e-6)
    # the status figure's curvature panels plot these rows
    from manualbp.train.status import _per_term, status_figure
    series = _per_term(rows, "top_eigenvalue")
    assert series["data"] == ([r["step"] for r in rows if r["term"] == "data"],
                              [r["top_eigenvalue"] for r in rows if r["term"] == "data"])
    assert status_figure(tmp_path / "with").stat().st_size > 20000


def test_the_report_pairs_by_seed_and_says_higher_only_when_the_interval_excludes_zero(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("curvature_report", ROOT / "scripts" / "curvature_report.py")
    rep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rep)

    def run(group, seed, top, bn="bn"):
        return {"labels": {"case": group, "seed": seed, "bn": bn}, "dir": f"{bn}-{group}-seed{seed}",
                "rows": [{"term": "data", "epoch": 3, "top_eigenvalue": top, "trace": 2 * top,
                          "hvp": "double_backward"}]}
    base = [1.0, 2.0, 3.0]
    runs = [run("Z", s, v) for s, v in enumerate(base)]
    runs += [run("A", s, v + d) for s, (v, d) in enumerate(zip(base, [0.50, 0.52, 0.48]))]   # shifted: higher
    runs += [run("B", s, v + d) for s, (v, d) in enumerate(zip(base, [0.5, -0.6, 0.1]))]     # noise: not separated
    text = rep.table(runs, "case", None, "Z", "top_eigenvalue", "data", None)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert lines["A"].rstrip(" |").endswith("higher") and "0.5 ± 0.02" in lines["A"]
    assert lines["B"].rstrip(" |").endswith("not separated")
    # the mean and interval of a group, recomputed: t_{2, 0.975} sd / sqrt(3)
    from scipy.stats import t
    hw = t.ppf(0.975, 2) * np.std(base, ddof=1) / np.sqrt(3)
    assert f"[{2 - hw:.4g}, {2 + hw:.4g}]" in lines["Z"]
    # runs told apart only by a label the table is not split by: refused, not silently dropped
    with pytest.raises(ValueError, match="same labels"):
        rep.table(runs + [{**run("A", 0, 9.0), "labels": {"case": "A", "seed": 0, "bn": "bn"}}], "case", None, "Z",
                  "top_eigenvalue", "data", None)
    mixed = runs + [run("C", 0, 1.0)]
    mixed[-1]["rows"][0]["hvp"] = "finite_difference"
    with pytest.raises(ValueError, match="measured differently"):
        rep.table(mixed, "case", None, "Z", "top_eigenvalue", "data", None)


def test_the_report_corrects_with_holm_and_counts_a_function_once(tmp_path):
    """Holm's column over the table's comparisons (a step-down, not Bonferroni), each function counted once:
    run folders on disk, the regularizer read from each run's config.json."""
    import importlib.util

    from manualbp.experiments.report import p_value
    spec = importlib.util.spec_from_file_location("curvature_report", ROOT / "scripts" / "curvature_report.py")
    rep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rep)

    def write(sweep, group, seed, top, reg, lam=1e-5, batch=100):
        d = tmp_path / sweep / f"{group}-seed{seed}"
        d.mkdir(parents=True)
        (d / "DONE.json").write_text("{}")
        (d / "config.json").write_text(json.dumps({"seed": seed, "batch_size": batch,
                                                   "regularizer": {"name": reg, "lam": lam}}))
        (d / "instruments.jsonl").write_text(json.dumps({"instrument": "curvature", "term": "data", "epoch": 3,
                                                         "top_eigenvalue": top, "trace": top,
                                                         "hvp": "double_backward"}) + "\n")
    base = [1.0, 2.0, 3.0]
    shifts = {"A": [0.50, 0.52, 0.48], "B": [0.5, 0.42, 0.58], "C": [0.5, 0.3, 0.7], "D": [-0.50, -0.52, -0.48],
              "F": [0.2, -0.3, 0.4], "H": [0.2, -0.3, 0.4], "S": [0.2, -0.3, 0.4], "T": [0.2, -0.3, 0.4]}
    regs = {"A": "l2", "B": "l1", "C": "l1", "D": "elastic", "F": "neg_tanh_sq", "H": "neg_tanh_abs_sq",
            "S": "neg_tanh_abs_sq", "T": "neg_tanh_abs_sq"}
    for s, v in enumerate(base):
        write("w", "Z", s, v, "none", 0.0)
        for g, d in shifts.items():   # T: F's function at another weight; S: at another batch size
            write("w", g, s, v + d[s], regs[g], 1e-4 if g == "T" else 1e-5, 20 if g == "S" else 100)
    runs = rep._runs(tmp_path / "w", "w", ["case"])
    text = rep.table(runs, "case", None, "Z", "top_eigenvalue", "data", None)
    head, *rows = text.splitlines()
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in rows[1:]}
    # H repeats F (SAME_FUNCTION, same weight, same config otherwise): named, left out; S and T count
    assert lines["H"][-1] == "same function as F: not counted"
    assert lines["S"][-1] == lines["T"][-1] == lines["F"][-1] == "not separated"
    assert head.rstrip(" |").endswith("after Holm's correction over this table's 7")   # A, B, C, D, F, S, T
    # Holm's step-down: A and D first (p < 0.05 / 7), then B against 0.05 / 5, which Bonferroni's 0.05 / 7
    # would not pass; then C against 0.05 / 4, which fails although C is nominally higher
    p = {g: p_value(shifts[g]) for g in "ABCD"}
    assert max(p["A"], p["D"]) < 0.05 / 7 < p["B"] < 0.05 / 5 < 0.05 / 4 < p["C"] < 0.05
    assert lines["A"][-2:] == ["higher", "higher"] and lines["D"][-2:] == ["lower", "lower"]
    assert lines["B"][-2:] == ["higher", "higher"] and lines["C"][-2:] == ["higher", "not separated"]
    # the baseline's own twin: its difference is 0 by construction, named and not counted
    text = rep.table(runs, "case", None, "H", "top_eigenvalue", "data", None)
    f_row = next(line for line in text.splitlines() if line.startswith("| F |"))
    assert f_row.rstrip(" |").endswith("same function as H: not counted")
    assert "over this table's 7" in text.splitlines()[0]   # A-D, S, T, Z


def test_curvature_end_measures_once_after_the_last_epoch_and_bad_settings_are_named(data, tmp_path):
    from manualbp.train import ConfigError
    cfg = _cfg(data, probe_every=0, curvature="end", curvature_lanczos_steps=5, curvature_hutchinson_samples=2)
    train(cfg, tmp_path / "end", log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "end" / "instruments.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["term"]) for r in rows] == [(2, "data"), (2, "objective")]
    assert rows[0]["step"] == 8 and rows[0]["hvp"] == "double_backward"
    # measured afterwards from the run folder alone: the same numbers
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "curvature_of_run.py"), str(tmp_path / "end"),
                          "--lanczos", "5", "--hutchinson", "2"], capture_output=True, text=True, check=True).stdout
    after = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for a, b in zip(after, rows, strict=True):
        assert (a["term"], a["step"]) == (b["term"], b["step"])
        assert a["top_eigenvalue"] == pytest.approx(b["top_eigenvalue"], rel=1e-9)
        assert a["trace"] == pytest.approx(b["trace"], rel=1e-9)
    for bad, match in (({"curvature": "sometimes"}, "log.curvature must be"),
                       ({"curvature": True, "probe_every": 0}, "log.curvature=true is computed on probe steps"),
                       ({"curvature": True, "curvature_lanczos_steps": 0}, "curvature_lanczos_steps must be"),
                       ({"curvature": True, "curvature_hvp": "exact"}, "log.curvature_hvp must be")):
        with pytest.raises(ConfigError, match=match):
            train(_cfg(data, **bad), tmp_path / "bad", log=lambda *_: None)
    assert not (tmp_path / "bad").exists()
